"""A de-identified export, from every surface (GUI export, CLI ``attack --deidentify``), appends an
audit record that names no input: no patient identifier, no input path or file name, and no
plain SHA-256 of the source (which would link the pseudonymous outputs to it). In its place a
keyed digest: HMAC-SHA256 under the installation's audit key, which only a holder of that key
and of the source file can recompute."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pydicom  # noqa: E402
import pytest  # noqa: E402

from p2p_desktop.cli.main import main  # noqa: E402
from p2p_desktop.hashing import sha256_file  # noqa: E402

IDENTITY = {"PatientName": "ROE^RICHARD", "PatientID": "PID-5550123", "PatientBirthDate": "19580704",
            "AccessionNumber": "ACC-4242-7777", "InstitutionName": "Example County Clinic"}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private user folder: the audit log and its key live here."""
    monkeypatch.setenv("P2P_DESKTOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(tmp_path / "home" / "audit.jsonl"))
    monkeypatch.delenv("P2P_DESKTOP_AUDIT_KEY", raising=False)
    return tmp_path / "home"


@pytest.fixture
def identified(identified_ultrasound) -> Path:
    """A real ultrasound DICOM (pydicom's) with identifying attributes, named after the patient."""
    return identified_ultrasound({**IDENTITY, "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.44444444444444444444",
                                  "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.55555555555555555555"},
                                 "ROE_RICHARD_5550123", "ROE_RICHARD_19580704.dcm")


def _lines(log: Path) -> list[str]:
    return [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()] if log.exists() else []


def _check_identity_free(line: str, src: Path, home: Path) -> dict:
    digest = sha256_file(src)
    ds = pydicom.dcmread(src)
    forbidden = [*IDENTITY.values(), "ROE RICHARD", "ROE_RICHARD", str(src), str(src.parent), src.name, src.stem,
                 ds.StudyInstanceUID, ds.SOPInstanceUID, digest, digest[:16], digest[:12]]
    leaks = [f for f in forbidden if f in line]
    assert not leaks, leaks
    record = json.loads(line)
    data = record["data"]
    assert data["input"] is None and data["input_sha256"] is None and data["deidentified"] is True
    # the keyed digest: recomputed here from the key file and the source, by the documented rule
    key = (home / "audit.key").read_bytes()
    expected = hmac.new(key, b"p2p-desktop source-sha256\0" + digest.encode(), hashlib.sha256).hexdigest()
    assert data["input_keyed_digest"] == expected
    # without the key it is not the source's hash under any other name
    assert expected != digest and expected != hashlib.sha256(digest.encode()).hexdigest()
    assert main(["audit", "verify", str(home / "audit.jsonl")]) == 0
    return data


def test_cli_attack_deidentify_audits_without_identity(tmp_path, home, identified, capsys, tiny_classifier_args):
    clf = tiny_classifier_args
    log = home / "audit.jsonl"
    # identified run first: its record does name the input and its SHA-256 (the contrast)
    assert main(["attack", str(identified), "--attack", "fgsm", *clf, "--out", str(tmp_path / "plain"),
                 "--export-dicom"]) == 0
    plain = json.loads(_lines(log)[-1])["data"]
    assert plain["input"] == str(identified) and plain["input_sha256"] == sha256_file(identified)
    assert "input_keyed_digest" not in plain
    before = len(_lines(log))
    assert main(["attack", str(identified), "--attack", "fgsm", *clf, "--out", str(tmp_path / "deid"),
                 "--export-dicom", "--deidentify", "--report", "html"]) == 0, capsys.readouterr().err
    new = _lines(log)[before:]
    assert len(new) == 1
    data = _check_identity_free(new[0], identified, home)
    assert {o["kind"] for o in data["outputs"]} >= {"dicom", "report-html"}
    assert all(Path(o["path"]).name.startswith("deid-") for o in data["outputs"])


@pytest.mark.gui
def test_gui_deidentified_exports_audit_without_identity(qtbot, window, tmp_path, home, identified, open_study,
                                                         run_attack):
    log = home / "audit.jsonl"
    open_study([identified])
    run_attack("fgsm")
    for what, export in (("dicom", lambda f: window.export_dicom(f, deidentify=True)),
                         ("report", lambda f: window.export_report(f, formats=("html",), deidentify=True))):
        before = len(_lines(log))
        with qtbot.waitSignal(window.export_runner.finished, timeout=120000):
            assert export(str(tmp_path / what))
        assert window.errors == [], window.errors
        new = _lines(log)[before:]
        assert len(new) == 1 and json.loads(new[0])["event"] == "export"
        data = _check_identity_free(new[0], identified, home)
        assert data["what"] == what and data["outputs"]
    # a plain (identified) GUI export still names its input, as before
    before = len(_lines(log))
    with qtbot.waitSignal(window.export_runner.finished, timeout=120000):
        assert window.export_dicom(str(tmp_path / "plain"), deidentify=False)
    data = json.loads(_lines(log)[before])["data"]
    assert data["input"] == str(identified) and data["input_sha256"] == sha256_file(identified)


@pytest.mark.gui
@pytest.mark.timeout(180)
def test_gui_deidentified_send_to_pacs_audits_without_identity(qtbot, window, tmp_path, home, identified, open_study,
                                                               run_attack):
    """Send to PACS… with De-identify: the instance reaches a real Orthanc de-identified, and
    the pacs-send record (which lists each sent file) names no patient and no source file."""
    from tests.orthanc import OUR_AET, orthanc_server, require_orthanc

    require_orthanc()
    from p2p_desktop.gui.pacs_dialog import open_send_dialog
    from p2p_desktop.pacs import PacsSettings, save_settings

    log = home / "audit.jsonl"
    with orthanc_server(tmp_path / "orthanc") as orthanc:
        save_settings(PacsSettings(ae_title=OUR_AET, storage_port=orthanc.storage_port))
        open_study([identified])
        run_attack("fgsm")
        sender = open_send_dialog(window)
        assert sender.chooser.add_node("orthanc", orthanc.aet, "127.0.0.1", orthanc.dicom_port)
        sender.deidentify_box.setChecked(True)
        before = len(_lines(log))
        with qtbot.waitSignal(sender.runner.finished, timeout=60000):
            assert sender.send()
        assert sender.errors == [] and sender.transfer is not None
        uid = sender.transfer.instances[0].sop_instance_uid
        tags = orthanc.tags(orthanc.find_instance(uid))
        assert tags["PatientIdentityRemoved"] == "YES" and tags["PatientID"] != IDENTITY["PatientID"]
        sender.done(0)
    new = _lines(log)[before:]
    assert len(new) == 1 and json.loads(new[0])["event"] == "pacs-send"
    ds = pydicom.dcmread(identified)
    forbidden = [*IDENTITY.values(), "ROE_RICHARD", str(identified.parent), identified.stem, ds.StudyInstanceUID,
                 ds.SOPInstanceUID, sha256_file(identified)]
    assert not [f for f in forbidden if f in new[0]], new[0]
    assert json.loads(new[0])["data"]["sop_instance_uids"] == [uid]
