"""Inputs unlike a classifier's training data are flagged in the CLI, the report and the GUI:
a colour-Doppler frame or burned-in text for a classifier trained on grey phantoms, a size or
photometry its model card rules out."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from p2p_desktop.input_check import WARNING_PREFIX, input_warnings  # noqa: E402

DEMO = "demo-squeezenet1_1"


def _card(name=DEMO):
    from p2p_desktop.models import registry
    from p2p_desktop.models.classifier import ModelCard

    entry = registry.find(name)
    if entry is None:
        pytest.skip(f"{name} is not bundled")
    return ModelCard.from_dict(entry.card)


def _phantom_dicom() -> Path:
    from p2p_desktop.paths import samples_dir

    found = sorted((samples_dir() / "dicom").rglob("*.dcm"))
    if not found:
        pytest.skip("no demo DICOM phantoms in resources/samples")
    return found[0]


def test_colour_doppler_frame_is_flagged_for_a_grey_phantom_classifier(ultrasound_file):
    from p2p_desktop.io import load_study

    card = _card()
    lines = input_warnings(load_study(ultrasound_file()), card)
    assert lines and all(line.startswith(WARNING_PREFIX) for line in lines)
    assert any("colour" in line and "grey" in line for line in lines)
    assert any("320×240" in line for line in lines)  # not square, unlike the 128×128 training phantoms
    # a phantom like the training data: nothing to say
    assert input_warnings(load_study(_phantom_dicom()), card) == []


def test_burned_in_text_and_monochrome1_and_cards_that_tell_nothing(ultrasound_file):
    from p2p_desktop.io import load_study

    card = _card()
    study = load_study(_phantom_dicom())
    burned = dataclasses.replace(study, metadata=dataclasses.replace(study.metadata, burned_in_annotation="YES"))
    assert any("burned-in text" in line for line in input_warnings(burned, card))
    inverted = dataclasses.replace(study, photometric="MONOCHROME1")
    assert any("MONOCHROME1" in line for line in input_warnings(inverted, card))
    silent = dataclasses.replace(card, extra={})
    assert input_warnings(load_study(ultrasound_file()), silent) == []
    told = dataclasses.replace(card, extra={"training_input": {"colour": True, "size": [320, 240]}})
    assert input_warnings(load_study(ultrasound_file()), told) == []


def test_cli_warns_and_the_report_shows_it(tmp_path, capsys, ultrasound_file):
    from p2p_desktop.cli.main import main

    _card()
    code = main(["attack", str(ultrasound_file()), "--attack", "fgsm", "--classifier", DEMO, "--device", "cpu",
                 "--out", str(tmp_path / "out"), "--report", "html"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"p2p-desktop: warning: {WARNING_PREFIX}" in err and "colour" in err
    html = next((tmp_path / "out").glob("*_report.html")).read_text()
    assert "class='warn'" in html and "colour-Doppler" in html
    res = json.loads(next((tmp_path / "out").glob("*_result.json")).read_text())
    assert any(n.startswith(WARNING_PREFIX) for n in res["notes"])


@pytest.mark.gui
def test_gui_warns_before_and_after_the_run(qtbot, window, ultrasound_file):
    _card()
    assert window.panel.set_classifier(DEMO)
    with qtbot.waitSignal(window.browser.loading_finished, timeout=30000):
        window.open_paths([ultrasound_file()])
    qtbot.waitUntil(lambda: window.current_study is not None, timeout=5000)
    assert window.viewer.warning.isVisibleTo(window.viewer) and "colour" in window.viewer.warning.text()
    window.panel.set_attack("fgsm")
    with qtbot.waitSignal(window.runner.finished, timeout=60000):
        assert window.run_attack()
    assert "Input unlike the classifier" in window.results.notes.text()
    # a phantom: the banner goes away
    with qtbot.waitSignal(window.browser.loading_finished, timeout=30000):
        window.open_paths([_phantom_dicom()])
    qtbot.waitUntil(lambda: window.current_study is not None and window.current_study.path == _phantom_dicom(),
                    timeout=5000)
    assert not window.viewer.warning.isVisibleTo(window.viewer)
