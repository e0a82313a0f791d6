"""Audit log edges: the exact lines users read when a log or key cannot be used, the report
fields verify returns, blank-line handling at the tail, the lock each operation takes, and the
rollback of a failed append after trailing blank lines."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys

import pytest

from p2p_desktop import audit
from p2p_desktop.audit import GENESIS, AuditLog, ChainReport, append_event, chain_head, load_key, repair_log, verify_log
from p2p_desktop.errors import InputError, OutputError
from tests.test_audit_integrity import _FILL


@pytest.fixture
def log(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_KEY", str(tmp_path / "keys" / "audit.key"))
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(3):
        log.append("attack", {"i": i})
    return log


def _records(log):
    return [json.loads(x) for x in log.path.read_bytes().splitlines() if x.strip()]


# -- keys ------------------------------------------------------------------------------------------
def test_a_missing_key_is_created_only_when_asked_in_missing_folders(tmp_path):
    key = tmp_path / "a" / "b" / "audit.key"
    assert load_key(key) is None and not key.parent.exists()
    made = load_key(key, create=True)
    assert len(made) == 32 and key.read_bytes() == made and oct(key.stat().st_mode & 0o777) == "0o600"
    assert load_key(key) == made


def test_a_key_created_by_a_concurrent_run_is_the_one_loaded(tmp_path, monkeypatch):
    key = tmp_path / "audit.key"
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_KEY", str(tmp_path / "default.key"))
    theirs = bytes(range(32))
    real_open = os.open

    def racing_open(path, flags, mode=0o777):
        if str(path) == str(key) and flags & os.O_EXCL:
            key.write_bytes(theirs)  # another run wins the race between our read and our create
        return real_open(path, flags, mode)

    monkeypatch.setattr(audit.os, "open", racing_open)
    assert load_key(key, create=True) == theirs
    assert not (tmp_path / "default.key").exists()


def test_unusable_key_paths_are_one_line(tmp_path):
    folder = tmp_path / "keydir"
    folder.mkdir()
    with pytest.raises(OutputError) as info:
        load_key(folder)
    assert str(info.value) == f"the audit key {folder} is not a regular file; refused"
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    with pytest.raises(OutputError) as info:
        load_key(blocker / "audit.key")
    assert str(info.value) == f"cannot read the audit key {blocker / 'audit.key'}: Not a directory"


def test_verify_names_an_unusable_key_as_bad_input(log, tmp_path):
    folder = tmp_path / "keydir"
    folder.mkdir()
    with pytest.raises(InputError) as info:
        verify_log(log.path, key_path=folder)
    assert str(info.value) == f"the audit key {folder} is not a regular file; refused"


# -- append ----------------------------------------------------------------------------------------
def test_append_event_records_the_event_in_the_named_log(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_KEY", str(tmp_path / "audit.key"))
    rec = append_event("export", {"n": 1}, tmp_path / "a.jsonl")
    assert rec["event"] == "export" and rec["seq"] == 0 and rec["prev"] == GENESIS
    assert _records(AuditLog(tmp_path / "a.jsonl")) == [rec]


def test_a_log_whose_folder_is_a_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_KEY", str(tmp_path / "audit.key"))
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    log = AuditLog(blocker / "audit.jsonl")
    with pytest.raises(OutputError) as info:
        log.append("attack", {})
    assert str(info.value) == f"cannot append to the audit log {log.path}: File exists"
    with pytest.raises(OutputError) as info:
        log.check()
    assert str(info.value) == f"cannot write the audit log {log.path}: File exists"


def test_check_creates_nested_folders_and_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_KEY", str(tmp_path / "k" / "audit.key"))
    log = AuditLog(tmp_path / "x" / "y" / "audit.jsonl")
    log.check()
    assert log.path.is_file() and log.path.read_bytes() == b"" and (tmp_path / "k" / "audit.key").is_file()


@pytest.mark.parametrize("tail", [b"\x0c\n", b"\n\x0b \n", b" \x0c\t\r\n\n"])
def test_every_whitespace_only_tail_line_is_blank_for_append_as_for_verify(log, tail):
    """verify reads a line of any ASCII whitespace (form feed and vertical tab too) as blank; the
    next record must go right after the last one, not chain onto the whitespace."""
    whole = log.path.read_bytes()
    log.path.write_bytes(whole + tail)
    assert verify_log(log.path).ok
    rec = log.append("attack", {"after": "whitespace"})
    assert rec["seq"] == 3 and rec["prev"] == _records(log)[2]["hash"]
    assert log.path.read_bytes() == whole + audit.canonical_json(rec) + b"\n"
    assert verify_log(log.path).ok and verify_log(log.path).records == 4


def test_many_trailing_blank_lines_are_dropped_not_overwritten(log):
    whole = log.path.read_bytes()
    log.path.write_bytes(whole + b"\n" * 5000)  # longer than the next record
    rec = log.append("attack", {"after": "blank lines"})
    assert log.path.read_bytes() == whole + audit.canonical_json(rec) + b"\n"


def test_a_damaged_last_line_that_is_not_utf8_is_chained_onto(log):
    whole = log.path.read_bytes()
    log.path.write_bytes(whole + b"\xff\xfe not a record\n")
    rec = log.append("attack", {"after": "damage"})
    assert rec["seq"] == 4 and rec["prev"] == hashlib.sha256(b"\xff\xfe not a record").hexdigest()
    report = verify_log(log.path)
    assert not report.ok and report.line == 4 and report.reason == "not valid JSON (the record was edited or damaged)"


def test_a_single_record_one_byte_longer_than_the_tail_block(tmp_path, monkeypatch):
    """The tail reader reads 8 KiB blocks from the end: a first line of 8193 bytes puts its first
    byte alone in the last block read."""
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_KEY", str(tmp_path / "audit.key"))
    probe = AuditLog(tmp_path / "probe.jsonl")
    base = len(audit.canonical_json(probe.append("attack", {"pad": ""}))) + 1
    log = AuditLog(tmp_path / "audit.jsonl")
    first = log.append("attack", {"pad": "x" * (8193 - base)})
    assert log.path.stat().st_size == 8193
    second = log.append("attack", {"pad": "y"})
    assert second["seq"] == 1 and second["prev"] == first["hash"]
    assert verify_log(log.path).ok


# -- the lock --------------------------------------------------------------------------------------
def test_append_and_repair_lock_the_log_itself(log, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lock = tmp_path / "audit.jsonl.lock"
    lock.unlink()
    log.append("attack", {"i": 3})
    assert lock.is_file()
    lock.unlink()
    log.path.write_bytes(log.path.read_bytes() + b'{"seq": 4, "ti')  # torn
    assert repair_log(log.path) == len(b'{"seq": 4, "ti')
    assert lock.is_file()
    assert not (tmp_path / "None.lock").exists()


# -- verify's report -------------------------------------------------------------------------------
def test_an_intact_report_names_the_last_hash_and_a_failed_one_is_false(log):
    recs = _records(log)
    report = verify_log(log.path)
    assert report.ok is True and report.records == 3 and report.head == recs[-1]["hash"] and report.keyed
    assert log.verify(use_key=False) == ChainReport(True, 3, keyed=False, head=recs[-1]["hash"])
    lines = log.path.read_bytes().splitlines()
    log.path.write_bytes(b"\n".join([lines[0], lines[2]]) + b"\n")
    bad = verify_log(log.path)
    assert bad.ok is False and bad.line == 2 and bad.records == 1 and bad.head == recs[0]["hash"]
    cut = verify_log(log.path, expect_head="f" * 64)
    assert cut.ok is False


def test_a_missing_head_is_false_with_the_reason(log):
    report = verify_log(log.path, expect_head="ab" * 32)
    assert report.ok is False and report.line is None and report.records == 3
    assert report.reason == ("the chain head abababababababab… is not in the log: records were cut off its end "
                             "or the log was replaced")


def test_an_empty_log_is_intact_with_no_head(tmp_path):
    empty = tmp_path / "audit.jsonl"
    empty.write_bytes(b"")
    report = verify_log(empty, use_key=False)
    assert report == ChainReport(True, 0, keyed=False, head=None)


def test_the_smallest_record_is_seq_prev_and_hash(tmp_path):
    rec = {"seq": 0, "prev": GENESIS}
    rec["hash"] = audit.record_hash(rec)
    path = tmp_path / "audit.jsonl"
    path.write_bytes(json.dumps(rec).encode() + b"\n")
    assert verify_log(path, use_key=False).ok


def test_reasons_and_lines_word_for_word(log):
    lines = log.path.read_bytes().splitlines()
    edited = lines[1].replace(b'"i":1', b'"i":7')
    log.path.write_bytes(b"\n".join([lines[0], edited, lines[2]]) + b"\n")
    r = verify_log(log.path)
    assert (r.line, r.reason) == (2, "hash mismatch: the record was edited")
    log.path.write_bytes(b"\n".join([lines[0], b"", lines[1]]) + b"\n")
    r = verify_log(log.path)
    assert (r.line, r.reason) == (2, "blank line inside the log (a record was removed or the file was edited)")
    # a record whose seq was rewritten with its hash recomputed (no key: the chain only)
    rec = json.loads(lines[1])
    rec["seq"] = 5
    rec["hash"] = audit.record_hash(rec)
    log.path.write_bytes(b"\n".join([lines[0], json.dumps(rec).encode()]) + b"\n")
    r = verify_log(log.path, use_key=False)
    assert (r.ok, r.line, r.records) == (False, 2, 1)
    assert r.reason == "sequence number 5 where 1 was expected (records deleted or reordered)"


def test_verify_cannot_read_the_log_is_one_line(log, monkeypatch):
    def unreadable(self):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(audit.Path, "read_bytes", unreadable)
    with pytest.raises(InputError) as info:
        verify_log(log.path, use_key=False)
    assert str(info.value) == f"cannot read the audit log {log.path}: Input/output error"


def test_messages_with_and_without_the_path(tmp_path):
    ok = ChainReport(True, 2, keyed=False, notes=("1 trailing blank line ignored", "last record has no end of line"))
    assert ok.message("log.jsonl") == ("log.jsonl: 2 records, chain intact (signatures not checked: no key); "
                                       "1 trailing blank line ignored; last record has no end of line")
    assert ok.message() == ("2 records, chain intact (signatures not checked: no key); 1 trailing blank line "
                            "ignored; last record has no end of line")
    bad = ChainReport(False, 1, 2, "hash mismatch: the record was edited")
    assert bad.message("log.jsonl") == "log.jsonl: line 2: hash mismatch: the record was edited"


# -- repair ----------------------------------------------------------------------------------------
def test_repair_of_an_intact_log_removes_nothing(log):
    before = log.path.read_bytes()
    assert repair_log(log.path) == 0 and log.path.read_bytes() == before


def test_repair_checks_the_chain_only_so_a_changed_key_does_not_block_it(log, tmp_path, monkeypatch):
    whole = log.path.read_bytes()
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_KEY", str(tmp_path / "other.key"))
    load_key(create=True)  # another installation key: the records' MACs no longer match
    log.path.write_bytes(whole + b'{"seq": 3, "t')
    assert repair_log(log.path) == len(b'{"seq": 3, "t') and log.path.read_bytes() == whole


def test_repair_of_a_torn_fragment_of_x_keeps_the_record_before_it(log):
    whole = log.path.read_bytes()
    log.path.write_bytes(whole + b"XX")
    assert verify_log(log.path).torn
    assert repair_log(log.path) == 2 and log.path.read_bytes() == whole


def test_a_repair_that_cannot_write_is_one_line_and_changes_nothing(log, monkeypatch):
    torn = log.path.read_bytes() + b'{"seq": 3'
    log.path.write_bytes(torn)

    def refused(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(audit, "open", refused, raising=False)
    with pytest.raises(OutputError) as info:
        repair_log(log.path)
    assert str(info.value) == f"cannot repair the audit log {log.path}: Permission denied"
    monkeypatch.undo()
    assert log.path.read_bytes() == torn


# -- the chain head --------------------------------------------------------------------------------
def test_chain_head_of_the_default_log(log, monkeypatch):
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(log.path))
    last = _records(log)[-1]
    assert chain_head() == {"log": str(log.path), "seq": 2, "hash": last["hash"]}
    assert log.head() == chain_head(log.path)


# -- a failed append after trailing blank lines ------------------------------------------------------
@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_disk_full_after_trailing_blank_lines_leaves_the_records_and_no_half_record(log):
    whole = log.path.read_bytes()
    log.path.write_bytes(whole + b"\n" * 40)
    proc = subprocess.run([sys.executable, "-c", _FILL, str(log.path)], capture_output=True, text=True,
                          env={**os.environ}, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert log.path.read_bytes() == whole  # the blank lines held nothing; no byte of the new record stays
    assert verify_log(log.path).ok


def test_repair_counts_from_the_start_of_the_file_whatever_the_first_byte(log):
    """JSON allows leading whitespace: a first record written after a carriage return is still
    a valid record, and repair must cut exactly the torn tail, not a byte before it."""
    whole = b"\r" + log.path.read_bytes()
    log.path.write_bytes(whole + b'{"seq": 3, "t')
    assert verify_log(log.path, use_key=False).torn
    assert repair_log(log.path) == len(b'{"seq": 3, "t') and log.path.read_bytes() == whole
