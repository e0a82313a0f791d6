"""Tools ▸ Reader study…: the reading view answers by keyboard only, saves every case at once
(a new answers file with the seconds on screen), shows no file name or label, resumes where the
reader stopped, and appends a ``read`` audit record when closed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from p2p_desktop.readerstudy import Source, load_answers, make_study

pytestmark = pytest.mark.timeout(120)


def _study(tmp_path: Path, design: str) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    sources = []
    for i in range(3):
        img = rng.integers(0, 200, (48, 48), dtype=np.uint8)
        orig, adv = tmp_path / "src" / f"img{i}.png", tmp_path / "adv" / f"img{i}.png"
        for p, a in ((orig, img), (adv, np.clip(img.astype(int) + 3, 0, 255).astype(np.uint8))):
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(p)
        sources.append(Source(orig, adv, "fgsm", "clf", "benign", f"img{i}.png"))
    study, key = tmp_path / "study", tmp_path / "KEY.json"
    make_study(sources, study, key, design=design, readers=2, seed=1)
    return study, key


@pytest.fixture(autouse=True)
def audit_log(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("P2P_DESKTOP_HOME", str(tmp_path / "home"))
    return tmp_path / "audit.jsonl"


def test_keyboard_only_reading_saves_each_case_and_resumes(qtbot, tmp_path, audit_log):
    from p2p_desktop.gui.reader_study import ReaderStudyView

    study, _ = _study(tmp_path, "single")
    view = ReaderStudyView(study, "ann")
    qtbot.addWidget(view)
    view.show()
    qtbot.waitExposed(view)
    texts = " ".join(w.text() for w in view.findChildren(QLabel))
    assert ".dcm" not in texts and "fgsm" not in texts and "img0" not in texts
    assert view.progress.text() == f"1 / {len(view.order)}"
    first = view.order[0]
    qtbot.keyClick(view, Qt.Key.Key_Return)  # nothing answered yet: nothing saved
    assert not load_answers(study)
    for key in (Qt.Key.Key_Y, Qt.Key.Key_4, Qt.Key.Key_M, Qt.Key.Key_F5, Qt.Key.Key_BracketLeft, Qt.Key.Key_Return):
        qtbot.keyClick(view, key)
    saved = load_answers(study)["ann"][first]
    assert (saved.altered, saved.confidence, saved.finding, saved.birads) == (True, 4, "malignant", 5)
    assert saved.seconds is not None and saved.seconds >= 0
    assert view.progress.text() == f"2 / {len(view.order)}"
    for key in (Qt.Key.Key_N, Qt.Key.Key_2, Qt.Key.Key_O, Qt.Key.Key_Return):
        qtbot.keyClick(view, key)
    assert len(list((study / "answers" / "ann").glob("*.json"))) == 2
    view.close()
    records = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert records[-1]["data"]["action"] == "read" and records[-1]["data"]["answered_this_session"] == 2
    # the same reader resumes at the third case of the same order
    again = ReaderStudyView(study, "ann")
    qtbot.addWidget(again)
    assert again.order == view.order and again.index == 2
    assert again.progress.text() == f"3 / {len(view.order)}"
    again.close()


def test_pair_view_shows_two_images_and_takes_arrow_keys(qtbot, tmp_path):
    from p2p_desktop.gui.reader_study import ReaderStudyView

    study, _ = _study(tmp_path, "pair")
    view = ReaderStudyView(study, "bob")
    qtbot.addWidget(view)
    view.show()
    assert len(view.panes) == 2
    for key in (Qt.Key.Key_Right, Qt.Key.Key_5, Qt.Key.Key_B, Qt.Key.Key_Return):
        qtbot.keyClick(view, key)
    (answer,) = load_answers(study)["bob"].values()
    assert answer.altered == "B" and answer.finding == "benign" and answer.birads is None
    view.close()


def test_tools_menu_has_reader_study(window):
    main_window = window
    assert main_window.reader_study_action.text() == "Reader study…"
    tools = next(a.menu() for a in main_window.menuBar().actions() if a.text().replace("&", "") == "Tools")
    assert main_window.reader_study_action in tools.actions()
