"""The hash-chained audit log: appends, tamper detection (edit, delete, reorder), locking."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from p2p_desktop.audit import GENESIS, AuditLog, default_log_path, record_hash, verify_log


def _log(tmp_path, n: int = 4) -> AuditLog:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(n):
        log.append("attack", {"input": f"img{i}.dcm", "success": i % 2 == 0, "outputs": [{"sha256": "ab" * 32}]})
    return log


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text(encoding="utf-8").splitlines()


def _write(log: AuditLog, lines: list[str]) -> None:
    log.path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def cli(*argv) -> int:
    from p2p_desktop.cli.main import main

    return main([str(a) for a in argv])


def test_records_are_chained(tmp_path):
    log = _log(tmp_path, 3)
    records = [json.loads(line) for line in _lines(log)]
    assert [r["seq"] for r in records] == [0, 1, 2]
    assert records[0]["prev"] == GENESIS
    for before, rec in zip(records, records[1:]):
        assert rec["prev"] == before["hash"]
    assert all(record_hash(r) == r["hash"] for r in records)
    report = verify_log(log.path)
    assert report.ok and report.records == 3
    assert report.message() == "3 records, chain intact, every record signed with this installation's key"
    assert verify_log(log.path, use_key=False).message() == "3 records, chain intact (signatures not checked: no key)"


def test_cli_verify_intact(tmp_path, capsys):
    log = _log(tmp_path, 4)
    assert cli("audit", "verify", log.path) == 0
    assert "4 records, chain intact" in capsys.readouterr().out


@pytest.mark.parametrize("tamper,line", [
    ("edit", 2),  # a value changed in record 2
    ("delete", 2),  # record 2 removed: the record now on line 2 links to a missing hash
    ("reorder", 2),  # records 2 and 3 swapped
    ("delete-first", 1),
    ("rehash", 2),  # record 2 edited and its own hash recomputed: its keyed mac no longer matches
])
def test_tampering_is_found(tmp_path, capsys, tamper, line):
    log = _log(tmp_path, 4)
    lines = _lines(log)
    if tamper == "edit":
        lines[1] = lines[1].replace('"success":false', '"success":true')
    elif tamper == "delete":
        del lines[1]
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    elif tamper == "delete-first":
        del lines[0]
    elif tamper == "rehash":
        rec = json.loads(lines[1])
        rec["data"]["success"] = True
        rec["hash"] = record_hash(rec)
        lines[1] = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    _write(log, lines)
    report = verify_log(log.path)
    assert not report.ok and report.line == line, report
    assert cli("audit", "verify", log.path) == 2
    err = capsys.readouterr().err
    assert f"line {line}" in err and "Traceback" not in err


def test_verify_missing_log_is_an_input_error(tmp_path, capsys):
    assert cli("audit", "verify", tmp_path / "nope.jsonl") == 2
    assert "audit log not found" in capsys.readouterr().err


def test_default_location_and_override(tmp_path, monkeypatch):
    monkeypatch.delenv("P2P_DESKTOP_AUDIT_LOG", raising=False)
    monkeypatch.setenv("P2P_DESKTOP_HOME", str(tmp_path / "home"))
    assert default_log_path() == tmp_path / "home" / "audit.jsonl"
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(tmp_path / "elsewhere.jsonl"))
    assert default_log_path() == tmp_path / "elsewhere.jsonl"
    AuditLog().append("export", {"x": 1})
    assert verify_log(tmp_path / "elsewhere.jsonl").ok


def test_appending_after_a_damaged_line_keeps_reporting_it(tmp_path):
    log = _log(tmp_path, 2)
    with open(log.path, "a", encoding="utf-8") as fh:
        fh.write("{not json\n")
    log.append("attack", {"after": True})
    report = verify_log(log.path)
    assert not report.ok and report.line == 3


def test_unwritable_log_is_a_clear_error(tmp_path):
    from p2p_desktop.errors import OutputError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="audit log"):
        AuditLog(blocker / "audit.jsonl").check()


def _append_many(path: str, n: int, tag: str) -> None:
    log = AuditLog(path)
    for i in range(n):
        log.append("attack", {"who": tag, "i": i})


def test_concurrent_appends_keep_one_chain(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    threads = [threading.Thread(target=_append_many, args=(path, 15, f"t{k}")) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # and three fresh interpreters (forks of this process can deadlock on a lock held by one
    # of its torch or monitor threads at the moment of the fork)
    code = ("import sys; from p2p_desktop.audit import AuditLog; log = AuditLog(sys.argv[1])\n"
            "for i in range(10): log.append('attack', {'who': sys.argv[2], 'i': i})")
    procs = [subprocess.Popen([sys.executable, "-c", code, path, f"p{k}"], stderr=subprocess.PIPE, text=True)
             for k in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    report = verify_log(path)
    expected = 90
    assert report.ok and report.records == expected, report


def test_gui_export_record(tmp_path, pydicom_file):
    from types import SimpleNamespace

    from p2p_desktop.io.outputs import OutputSet
    from p2p_desktop.jobs.audit import audit_export

    study = SimpleNamespace(path=pydicom_file("examples_rgb_color.dcm"), frame_index=0)
    result = SimpleNamespace(attack="fgsm", config={"eps": 0.03}, classifier={"name": "m", "sha256": "ab"},
                             seed=0, device="cpu")
    log = tmp_path / "audit.jsonl"
    with OutputSet(tmp_path / "out") as outs:
        outs.write_bytes("x.dcm", b"dicom", kind="dicom")
        rec = audit_export("dicom", result, study, outs.records, deidentified=True, log=log)
    assert rec["event"] == "export" and rec["data"]["outputs"][0]["sha256"] == outs.records[0]["sha256"]
    # de-identified: no input path and no plain source SHA-256, a keyed digest instead
    assert rec["data"]["input"] is None and rec["data"]["input_sha256"] is None
    assert rec["data"]["input_keyed_digest"] and rec["data"]["deidentified"] is True
    plain = audit_export("dicom", result, study, outs.records, deidentified=False, log=log)
    assert plain["data"]["input"] == str(study.path) and plain["data"]["input_sha256"]
    assert "input_keyed_digest" not in plain["data"]
    assert rec["data"]["input_keyed_digest"] != plain["data"]["input_sha256"]
    assert verify_log(log).ok
