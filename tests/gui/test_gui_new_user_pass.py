"""Issue 27, the GUI new-user pass (offscreen, real widgets, real files, the test classifier):
the export folder picker opens where exports are allowed and checks the folder before asking
anything else; PNG/TIFF exports can be de-identified like DICOM; the log never links a
pseudonym to its source; the study browser keys studies by patient and tells same-named files
apart; the mouse wheel leaves unfocused editors alone and a changed parameter makes the preset
"(custom)"; Tab leaves tables; the About box tells the truth."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

pytestmark = pytest.mark.gui

JANE = {"PatientName": "DOE^JANE", "PatientID": "PID-734291", "PatientBirthDate": "19610317"}
SHARED_STUDY = "1.2.826.0.1.3680043.8.498.61616161616161616161"


def _audit_records() -> list[dict]:
    from p2p_desktop.audit import default_log_path

    path = default_log_path()
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class _Dialogs:
    """The window's modal dialogs answered by the test: folder pickers (each call's title and
    start folder are kept) and the de-identify question (each question is kept)."""

    def __init__(self, monkeypatch, folders, answer_yes: bool = True) -> None:
        from PySide6.QtWidgets import QFileDialog, QMessageBox

        self.folders = list(folders)
        self.picked: list[tuple[str, str]] = []
        self.questions: list[str] = []

        def pick(_parent, title, start="", *_a, **_k):
            self.picked.append((title, start))
            return str(self.folders.pop(0)) if self.folders else ""

        def question(_parent, _title, text, *_a, **_k):
            self.questions.append(text)
            return QMessageBox.StandardButton.Yes if answer_yes else QMessageBox.StandardButton.No

        monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(pick))
        monkeypatch.setattr(QMessageBox, "question", staticmethod(question))


@pytest.fixture
def user_home(tmp_path, monkeypatch) -> Path:
    """A private home folder with a Documents folder (no XDG user-dirs file)."""
    home = tmp_path / "user"
    (home / "Documents").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return home


@pytest.fixture
def phi(identified_ultrasound) -> Path:
    """pydicom's ultrasound file with a patient's identity, saved as ``patients/jane/phi.dcm``."""
    return identified_ultrasound({**JANE, "StudyInstanceUID": SHARED_STUDY}, "jane", "phi.dcm")


# -- item 3: the export folder picker ---------------------------------------------------------------------
def test_export_folder_picker_opens_outside_the_input_and_checks_before_asking(
        qtbot, window, monkeypatch, user_home, phi, open_study, run_attack):
    open_study([phi])
    run_attack("fgsm", eps=0.02)
    inside = phi.parent / "exports"
    dialogs = _Dialogs(monkeypatch, [inside])
    # a stale last export folder inside the input's folder is not offered again
    window.settings.export_folder = str(phi.parent)
    assert window.export("dicom") is False
    (title, start), = dialogs.picked
    assert title == "Export DICOM to folder"
    assert Path(start) == user_home / "Documents", start
    # the refused folder is refused at once: no de-identify question, nothing written, one message
    assert dialogs.questions == []
    assert not inside.exists() and not window.export_runner.is_running()
    assert window.errors and "inside the input study's folder" in window.errors[-1][1]
    assert window.settings.export_folder != str(inside)
    window.last_error_dialog.close()

    # an allowed folder: then the question, then the export; the next picker opens there
    allowed = user_home / "Documents" / "adv"
    dialogs.folders = [allowed]
    with qtbot.waitSignal(window.export_runner.finished, timeout=60000):
        assert window.export("dicom")
    assert len(dialogs.questions) == 1 and window.last_export
    assert Path(window.last_export[0]).parent == allowed
    dialogs.folders = [""]
    assert window.export("dicom") is False
    assert Path(dialogs.picked[-1][1]) == allowed


def test_export_start_folder_falls_back_to_home_and_skips_gone_folders(tmp_path, user_home):
    from p2p_desktop.io.outputs import export_start_folder

    study = tmp_path / "in" / "a.dcm"
    assert export_start_folder(str(tmp_path / "gone"), [study]) == user_home / "Documents"
    assert export_start_folder("", [study]) == user_home / "Documents"
    assert export_start_folder(str(tmp_path / "in"), [study]) == user_home / "Documents"
    # an input in Documents: the Documents folder is the input's folder, so home is offered
    assert export_start_folder("", [user_home / "Documents" / "a.dcm"]) == user_home
    assert export_start_folder(str(tmp_path), [study]) == tmp_path


# -- item 4: de-identified PNG / TIFF exports --------------------------------------------------------------
def test_png_and_tiff_exports_offer_deidentification(qtbot, window, monkeypatch, user_home, phi, open_study,
                                                     run_attack):
    from p2p_desktop.hashing import sha256_file

    open_study([phi])
    run_attack("fgsm", eps=0.02)
    out = user_home / "Documents" / "deid"
    dialogs = _Dialogs(monkeypatch, [out, out, out])
    before = len(_audit_records())
    for key in ("dicom", "png", "tiff"):
        with qtbot.waitSignal(window.export_runner.finished, timeout=60000):
            assert window.export(key), key
        assert window.errors == [], window.errors
    assert len(dialogs.questions) == 3  # PNG and TIFF ask, as DICOM does
    files = sorted(p.name for p in out.iterdir())
    assert {Path(f).suffix for f in files} == {".dcm", ".png", ".npy", ".tif"}, files
    # one pseudonym for the run's exports; nothing named after the source
    assert len({f.split("_")[0] for f in files}) == 1 and files[0].startswith("deid-"), files
    assert not any("phi" in f for f in files), files
    records = _audit_records()[before:]
    assert [r["data"]["what"] for r in records] == ["dicom", "png", "tiff"]
    digest = sha256_file(phi)
    for r in records:
        text = json.dumps(r)
        assert str(phi) not in text and phi.name not in text and digest not in text, r["data"]["what"]
        assert r["data"]["input"] is None and r["data"]["input_sha256"] is None and r["data"]["deidentified"]
        assert r["data"]["input_keyed_digest"]

    # answered "No": a plain PNG export is named after its source, as before
    plain = user_home / "Documents" / "plain"
    dialogs = _Dialogs(monkeypatch, [plain], answer_yes=False)
    with qtbot.waitSignal(window.export_runner.finished, timeout=60000):
        assert window.export("png")
    assert sorted(p.name for p in plain.iterdir()) == ["phi_fgsm_adv.png", "phi_fgsm_perturbation.npy"]
    assert _audit_records()[-1]["data"]["input"] == str(phi)


def test_cli_deidentify_applies_to_a_tiff_only_export(tmp_path, phi, capsys, tiny_classifier_args):
    from p2p_desktop.cli.main import main

    out = tmp_path / "out"
    assert main(["attack", str(phi), "--attack", "fgsm", *tiny_classifier_args, "--out", str(out), "--export-tiff",
                 "--deidentify"]) == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert any(n.endswith("_adv.tif") for n in names) and all(n.startswith("deid-") for n in names), names


# -- item 5: the log never links a pseudonym to its source --------------------------------------------------
def test_deidentified_exports_log_nothing_that_links_pseudonym_and_source(qtbot, window, monkeypatch, user_home,
                                                                         phi, open_study, run_attack):
    import logging

    from p2p_desktop.gui.app import _file_logging

    monkeypatch.setenv("P2P_DESKTOP_HOME", str(user_home / "p2p"))
    logger = logging.getLogger("p2p_desktop")
    handlers = list(logger.handlers)
    _file_logging()  # the app's own logs/gui.log
    try:
        open_study([phi])
        run_attack("fgsm", eps=0.02)
        out = user_home / "Documents" / "deid"
        for export in (lambda: window.export_dicom(str(out), deidentify=True),
                       lambda: window.export_report(str(out), formats=("html",), deidentify=True),
                       lambda: window.export("png", str(out), deidentify=True)):
            with qtbot.waitSignal(window.export_runner.finished, timeout=60000):
                assert export()
        assert window.errors == [], window.errors
    finally:
        for h in logger.handlers[:]:
            if h not in handlers:
                logger.removeHandler(h)
                h.close()
    text = (user_home / "p2p" / "logs" / "gui.log").read_text(encoding="utf-8")
    assert "phi.dcm" in text  # the run names its study, as it should
    pseudonym = window.exports.pseudonym()
    assert pseudonym.startswith("deid-")
    assert pseudonym not in text, text
    assert "export" in text  # the exports are still logged, by kind and count


# -- item 6: the study browser -------------------------------------------------------------------------------
def _patient_of(node) -> str:
    while node.parent() is not None:
        node = node.parent()
    return node.text(0)


def test_browser_keys_studies_by_patient_and_tells_same_named_files_apart(qtbot, window, phi, identified_ultrasound,
                                                                        open_study):
    import shutil

    phantom = identified_ultrasound({"PatientName": "PHANTOM^SYNTHETIC", "PatientID": "PH-0001",
                                     "StudyInstanceUID": SHARED_STUDY,
                                     "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.62626262626262626262"},
                                    "phantom", "phantom.dcm")
    copy = phi.parent.parent / "copy" / "phi.dcm"
    copy.parent.mkdir()
    shutil.copy(phi, copy)
    open_study([phantom, phi, copy])
    browser = window.browser
    nodes = {p: browser._item_nodes[p.resolve()] for p in (phantom, phi, copy)}
    # the study UID both patients' files carry does not file Jane's image under the phantom
    assert "PHANTOM^SYNTHETIC" in _patient_of(nodes[phantom])
    assert "DOE^JANE" in _patient_of(nodes[phi]) and "DOE^JANE" in _patient_of(nodes[copy])
    # the conflict is shown on both studies
    for p in (phantom, phi):
        study_node = nodes[p].parent().parent()
        assert "another patient" in study_node.toolTip(0), study_node.toolTip(0)
    # two copies of phi.dcm from two folders: two different rows, each naming its folder
    a, b = nodes[phi].text(0), nodes[copy].text(0)
    assert a != b and "jane" in a and "copy" in b, (a, b)
    assert nodes[phi].toolTip(0) == str(phi) and nodes[copy].toolTip(0) == str(copy)
    # a file whose name is unique keeps its plain name
    assert nodes[phantom].text(0).endswith("phantom.dcm") and "/" not in nodes[phantom].text(0)


def test_same_named_plain_images_are_told_apart(qtbot, window, tmp_path, open_study):
    import numpy as np
    from PIL import Image

    paths = []
    for folder in ("left", "right"):
        p = tmp_path / folder / "scan.png"
        p.parent.mkdir()
        Image.fromarray((np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)).save(p)
        paths.append(p)
    open_study(paths)
    texts = [window.browser._item_nodes[p.resolve()].text(0) for p in paths]
    assert texts[0] != texts[1] and "left" in texts[0] and "right" in texts[1], texts


# -- item 7: the mouse wheel and the preset -----------------------------------------------------------------
def _wheel(widget, steps: int = -1) -> None:
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    pos = QPointF(widget.rect().center())
    event = QWheelEvent(pos, QPointF(widget.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, 120 * steps),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_wheel_leaves_unfocused_editors_alone_and_a_change_makes_the_preset_custom(qtbot, window):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QAbstractSpinBox, QComboBox

    panel = window.panel
    assert panel.set_attack("pgd")
    window.activateWindow()
    window.browser.tree.setFocus()
    spin = panel.form.rows["steps"].editor
    steps = spin.value()
    _wheel(spin)
    assert spin.value() == steps
    assert panel.preset_combo.currentText() == "(defaults)"
    editors = panel.findChildren(QAbstractSpinBox) + panel.findChildren(QComboBox)
    assert editors
    for editor in editors:
        assert editor.focusPolicy() == Qt.FocusPolicy.StrongFocus, editor
        state = editor.value() if isinstance(editor, QAbstractSpinBox) else editor.currentIndex()
        if not editor.hasFocus():
            _wheel(editor)
            assert state == (editor.value() if isinstance(editor, QAbstractSpinBox) else editor.currentIndex()), \
                editor.toolTip()
    assert panel.attack_name() == "pgd"
    for batch_spin in (window.batch.limit_spin, window.batch.seed_spin):  # the Batch tab's settings too
        value = batch_spin.value()
        _wheel(batch_spin)
        assert batch_spin.value() == value and batch_spin.focusPolicy() == Qt.FocusPolicy.StrongFocus

    # a changed parameter: the preset says so, and choosing "(defaults)" again restores them
    spin.setValue(steps - 4)
    assert panel.preset_combo.currentText() == "(custom)"
    panel.preset_combo.setCurrentIndex(panel.preset_combo.findText("(defaults)"))
    assert spin.value() == steps and panel.preset_combo.currentText() == "(defaults)"
    assert panel.preset_combo.findText("(custom)") < 0
    # a focused spin box still takes the wheel
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus, timeout=2000)
    _wheel(spin, 1)
    assert spin.value() == steps + 1 and panel.preset_combo.currentText() == "(custom)"

    # an attack with presets: a preset, then an edit -> "(custom)", and the config records "custom"
    assert panel.set_attack("p2p")
    panel.preset_combo.setCurrentIndex(panel.preset_combo.findData("paper"))
    assert panel.preset_combo.currentText() == "paper"
    panel.form.rows["steps"].editor.setValue(7)
    assert panel.preset_combo.currentText() == "(custom)"
    assert panel.build_attack().config.preset == "custom"
    panel.preset_combo.setCurrentIndex(panel.preset_combo.findData("paper"))
    assert panel.build_attack().config.preset == "paper" and panel.preset_combo.currentText() == "paper"


# -- item 9: Tab leaves tables ------------------------------------------------------------------------------
def test_tab_leaves_the_compare_metrics_table(qtbot, window, ultrasound_file, open_study, run_attack):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QAbstractItemView, QApplication

    open_study([ultrasound_file()])
    a = run_attack("fgsm", eps=0.02)
    b = run_attack("fgsm", eps=0.04)
    window.compare_entries(a, b)
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    table = window.compare.columns[0]["metrics"]
    table.setFocus()
    qtbot.waitUntil(table.hasFocus, timeout=2000)
    table.setCurrentCell(0, 0)
    for _ in range(3):
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is not table
    views = window.findChildren(QAbstractItemView)
    assert [v for v in views if v.tabKeyNavigation()] == []


# -- item 10: the About box --------------------------------------------------------------------------------
def test_about_box_lists_the_registry_and_says_what_leaves_the_machine(qtbot, window, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from p2p_desktop.attacks.registry import available

    shown = []
    monkeypatch.setattr(QMessageBox, "about", staticmethod(lambda _p, title, text: shown.append(text)))
    window.show_about()
    text = shown[0]
    assert "nothing leaves this machine" not in text
    for spec in available():
        assert spec.name in text, spec.name
    assert "DeepFool" in text or "deepfool" in text
    assert "DICOM node" in text and "audit" in text


# -- item 11: one wording for a run's outcome; a cancelled run records its classifier's hash ---------------
def test_one_outcome_wording_and_cancelled_runs_record_the_classifier_hash(qtbot, window, ultrasound_file,
                                                                          open_study, run_attack):
    open_study([ultrasound_file()])
    entry = run_attack("fgsm", eps=1e-4)  # below half a grey level: the written image is the original
    r = entry.result
    assert not r.success and r.adversarial_label == r.original_label
    outcome = r.outcome
    assert outcome == "no success: class unchanged"
    history_text = window.history.list.item(0).text()
    shown = {"progress": window.monitor.title.text(), "results": window.results.verdict.text(),
             "history": history_text, "status bar": window.status_label.text()}
    for where, text in shown.items():
        assert outcome in text, (where, text)
        assert "FAILED" not in text and "no change of class" not in text, (where, text)

    before = len(_audit_records())
    window.panel.set_attack("pgd")
    window.panel.set_params(steps=10000, alpha=0.001, eps=0.05)
    window.runner.progress.connect(lambda _e: window.cancel_run())
    with qtbot.waitSignals([window.runner.cancelled, window.runner.finished], timeout=60000):
        assert window.run_attack()
    (record,) = _audit_records()[before:]
    assert record["data"]["status"] == "cancelled"
    assert record["data"]["classifier"]["sha256"] == r.classifier["sha256"] is not None
