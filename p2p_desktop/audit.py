"""Append-only, hash-chained and keyed audit log (JSON Lines) of every run and export.

Each line is one record::

    {"seq": 0, "time": "2026-11-24T10:00:00+00:00", "event": "attack", "data": {...},
     "prev": "<hash of the previous record, 64 zeros for the first>", "key": "<key id>",
     "hash": "<own hash>", "mac": "<HMAC-SHA256 of the record under the installation key>"}

``hash`` is the SHA-256 of the record's canonical JSON (sorted keys, no spaces, UTF-8)
without the ``hash`` and ``mac`` fields; ``prev`` is the previous record's ``hash``. ``mac``
is the HMAC-SHA256, under a per-installation secret, of the same canonical bytes; ``key`` is
the first 16 hex digits of the SHA-256 of that secret (it names the key, it does not reveal it).

What ``verify`` proves (see :data:`VERIFY_PROOF`): without the key, that the file is one
unbroken chain (no record edited, deleted, inserted or moved *unless whoever did it
recomputed every later hash*); with the key, also that every record was written by a holder
of the key, so a forger without the key cannot append, rewrite or fabricate records. Neither
proves that the *last* records were not cut off: the chain head printed in every report (and
``--head``) is what detects that.

The secret is ``audit.key`` (32 random bytes, mode 0600) in the user data folder, outside the
log; ``$P2P_DESKTOP_AUDIT_KEY`` names another file. It is created on the first append.

Appends hold an exclusive lock (``filelock`` on ``<log>.lock``: ``fcntl`` on POSIX, ``msvcrt``
on Windows) while reading the last record and writing the new one, so concurrent runs cannot
fork the chain. An append is all or nothing: the record is written and fsync'ed, and on any
failure (disk full) the file is truncated back to its previous size. A torn last line (a crash
in the middle of a write) is reported exactly by ``verify``; ``repair`` removes it and nothing
else, and appends refuse until then. The default log is ``user_data_dir()/audit.jsonl``; ``$P2P_DESKTOP_AUDIT_LOG`` or
an explicit path overrides it.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2p_desktop.errors import OutputError
from p2p_desktop.jsonsafe import finite_json

__all__ = ["GENESIS", "AuditLog", "ChainReport", "default_log_path", "default_key_path", "canonical_json",
           "record_hash", "record_mac", "key_id", "load_key", "append_event", "verify_log", "repair_log",
           "chain_head", "outputs_summary", "keyed_digest", "source_digest", "VERIFY_PROOF"]

GENESIS = "0" * 64
ENV_VAR = "P2P_DESKTOP_AUDIT_LOG"
KEY_ENV_VAR = "P2P_DESKTOP_AUDIT_KEY"
_UNHASHED = ("hash", "mac")

VERIFY_PROOF = """\
What `audit verify` proves:
  * every record's hash matches its content and links to the record before it, from the
    first record (seq 0) on: no record was edited, deleted, inserted or moved, unless whoever
    did it also recomputed every later hash (anyone can, without the key);
  * with the installation key (the default when it exists): every record carries a valid
    HMAC-SHA256 under that key, so records appended, rewritten or fabricated by someone who
    does not hold the key are found;
  * a torn last line (an interrupted write) is named exactly; `audit repair` removes it only.
What it does not prove:
  * that records were not cut off the END of the log (the shorter log is still a valid
    chain): compare with the chain head printed in a later report, or pass --head HASH;
  * anything against someone who holds the key file (or can run this program as its user):
    the key proves "written by this installation", not "true";
  * that the outputs a record names still exist or are unchanged: compare their SHA-256.
"""


def default_log_path() -> Path:
    """``$P2P_DESKTOP_AUDIT_LOG`` if set, else ``user_data_dir()/audit.jsonl``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from p2p_desktop.paths import user_data_dir

    return user_data_dir() / "audit.jsonl"


def default_key_path() -> Path:
    """``$P2P_DESKTOP_AUDIT_KEY`` if set, else ``user_data_dir()/audit.key``."""
    env = os.environ.get(KEY_ENV_VAR)
    if env:
        return Path(env).expanduser()
    from p2p_desktop.paths import user_data_dir

    return user_data_dir() / "audit.key"


def load_key(path: str | os.PathLike | None = None, *, create: bool = False) -> bytes | None:
    """The installation's audit key (created with mode 0600 when ``create`` and missing)."""
    path = Path(path).expanduser() if path else default_key_path()
    if path.exists() and not path.is_file():
        raise OutputError(f"the audit key {path} is not a regular file; refused")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created by a concurrent run
            return load_key(path)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        return path.read_bytes()
    except OSError as exc:
        raise OutputError(f"cannot read the audit key {path}: {exc.strerror or exc}") from None
    if len(data) < 16:
        raise OutputError(f"the audit key {path} is damaged (under 16 bytes)")
    return data


def key_id(key: bytes) -> str:
    """The identifier of an audit key recorded in the log: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:16]


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, default=str).encode("utf-8")


def _body(record: dict[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in record.items() if k not in _UNHASHED})


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON without its ``hash`` and ``mac`` fields."""
    return hashlib.sha256(_body(record)).hexdigest()


def record_mac(record: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA256 under ``key`` of the same canonical bytes as :func:`record_hash`."""
    return hmac.new(key, _body(record), hashlib.sha256).hexdigest()


def _exclusive(path: Path):
    """The exclusive lock of the log at ``path``, held while its last record is read and the next one
    written: ``filelock`` on ``<log>.lock`` beside it (``fcntl`` on POSIX, ``msvcrt`` on Windows),
    across threads and processes."""
    from filelock import FileLock

    return FileLock(f"{path}.lock")


def _tail(fh) -> tuple[bytes, int, bool]:
    """``(last non-blank line, offset just after its newline, terminated)`` of an open binary file.

    ``offset`` is where the next record goes (trailing blank lines after it are dropped);
    ``terminated`` is False when the file ends inside a line (a torn write)."""
    fh.seek(0, os.SEEK_END)
    end = fh.tell()
    block = 8192
    data = b""
    pos = end
    while pos > 0:
        step = min(block, pos)
        pos -= step
        fh.seek(pos)
        data = fh.read(step) + data
        stripped = data.rstrip()
        if b"\n" in stripped or pos == 0:
            break
    if not data.strip():
        return b"", 0, True
    # blank lines are whitespace-only lines (bytes.strip()'s whitespace, as verify reads them): the
    # last record ends at the first newline after its last non-blank byte; the next record goes
    # just after it
    stripped = data.rstrip()
    newline = data.find(b"\n", len(stripped))
    terminated = newline >= 0
    last = stripped.rsplit(b"\n", 1)[-1]
    offset = pos + (newline + 1 if terminated else len(stripped))
    return last, offset, terminated


def _write_at(fd: int, offset: int, data: bytes, *, restore: int) -> None:
    """Write ``data`` at ``offset`` and end the file there, fsynced; all or nothing.

    Whatever goes wrong (disk full after part of a page, an interrupt), the file is cut back to
    ``restore`` bytes (its size before, less trailing blank lines that hold nothing) and fsynced:
    no byte of a torn record stays to block the next append."""
    try:
        os.ftruncate(fd, offset)  # drops trailing blank lines (they hold nothing)
        view = memoryview(data)
        pos = 0
        while pos < len(view):  # a short write (disk full) writes part; the next one raises
            n = os.pwrite(fd, view[pos:], offset + pos)
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            pos += n
        os.fsync(fd)
    except BaseException:
        try:
            os.ftruncate(fd, restore)
            os.fsync(fd)
        except OSError:  # pragma: no cover - truncating never needs space
            pass
        raise


class AuditLog:
    """One audit log file. ``append`` is safe across threads and processes."""

    def __init__(self, path: str | os.PathLike | None = None, key_path: str | os.PathLike | None = None) -> None:
        self.path = Path(path).expanduser() if path else default_log_path()
        self.key_path = Path(key_path).expanduser() if key_path else default_key_path()

    def append(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Append one record and return it (with ``seq``, ``prev``, ``hash`` and ``mac``).

        All or nothing: on any failure the file is cut back to its previous size."""
        self._regular()
        key = load_key(self.key_path, create=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # unbuffered: every byte written is a system call whose failure is seen here, never a
            # buffer flushed again by truncate() or close() after the file was cut back
            with open(self.path, "r+b" if self.path.exists() else "a+b", buffering=0) as fh:
                with _exclusive(self.path):
                    original = os.fstat(fh.fileno()).st_size
                    last, offset, terminated = _tail(fh)
                    prev, seq = GENESIS, 0
                    if last:
                        try:
                            rec = json.loads(last)
                            prev, seq = str(rec["hash"]), int(rec["seq"]) + 1
                        except (ValueError, KeyError, TypeError, RecursionError):
                            if not terminated:  # a torn write: never glue a record onto it
                                raise OutputError(
                                    f"the audit log {self.path} ends with a torn record (an interrupted write); "
                                    "nothing was appended: run `p2p-desktop audit verify`, then "
                                    "`p2p-desktop audit repair` to remove the torn tail") from None
                            # A damaged (edited) last line: chain onto its bytes; `verify` reports it.
                            prev = hashlib.sha256(last).hexdigest()
                            seq = sum(1 for line in _iter_lines(self.path) if line.strip())
                    record = {"seq": seq, "time": _now(), "event": str(event), "data": finite_json(data),
                              "prev": prev,
                              "key": key_id(key)}
                    record["hash"] = record_hash(record)
                    record["mac"] = record_mac(record, key)
                    line = canonical_json(record) + b"\n"
                    if not terminated:  # a complete record whose end of line was lost
                        line = b"\n" + line
                    _write_at(fh.fileno(), offset, line, restore=min(original, offset))

        except OSError as exc:
            raise OutputError(f"cannot append to the audit log {self.path}: {exc.strerror or exc}") from None
        return record

    def check(self) -> None:
        """Refuse early (before any work) when the log cannot be appended to."""
        self._regular()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab"):
                pass
            with open(self.path, "rb") as fh:
                last, _offset, terminated = _tail(fh)
        except OSError as exc:
            raise OutputError(f"cannot write the audit log {self.path}: {exc.strerror or exc}") from None
        if last and not terminated:
            raise OutputError(f"the audit log {self.path} ends with a torn record (an interrupted write); run "
                              "`p2p-desktop audit verify` and `p2p-desktop audit repair`")
        load_key(self.key_path, create=True)

    def _regular(self) -> None:
        """A FIFO, device or folder at the log's path would block or swallow records: refused."""
        if self.path.exists() and not self.path.is_file():
            raise OutputError(f"the audit log {self.path} is not a regular file; refused")

    def head(self) -> dict[str, Any] | None:
        return chain_head(self.path)

    def verify(self, **kwargs) -> ChainReport:
        return verify_log(self.path, **kwargs)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _iter_lines(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as fh:
        yield from fh


def chain_head(path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """``{"log", "seq", "hash"}`` of the last record of a log (None when empty or missing).

    Reports carry it: a log later found shorter than a report's head was cut off."""
    path = Path(path).expanduser() if path else default_log_path()
    try:
        with open(path, "rb") as fh:
            last, _offset, terminated = _tail(fh)
        rec = json.loads(last) if last and terminated else None
        return {"log": str(path), "seq": int(rec["seq"]), "hash": str(rec["hash"])} if rec else None
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


@dataclass(frozen=True)
class ChainReport:
    """Outcome of :func:`verify_log`: ``ok``, the record count, and the first bad line (1-based)."""

    ok: bool
    records: int
    line: int | None = None
    reason: str = ""
    keyed: bool = False  # every record's MAC was checked against the key
    head: str | None = None  # hash of the last good record
    notes: tuple[str, ...] = field(default=())
    torn: bool = False  # the only fault is a torn last line: `repair` removes it

    def message(self, path: str | os.PathLike = "") -> str:
        where = f"{path}: " if path else ""
        if self.ok:
            what = "chain intact, every record signed with this installation's key" if self.keyed else \
                "chain intact (signatures not checked: no key)"
            extra = "".join(f"; {n}" for n in self.notes)
            return f"{where}{self.records} records, {what}{extra}"
        return f"{where}line {self.line}: {self.reason}" if self.line else f"{where}{self.reason}"


def verify_log(path: str | os.PathLike, *, key: bytes | None = None, use_key: bool = True,
               key_path: str | os.PathLike | None = None, expect_head: str | None = None) -> ChainReport:
    """Check every record's hash, link and (with the key) MAC; report the first line that does not fit.

    ``key``: the secret (default: the installation key when it exists and ``use_key``);
    ``expect_head``: a hash from a report, which must be a record of this log.
    Raises :class:`~p2p_desktop.errors.InputError` when the file cannot be read at all.
    """
    from p2p_desktop.errors import InputError

    path = Path(path)
    if path.exists() and not path.is_file():
        raise InputError(f"audit log {path} is not a regular file")
    if not path.is_file():
        raise InputError(f"audit log not found: {path}")
    if key is None and use_key:
        try:
            key = load_key(key_path)
        except OutputError as exc:
            raise InputError(str(exc)) from None
    kid = key_id(key) if key else None
    prev, expected_seq, count = GENESIS, 0, 0
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the audit log {path}: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    terminated = lines[-1] == b""
    if terminated:
        lines.pop()
    last_content = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
    hashes: set[str] = set()
    notes: list[str] = []
    trailing = len(lines) - 1 - last_content
    if trailing > 0:
        notes.append(f"{trailing} trailing blank line{'s' if trailing > 1 else ''} ignored")

    def fail(number: int, reason: str, torn: bool = False) -> ChainReport:
        return ChainReport(False, count, number, reason, keyed=bool(key), head=prev if count else None, torn=torn)

    for number, raw in enumerate(lines[: last_content + 1], start=1):
        is_last = number == last_content + 1
        if not raw.strip():
            return fail(number, "blank line inside the log (a record was removed or the file was edited)")
        try:
            rec = json.loads(raw)
        except (ValueError, RecursionError):
            if is_last and not terminated:
                return fail(number, f"torn last record ({len(raw)} bytes without an end of line: an interrupted "
                                    f"write); the {count} records before it are intact; `p2p-desktop audit "
                                    "repair` removes it", torn=True)
            return fail(number, "not valid JSON (the record was edited or damaged)")
        if not isinstance(rec, dict) or not {"seq", "prev", "hash"} <= set(rec):
            return fail(number, "not an audit record (seq, prev or hash missing)")
        if record_hash(rec) != rec["hash"]:
            return fail(number, "hash mismatch: the record was edited")
        if rec["prev"] != prev:
            return fail(number, "broken link: the record before it was deleted, edited or moved "
                                "(records reordered)")
        if rec["seq"] != expected_seq:
            return fail(number, f"sequence number {rec['seq']} where {expected_seq} was expected "
                                "(records deleted or reordered)")
        if key:
            mac = rec.get("mac")
            if not isinstance(mac, str):
                return fail(number, "record not signed (no mac): not written by this installation, or written "
                                    "before audit keys existed (verify with --no-key to check the chain only)")
            if rec.get("key") != kid:
                return fail(number, f"record signed with another key ({rec.get('key')}); this installation's "
                                    f"key is {kid}")
            if not hmac.compare_digest(mac, record_mac(rec, key)):
                return fail(number, "signature (mac) mismatch: the record was forged or rewritten without the key")
        prev, expected_seq, count = rec["hash"], expected_seq + 1, count + 1
        hashes.add(prev)
    if not terminated and last_content == len(lines) - 1 and count:
        notes.append("last record has no end of line (an interrupted write after the record)")
    if expect_head and expect_head not in hashes:
        return ChainReport(False, count, None, f"the chain head {expect_head[:16]}… is not in the log: records "
                                               "were cut off its end or the log was replaced", keyed=bool(key),
                           head=prev if count else None)
    return ChainReport(True, count, keyed=bool(key), head=prev if count else None, notes=tuple(notes))


def repair_log(path: str | os.PathLike) -> int:
    """Remove a torn last line (an interrupted write) and nothing else; returns the bytes removed.

    Refuses (InputError) when the log has any other fault: repair never hides tampering."""
    from p2p_desktop.errors import InputError

    path = Path(path)
    report = verify_log(path, use_key=False)
    if report.ok:
        return 0
    if not report.torn:
        raise InputError(f"audit log {path} is not torn but damaged at line {report.line}: {report.reason}; "
                         "repair only removes a torn last record")
    data = path.read_bytes()
    cut = data.rstrip(b"\r\n").rfind(b"\n") + 1
    try:
        with open(path, "r+b") as fh:
            with _exclusive(path):
                fh.truncate(cut)
                fh.flush()
                os.fsync(fh.fileno())
    except OSError as exc:
        raise OutputError(f"cannot repair the audit log {path}: {exc.strerror or exc}") from None
    return len(data) - cut


def outputs_summary(records: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The ``{kind, path, sha256}`` triples of an :class:`~p2p_desktop.io.outputs.OutputSet`."""
    return [{"kind": r["kind"], "path": r["path"], "sha256": r["sha256"]} for r in records]


def keyed_digest(text: str, *, purpose: str, key_path: str | os.PathLike | None = None) -> str:
    """HMAC-SHA256 (hex) under the installation's audit key of ``purpose`` NUL ``text``.

    Used where a plain hash would link a de-identified output to its source: only a holder of
    the key (and of the source) can recompute it. The key is created when missing."""
    key = load_key(key_path, create=True)
    return hmac.new(key, f"p2p-desktop {purpose}\0{text}".encode(), hashlib.sha256).hexdigest()


def source_digest(source_sha256: str, key_path: str | os.PathLike | None = None) -> str:
    """The keyed digest of a source file's SHA-256 (hex) that de-identified exports are audited
    with instead of the SHA-256 itself (:func:`keyed_digest`, purpose ``source-sha256``)."""
    return keyed_digest(str(source_sha256), purpose="source-sha256", key_path=key_path)


def append_event(event: str, data: dict[str, Any], log: str | os.PathLike | None = None) -> dict[str, Any]:
    """Append one record to ``log`` (default :func:`default_log_path`)."""
    return AuditLog(log).append(event, data)
