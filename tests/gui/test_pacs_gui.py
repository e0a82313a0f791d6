"""The PACS dialogs against a real Orthanc: retrieve a study into the study browser, attack it
in the GUI, send the derived instance back; it arrives, validates no worse than its source with
dciodvfy, and the audit log records both transfers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from tests.orthanc import OUR_AET, free_port, orthanc_server, require_orthanc

pytestmark = [pytest.mark.gui, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    require_orthanc()
    with orthanc_server(tmp_path_factory.mktemp("orthanc-gui")) as server:
        yield server


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_DESKTOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    return tmp_path / "home"


def _configure(orthanc) -> None:
    from p2p_desktop.pacs import PacsSettings, save_settings

    save_settings(PacsSettings(ae_title=OUR_AET, storage_port=orthanc.storage_port))


def _errors(path: Path) -> set[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return {line.strip() for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")}


def test_send_to_pacs_sits_beside_export_dicom(qtbot, window):
    menu = next(a.menu() for a in window.menuBar().actions() if a.text().replace("&", "") == "File")
    actions = menu.actions()
    assert actions[actions.index(window.export_dicom_action) + 1] is window.pacs_send_action
    assert window.pacs_send_action.isEnabled() == window.export_dicom_action.isEnabled() is False
    tools = next(a.menu() for a in window.menuBar().actions() if a.text().replace("&", "") == "Tools")
    assert window.pacs_action in tools.actions()


def test_retrieve_attack_send_back(qtbot, window, orthanc, tmp_path, ultrasound_file):
    from p2p_desktop.gui.pacs_dialog import open_pacs_dialog, open_send_dialog
    from p2p_desktop.pacs import parse_address, send

    _configure(orthanc)
    source = ultrasound_file()
    src = pydicom.dcmread(source)
    send(parse_address(orthanc.address), [source], ae_title=OUR_AET, audit_log=tmp_path / "seed.jsonl")

    dialog = open_pacs_dialog(window)
    assert dialog.chooser.add_node("orthanc", orthanc.aet, "127.0.0.1", orthanc.dicom_port)
    # search
    dialog.patient_edit.setText(src.PatientID)
    dialog.modality_edit.setText("US")
    with qtbot.waitSignal(dialog.runner.finished, timeout=30000):
        assert dialog.search()
    assert dialog.errors == []
    assert dialog.table.rowCount() == 1
    assert dialog.table.item(0, 6).text() == src.StudyInstanceUID
    assert dialog.selected_study() == src.StudyInstanceUID and dialog.retrieve_button.isEnabled()
    # retrieve (C-MOVE) into the study browser, on the worker thread with progress
    dialog.method_combo.setCurrentIndex(dialog.method_combo.findData("move"))
    with qtbot.waitSignal(window.browser.loading_finished, timeout=30000):
        with qtbot.waitSignal(dialog.retrieved, timeout=30000):
            assert dialog.retrieve_selected()
            assert dialog.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: window.current_study is not None, timeout=10000)
    retrieved = Path(dialog.last_retrieved[0])
    assert Path(window.current_study.path) == retrieved
    assert pydicom.dcmread(retrieved).PixelData == src.PixelData
    assert dialog.progress.value() == dialog.progress.maximum() == 1
    # attack it in the GUI
    window.panel.set_attack("fgsm")
    window.panel.set_params(eps=0.03)
    with qtbot.waitSignal(window.runner.finished, timeout=90000):
        assert window.run_attack()
    assert window.current_entry() is not None and window.errors == []
    assert window.pacs_send_action.isEnabled()
    # send it back
    sender = open_send_dialog(window)
    assert sender.chooser.combo.currentData() == "orthanc"
    with qtbot.waitSignal(sender.runner.finished, timeout=30000):
        assert sender.send()
    assert sender.errors == [] and sender.transfer is not None
    derived_uid = sender.transfer.instances[0].sop_instance_uid
    iid = orthanc.find_instance(derived_uid)
    assert iid
    tags = orthanc.tags(iid)
    assert tags["StudyInstanceUID"] == src.StudyInstanceUID and tags["PatientID"] == src.PatientID
    assert tags["SeriesInstanceUID"] != src.SeriesInstanceUID and derived_uid != src.SOPInstanceUID
    assert "DERIVED" in tags["ImageType"].split("\\")
    assert tags["SourceImageSequence"][0]["ReferencedSOPInstanceUID"] == src.SOPInstanceUID
    if shutil.which("dciodvfy"):
        stored = tmp_path / "stored.dcm"
        stored.write_bytes(orthanc.file(iid))
        new = _errors(stored) - _errors(source)
        assert not new, f"dciodvfy errors the derived instance has and its source has not: {new}"
    # the audit log records both transfers
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    pacs = [(e["event"], e["data"]["status"], e["data"]["sop_instance_uids"]) for e in events
            if e["event"].startswith("pacs-")]
    assert pacs == [("pacs-retrieve", "success", [src.SOPInstanceUID]), ("pacs-send", "success", [derived_uid])]
    sender.done(0)
    dialog.done(0)


def test_unreachable_node_is_one_line_in_the_dialog(qtbot, window):
    from p2p_desktop.gui.pacs_dialog import open_pacs_dialog

    dialog = open_pacs_dialog(window)
    assert dialog.chooser.add_node("gone", "GONE", "127.0.0.1", free_port())
    assert not dialog.chooser.add_node("gone", "X", "h", 1)  # duplicate name: refused, one line
    assert len(dialog.errors) == 1 and "exists already" in dialog.errors[0]
    with qtbot.waitSignal(dialog.runner.finished, timeout=30000):
        assert dialog.echo()
    assert len(dialog.errors) == 2 and "connection refused" in dialog.errors[1]
    assert "\n" not in dialog.errors[1]
    assert window.errors[-1] == ("PACS query/retrieve", dialog.errors[1])
    assert dialog.search_button.isEnabled()
    # a DICOMweb node added in the dialog goes through the same path
    assert dialog.chooser.add_node("web", "", "", 0, url=f"http://127.0.0.1:{free_port()}/dicom-web")
    assert dialog.chooser.combo.currentData() == "web"
    with qtbot.waitSignal(dialog.runner.finished, timeout=30000):
        assert dialog.search()
    assert len(dialog.errors) == 3 and "connection refused" in dialog.errors[2]
    dialog.done(0)
