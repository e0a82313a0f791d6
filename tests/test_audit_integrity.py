"""Audit log, round two (issue 15 items 8, 10, 17; issue 19's audit promises).

Canonical hashing is pinned by an independent recomputation; every kind of tampering is
located to its line; a forger without the installation key is found; appends are all or
nothing under a real write failure (file-size limit); a torn tail is named and repaired.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys

import pytest

from p2p_desktop.audit import GENESIS, AuditLog, record_hash, verify_log


def cli(*argv) -> int:
    from p2p_desktop.cli.main import main

    return main([str(a) for a in argv])


@pytest.fixture
def log(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_KEY", str(tmp_path / "keys" / "audit.key"))
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(5):
        log.append("attack", {"input": f"img{i}.dcm", "success": i % 2 == 0, "note": "ünïcode ✓"})
    return log


def _lines(log):
    return log.path.read_bytes().split(b"\n")[:-1]


def _write(log, lines, tail=b"\n"):
    log.path.write_bytes(b"\n".join(lines) + tail)


def _independent_hash(rec: dict) -> str:
    body = {k: v for k, v in rec.items() if k not in ("hash", "mac")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_canonical_hash_and_mac_recomputed_independently(log, tmp_path):
    key = (tmp_path / "keys" / "audit.key").read_bytes()
    prev = GENESIS
    for seq, raw in enumerate(_lines(log)):
        rec = json.loads(raw)
        assert raw == json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert rec["seq"] == seq and rec["prev"] == prev
        assert rec["hash"] == _independent_hash(rec)
        body = json.dumps({k: v for k, v in rec.items() if k not in ("hash", "mac")}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False).encode()
        assert rec["mac"] == hmac.new(key, body, hashlib.sha256).hexdigest()
        assert rec["key"] == hashlib.sha256(key).hexdigest()[:16]
        prev = rec["hash"]
    # every field is covered, the time included
    rec = json.loads(_lines(log)[0])
    for field in ("seq", "time", "event", "data", "prev", "key"):
        changed = dict(rec, **{field: "x"})
        assert record_hash(changed) != rec["hash"], field


def test_key_is_private_and_outside_the_log(log, tmp_path):
    key = tmp_path / "keys" / "audit.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 32 and key.read_bytes() not in log.path.read_bytes()


@pytest.mark.parametrize("what,line", [("time", 3), ("data", 3), ("event", 3)])
def test_edited_fields_found(log, what, line):
    lines = _lines(log)
    rec = json.loads(lines[line - 1])
    rec[what] = "2020-01-01T00:00:00+00:00" if what == "time" else ({"x": 1} if what == "data" else "export")
    lines[line - 1] = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    _write(log, lines)
    report = verify_log(log.path)
    assert not report.ok and report.line == line and "edited" in report.reason
    assert not verify_log(log.path, use_key=False).ok


def test_deleted_records(log, capsys):
    original = _lines(log)
    head = json.loads(original[-1])["hash"]
    for index, line in ((0, 1), (2, 3)):  # first, middle
        lines = list(original)
        del lines[index]
        _write(log, lines)
        report = verify_log(log.path)
        assert not report.ok and report.line == line, (index, report)
    # the last: still a valid chain on its own; the head from a report finds it
    _write(log, original[:-1])
    assert verify_log(log.path).ok and verify_log(log.path).records == 4
    report = verify_log(log.path, expect_head=head)
    assert not report.ok and "cut off" in report.reason
    assert cli("audit", "verify", log.path, "--head", head) == 2
    assert "line None" not in capsys.readouterr().err
    _write(log, original)
    assert verify_log(log.path, expect_head=head).ok


def test_reordered_records(log):
    lines = _lines(log)
    lines[3], lines[1] = lines[1], lines[3]
    _write(log, lines)
    report = verify_log(log.path)
    assert not report.ok and report.line == 2


def test_blank_line_inside_is_found_not_the_end(log, capsys):
    lines = _lines(log)
    _write(log, lines[:2] + [b""] + lines[2:])
    report = verify_log(log.path)
    assert not report.ok and report.line == 3 and "blank line" in report.reason and report.records == 2
    assert cli("audit", "verify", log.path) == 2
    assert "line 3" in capsys.readouterr().err


def test_trailing_blank_lines_are_not_a_removed_record(log, capsys):
    _write(log, _lines(log), tail=b"\n\n\n\r\n")
    report = verify_log(log.path)
    assert report.ok and report.records == 5 and "trailing blank" in report.message()
    assert cli("audit", "verify", log.path) == 0
    log.append("attack", {"after": "blank lines"})  # the next record follows the last one directly
    report = verify_log(log.path)
    assert report.ok and report.records == 6 and not report.notes


@pytest.mark.parametrize("tail", [b"\n   \n", b"\n\t \r\n \n", b"\r\n  \n"])
def test_trailing_whitespace_lines_are_blank_lines_too(log, tail):
    """A trailing line of spaces is a blank line, as verify reads it: the next record is appended
    right after the last one, never after the spaces (which would leave a blank line inside)."""
    _write(log, _lines(log), tail=tail)
    assert verify_log(log.path).ok
    log.append("attack", {"after": "a line of spaces"})
    report = verify_log(log.path)
    assert report.ok and report.records == 6 and not report.notes, report.reason


def test_forger_without_the_key_is_found(log, tmp_path, capsys):
    lines = _lines(log)
    last = json.loads(lines[-1])
    forged = {"seq": last["seq"] + 1, "time": last["time"], "event": "attack", "data": {"forged": True},
              "prev": last["hash"], "key": last["key"]}
    forged["hash"] = _independent_hash(forged)
    forged["mac"] = hmac.new(b"guessed key", b"x", hashlib.sha256).hexdigest()
    _write(log, lines + [json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()])
    assert verify_log(log.path, use_key=False).ok  # a plain hash chain cannot see it...
    report = verify_log(log.path)  # ...the keyed one can
    assert not report.ok and report.line == 6 and "forged" in report.reason
    assert cli("audit", "verify", log.path) == 2
    # a whole fabricated log (own chain, no key) fails at its first record
    fake = AuditLog(tmp_path / "fake.jsonl", key_path=tmp_path / "other.key")
    fake.append("attack", {"made": "up"})
    report = verify_log(fake.path)
    assert not report.ok and report.line == 1 and "another key" in report.reason
    # stripping the signatures does not help either
    unsigned = [json.loads(x) for x in _lines(log)[:5]]
    for rec in unsigned:
        rec.pop("mac")
    log.path.write_text("".join(json.dumps(r) + "\n" for r in unsigned))
    report = verify_log(log.path)
    assert not report.ok and report.line == 1 and "not signed" in report.reason
    capsys.readouterr()
    assert cli("audit", "verify", log.path, "--no-key") == 0
    assert "signatures not checked" in capsys.readouterr().out


_FILL = r"""
import resource, signal, sys
from p2p_desktop.audit import AuditLog
from p2p_desktop.errors import OutputError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
log = AuditLog(sys.argv[1])
size = log.path.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, resource.RLIM_INFINITY))
try:
    log.append("attack", {"big": "x" * 5000})
except OutputError as exc:
    print("refused:", exc)
    sys.exit(3)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_disk_full_during_append_leaves_no_half_record(log):
    before = log.path.read_bytes()
    proc = subprocess.run([sys.executable, "-c", _FILL, str(log.path)], capture_output=True, text=True,
                          env={**os.environ}, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "File too large" in proc.stdout or "too large" in proc.stdout.lower()
    assert log.path.read_bytes() == before  # cut back: nothing half-written stays
    log.append("attack", {"after": "disk full"})
    report = verify_log(log.path)
    assert report.ok and report.records == 6


def test_torn_last_line_is_named_refused_and_repaired(log, capsys):
    whole = log.path.read_bytes()
    log.append("attack", {"torn": True})
    full = log.path.read_bytes()
    log.path.write_bytes(full[: len(whole) + 40])  # a crash 40 bytes into the record
    report = verify_log(log.path)
    assert not report.ok and report.torn and report.line == 6 and report.records == 5
    assert "torn last record" in report.reason and "5 records before it are intact" in report.reason
    assert cli("audit", "verify", log.path) == 2
    assert "audit log torn: " in capsys.readouterr().err
    from p2p_desktop.errors import OutputError

    with pytest.raises(OutputError, match="torn"):  # never glued onto the torn bytes
        log.append("attack", {"next": 1})
    with pytest.raises(OutputError, match="torn"):
        log.check()
    assert log.path.read_bytes() == full[: len(whole) + 40]
    assert cli("audit", "repair", log.path) == 0
    assert "removed a torn last record (40 bytes)" in capsys.readouterr().out
    assert log.path.read_bytes() == whole
    log.append("attack", {"next": 1})
    assert verify_log(log.path).ok and verify_log(log.path).records == 6


def test_repair_never_removes_anything_else(log, capsys):
    lines = _lines(log)
    lines[2] = lines[2].replace(b'"success":true', b'"success":false')
    _write(log, lines)
    before = log.path.read_bytes()
    assert cli("audit", "repair", log.path) == 2
    assert "not torn but damaged at line 3" in capsys.readouterr().err
    assert log.path.read_bytes() == before
    # an intact log: nothing to do
    _write(log, _lines(log)[:2])
    assert cli("audit", "repair", log.path) == 0 and log.path.read_bytes().count(b"\n") == 2


def test_record_that_lost_only_its_end_of_line(log):
    log.path.write_bytes(log.path.read_bytes()[:-1])
    assert verify_log(log.path).ok
    log.append("attack", {"after": "lost newline"})
    assert verify_log(log.path).ok and verify_log(log.path).records == 6


def test_every_report_carries_the_chain_head(log, tmp_path, capsys):
    import torch
    from pydicom.data import get_testdata_file

    from p2p_desktop.models.classifier import build_architecture

    torch.manual_seed(0)
    w = tmp_path / "sq.pth"
    torch.save(build_architecture("squeezenet1_1", 3).state_dict(), w)
    head = json.loads(_lines(log)[-1])["hash"]
    code = cli("attack", get_testdata_file("examples_rgb_color.dcm"), "--attack", "fgsm", "--classifier", w,
               "--arch", "squeezenet1_1", "--classes", "a,b,c", "--input-size", 64, "--report", "html",
               "--audit-log", log.path, "--out", tmp_path / "o")
    assert code == 0, capsys.readouterr().err
    html = next((tmp_path / "o").glob("*_report.html")).read_text()
    assert f"seq 4, {head}" in html and f"audit verify --head {head}" in html
    record = json.loads(_lines(log)[-1])
    assert record["prev"] == head and record["seq"] == 5  # this run's record links to the head in its report
    # cut the run's record and the one before off: the head from the report finds it
    _write(log, _lines(log)[:4])
    assert cli("audit", "verify", log.path, "--head", head) == 2
