"""Audit log details that the integrity tests do not see (issue 19, mutation survivors).

Large records (longer than the tail reader's block), the chain link after a damaged last line
(recomputed independently), which key file verify and check use, the report fields of a
failed verification, NaN refusal in the canonical form, the export record's fields, and the
words users are told to act on.
"""

from __future__ import annotations

import hashlib
import json
import math
from types import SimpleNamespace

import pytest

from p2p_desktop.audit import GENESIS, AuditLog, canonical_json, repair_log, verify_log
from p2p_desktop.errors import InputError
from p2p_desktop.jobs.audit import audit_export


@pytest.fixture
def keyed(tmp_path, monkeypatch):
    """A log whose key is NOT the default key file (which is made to point elsewhere)."""
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_KEY", str(tmp_path / "default" / "audit.key"))
    return AuditLog(tmp_path / "audit.jsonl", key_path=tmp_path / "own.key")


def test_records_longer_than_the_tail_block_chain_correctly(keyed):
    first = keyed.append("attack", {"note": "x" * 20000})  # one line of more than two 8 KiB blocks
    second = keyed.append("attack", {"note": "y"})
    assert second["seq"] == 1 and second["prev"] == first["hash"]
    assert keyed.head()["hash"] == second["hash"]
    report = verify_log(keyed.path, key_path=keyed.key_path)
    assert report.ok and report.records == 2 and report.keyed, report.message()


def test_append_after_a_damaged_last_line_links_to_its_bytes(keyed):
    keyed.append("attack", {"i": 0})
    keyed.append("attack", {"i": 1})
    lines = keyed.path.read_bytes().split(b"\n")[:-1]
    damaged = lines[1][:-5] + b"}XXXX"  # an edited, no longer valid, last record
    keyed.path.write_bytes(lines[0] + b"\n" + damaged + b"\n")
    rec = keyed.append("attack", {"i": 2})
    assert rec["prev"] == hashlib.sha256(damaged).hexdigest() and rec["seq"] == 2
    report = verify_log(keyed.path, key_path=keyed.key_path)
    assert not report.ok and report.line == 2 and report.keyed and report.head == json.loads(lines[0])["hash"]


def test_verify_and_check_use_the_named_key_file(keyed, tmp_path):
    keyed.check()  # creates the log's own key, not the default one
    assert keyed.key_path.is_file() and (keyed.key_path.stat().st_mode & 0o777) == 0o600
    assert not (tmp_path / "default" / "audit.key").exists()
    keyed.append("attack", {"i": 0})
    report = verify_log(keyed.path, key_path=keyed.key_path)
    assert report.ok and report.keyed
    assert "every record signed with this installation's key" in report.message()


def test_a_failed_verification_reports_keyed_and_no_head_before_the_first_record(keyed):
    keyed.append("attack", {"i": 0})
    keyed.path.write_bytes(keyed.path.read_bytes().replace(b'"i":0', b'"i":1'))
    report = verify_log(keyed.path, key_path=keyed.key_path)
    assert not report.ok and report.line == 1 and report.records == 0
    assert report.keyed is True and report.head is None


def test_an_empty_log_has_no_head_even_when_a_head_is_expected(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    report = verify_log(path, use_key=False, expect_head="ab" * 32)
    assert not report.ok and report.records == 0 and report.head is None
    assert report.head != GENESIS


def test_a_folder_is_not_an_audit_log(tmp_path):
    with pytest.raises(InputError, match="is not a regular file"):
        verify_log(tmp_path)


def test_canonical_json_refuses_nan():
    with pytest.raises(ValueError):
        canonical_json({"x": math.nan})
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_the_words_users_act_on(keyed):
    keyed.append("attack", {"i": 0})
    rec = json.loads(keyed.path.read_bytes())
    del rec["mac"]
    keyed.path.write_bytes(canonical_json(rec) + b"\n")
    report = verify_log(keyed.path, key_path=keyed.key_path)
    assert report.reason.startswith("record not signed (no mac): not written by this installation")
    keyed.path.write_bytes(keyed.path.read_bytes() + b'{"seq": 1, "tor')
    torn = verify_log(keyed.path, use_key=False)
    assert torn.torn and "`p2p-desktop audit repair` removes it" in torn.reason
    keyed.path.write_bytes(keyed.path.read_bytes().replace(b'"i":0', b'"i":9'))
    with pytest.raises(InputError, match="repair only removes a torn last record$"):
        repair_log(keyed.path)


def test_export_record_fields(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_KEY", str(tmp_path / "audit.key"))
    src = tmp_path / "in.dcm"
    src.write_bytes(b"source bytes")
    study = SimpleNamespace(path=src, frame_index=3)
    result = SimpleNamespace(attack="fgsm", config={"eps": 0.03}, classifier={"name": "c", "sha256": "ab"},
                             seed=7, device="cpu")
    outs = [{"kind": "dicom", "path": "o.dcm", "sha256": "cd", "extra": "dropped"}]
    rec = audit_export("dicom", result, study, outs, log=tmp_path / "audit.jsonl")
    data = rec["data"]
    assert rec["event"] == "export"
    assert data["frame"] == 3 and data["input"] == str(src)
    assert data["input_sha256"] == hashlib.sha256(b"source bytes").hexdigest()
    assert data["outputs"] == [{"kind": "dicom", "path": "o.dcm", "sha256": "cd"}]
    assert (data["attack"], data["seed"], data["device"], data["deidentified"]) == ("fgsm", 7, "cpu", False)
    assert data["config"] == {"eps": 0.03} and data["classifier"] == {"name": "c", "sha256": "ab"}
    # a result without the optional fields and a source that is gone
    bare = audit_export("png", SimpleNamespace(), SimpleNamespace(path=tmp_path / "gone.dcm"), [],
                        log=tmp_path / "audit.jsonl")["data"]
    assert (bare["seed"], bare["config"], bare["input_sha256"], bare["frame"]) == (None, None, None, 0)


def test_key_files_and_digests(tmp_path, monkeypatch):
    import hmac

    from p2p_desktop.audit import append_event, default_key_path, load_key, source_digest
    from p2p_desktop.errors import OutputError
    from p2p_desktop.paths import user_data_dir

    monkeypatch.delenv("P2P_DESKTOP_AUDIT_KEY")
    assert default_key_path() == user_data_dir() / "audit.key"
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_KEY", str(tmp_path / "elsewhere.key"))
    key = tmp_path / "k16"
    key.write_bytes(b"k" * 16)
    assert load_key(key) == b"k" * 16  # 16 bytes: the shortest key accepted
    key.write_bytes(b"k" * 15)
    with pytest.raises(OutputError, match="under 16 bytes"):
        load_key(key)
    key.write_bytes(b"s" * 32)
    expected = hmac.new(b"s" * 32, b"p2p-desktop source-sha256\0" + b"ab" * 32, hashlib.sha256).hexdigest()
    assert source_digest("ab" * 32, key_path=key) == expected
    assert not (tmp_path / "elsewhere.key").exists()
    rec = append_event("attack", {"a": 1}, log=tmp_path / "audit.jsonl")
    assert rec["data"] == {"a": 1} and json.loads((tmp_path / "audit.jsonl").read_bytes())["data"] == {"a": 1}


def test_an_unconfirmed_last_record_is_not_the_head_and_check_refuses_a_torn_one(keyed):
    from p2p_desktop.audit import chain_head
    from p2p_desktop.errors import OutputError

    keyed.append("attack", {"i": 0})
    keyed.path.write_bytes(keyed.path.read_bytes().rstrip(b"\n"))  # a complete record, end of line lost
    assert chain_head(keyed.path) is None
    keyed.path.write_bytes(keyed.path.read_bytes() + b'\n{"seq": 1, "tor')
    with pytest.raises(OutputError, match="`p2p-desktop audit verify` and `p2p-desktop audit repair`$"):
        keyed.check()


def test_verify_notes_and_reasons_word_for_word(tmp_path, monkeypatch):
    from pathlib import Path

    from p2p_desktop.audit import key_id
    from p2p_desktop.errors import OutputError

    monkeypatch.setenv("P2P_DESKTOP_AUDIT_KEY", str(tmp_path / "a.key"))
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    r0, r1 = log.append("attack", {"i": 0}), log.append("attack", {"i": 1})
    body = path.read_bytes()
    key_a = (tmp_path / "a.key").read_bytes()

    def check(data: bytes, **kw):
        path.write_bytes(data)
        return verify_log(path, key=key_a, **kw)

    assert check(body + b"\n").notes == ("1 trailing blank line ignored",)
    assert check(body + b"\n\n").notes == ("2 trailing blank lines ignored",)
    assert check(body[:-1]).notes == ("last record has no end of line (an interrupted write after the record)",)
    assert check(body[:-1]).ok and check(body).notes == ()
    (tmp_path / "blank.jsonl").write_bytes(b"\n\n")
    blank = verify_log(tmp_path / "blank.jsonl", use_key=False)
    assert blank.ok and blank.records == 0 and blank.notes == ("2 trailing blank lines ignored",)
    garbage = check(body + b"not json\n")
    assert (garbage.line, garbage.torn, garbage.reason) == (3, False,
                                                            "not valid JSON (the record was edited or damaged)")
    other = check(body + b'{"a": 1}\n')
    assert (other.line, other.reason) == (3, "not an audit record (seq, prev or hash missing)")
    first_gone = check(body.split(b"\n", 1)[1])
    assert (first_gone.line, first_gone.reason) == (
        1, "broken link: the record before it was deleted, edited or moved (records reordered)")
    rec = json.loads(body.split(b"\n")[0])
    forged = check(canonical_json({**rec, "mac": "0" * 64}) + b"\n")
    assert forged.reason == "signature (mac) mismatch: the record was forged or rewritten without the key"
    unsigned = check(canonical_json({k: v for k, v in rec.items() if k != "mac"}) + b"\n")
    assert unsigned.reason.endswith(
        "or written before audit keys existed (verify with --no-key to check the chain only)")
    key_b = b"b" * 32
    path.write_bytes(body)
    assert verify_log(path, key=key_b).reason == (
        f"record signed with another key ({key_id(key_a)}); this installation's key is {key_id(key_b)}")
    head = "f" * 64
    cut = check(body, expect_head=head)
    assert not cut.ok and cut.keyed and cut.head == r1["hash"] and cut.line is None
    assert cut.reason == (f"the chain head {head[:16]}… is not in the log: records were cut off its end or the log "
                          "was replaced")
    assert check(body, expect_head=r0["hash"]).ok
    assert canonical_json({"p": Path("/x")}) == b'{"p":"/x"}'  # anything else: its str()
    with pytest.raises(OutputError, match="is not a regular file; refused"):
        AuditLog(tmp_path).append("attack", {})


def test_append_creates_nested_folders_and_refuses_a_torn_tail_word_for_word(tmp_path, monkeypatch):
    from p2p_desktop.errors import OutputError

    monkeypatch.setenv("P2P_DESKTOP_AUDIT_KEY", str(tmp_path / "audit.key"))
    log = AuditLog(tmp_path / "a" / "b" / "audit.jsonl")
    log.append("attack", {"i": 0})
    log.path.write_bytes(log.path.read_bytes() + b'{"seq": 1, "tor')
    with pytest.raises(OutputError) as info:
        log.append("attack", {"i": 1})
    assert str(info.value) == (
        f"the audit log {log.path} ends with a torn record (an interrupted write); nothing was appended: run "
        "`p2p-desktop audit verify`, then `p2p-desktop audit repair` to remove the torn tail")
