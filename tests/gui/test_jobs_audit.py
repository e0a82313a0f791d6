"""One audit-record builder for every surface (jobs/audit.py ``run_record``): a CLI ``attack``,
a GUI run and a GUI export append records with the same fields, the backbone included; a
de-identified one names no input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from tests.test_provenance import cli  # noqa: E402


@pytest.fixture(autouse=True)
def audit_log(tmp_path, monkeypatch):
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(log))
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_KEY", str(tmp_path / "audit.key"))
    return log


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_cli_run_gui_run_and_gui_export_records_have_the_same_fields(qtbot, window, classifier_name, tmp_path,
                                                                      capsys, audit_log, open_study, run_attack,
                                                                      ultrasound_file):
    source = tmp_path / "in" / "us.dcm"
    source.parent.mkdir()
    shutil.copy(ultrasound_file(), source)
    # the CLI: attack with a DICOM export
    assert cli("attack", source, "--attack", "fgsm", "--classifier", classifier_name, "--out", tmp_path / "cli",
               "--device", "cpu", "--export-dicom", "--json") == 0
    capsys.readouterr()
    cli_rec = _records(audit_log)[-1]
    # the GUI: a run (audited), then a DICOM export of it
    open_study([source])
    run_attack("fgsm")
    run_rec = _records(audit_log)[-1]
    with qtbot.waitSignal(window.export_runner.finished, timeout=60000):
        assert window.export_dicom(str(tmp_path / "gui"), deidentify=False)
    assert window.errors == [], window.errors
    export_rec = _records(audit_log)[-1]

    assert (cli_rec["event"], run_rec["event"], export_rec["event"]) == ("attack", "attack", "export")
    assert (cli_rec["data"]["command"], run_rec["data"]["command"], export_rec["data"]["command"]) == \
        ("attack", "gui-run", "gui-export")
    fields = set(cli_rec["data"])
    assert {"backbone", "classifier", "input_sha256", "outputs", "deidentified", "success"} <= fields
    assert set(export_rec["data"]) == fields | {"what"}
    assert set(run_rec["data"]) == fields | {"status"}
    for rec in (run_rec, export_rec):  # the same run, described the same way
        for key in ("input", "input_sha256", "frame", "attack", "config", "classifier", "backbone", "device", "seed"):
            assert rec["data"][key] == cli_rec["data"][key], key
    assert [o["kind"] for o in export_rec["data"]["outputs"]] == ["dicom"]


def test_the_builder_keeps_the_backbone_and_no_identity_when_deidentified(tmp_path):
    from p2p_desktop.audit import source_digest
    from p2p_desktop.hashing import sha256_file
    from p2p_desktop.jobs.audit import audit_export, run_record

    src = tmp_path / "patient.dcm"
    src.write_bytes(b"source")
    study = SimpleNamespace(path=src, frame_index=0)
    result = SimpleNamespace(attack="p2p", config={"eps": 0.1}, classifier={"name": "c", "sha256": "ab"},
                             backbone={"name": "demo", "sha256": "cd", "path": "/x"}, device="cpu", seed=1,
                             success=True)
    outs = [{"kind": "dicom", "path": "o.dcm", "sha256": "ef"}]
    cli = run_record("attack", result, study, outs, input_sha256=sha256_file(src))
    gui = audit_export("dicom", result, study, outs, log=tmp_path / "audit.jsonl")["data"]
    assert cli["backbone"] == gui["backbone"] == {"name": "demo", "sha256": "cd"}
    assert {k: v for k, v in gui.items() if k not in ("what", "command")} == \
        {k: v for k, v in cli.items() if k != "command"}
    deid = audit_export("dicom", result, study, outs, deidentified=True, log=tmp_path / "audit.jsonl")["data"]
    assert deid["input"] is None and deid["input_sha256"] is None and deid["deidentified"] is True
    assert deid["input_keyed_digest"] == source_digest(sha256_file(src))
    assert str(src) not in json.dumps(deid) and sha256_file(src) not in json.dumps(deid)
