"""Append-only, hash-chained audit log (JSON Lines) of every run and export.

Each line is one record::

    {"seq": 0, "time": "2026-11-24T10:00:00+00:00", "event": "attack", "data": {...},
     "prev": "<hash of the previous record, 64 zeros for the first>", "hash": "<own hash>"}

``hash`` is the SHA-256 of the record's canonical JSON (sorted keys, no spaces, UTF-8)
without the ``hash`` field; ``prev`` is the previous record's ``hash``. Editing a record
breaks its own hash; deleting or reordering records breaks the ``prev`` link (or the
``seq`` count) of the record that follows. Truncating the *last* records cannot be detected
from the file alone: keep a copy of the last hash elsewhere when that matters.

Appends hold an exclusive ``fcntl`` lock (POSIX; ``msvcrt`` on Windows) while reading the
last record and writing the new one, so concurrent runs cannot fork the chain. The default
log is ``user_data_dir()/audit.jsonl``; ``$P2P_DESKTOP_AUDIT_LOG`` or an explicit path
overrides it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from p2p_desktop.errors import OutputError

__all__ = ["GENESIS", "AuditLog", "ChainReport", "default_log_path", "canonical_json", "record_hash",
           "append_event", "verify_log", "outputs_summary", "audit_export"]

GENESIS = "0" * 64
ENV_VAR = "P2P_DESKTOP_AUDIT_LOG"


def default_log_path() -> Path:
    """``$P2P_DESKTOP_AUDIT_LOG`` if set, else ``user_data_dir()/audit.jsonl``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from p2p_desktop.paths import user_data_dir

    return user_data_dir() / "audit.jsonl"


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, default=str).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON without its ``hash`` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def _lock(fh) -> None:
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)


def _unlock(fh) -> None:
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)


def _last_line(fh) -> bytes:
    """The last non-empty line of an open binary file (reads backwards in blocks)."""
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
        stripped = data.rstrip(b"\r\n")
        if b"\n" in stripped:
            return stripped.rsplit(b"\n", 1)[1]
    return data.rstrip(b"\r\n")


class AuditLog:
    """One audit log file. ``append`` is safe across threads and processes."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path).expanduser() if path else default_log_path()

    def append(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Append one record and return it (with ``seq``, ``prev`` and ``hash``)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as fh:
                _lock(fh)
                try:
                    prev, seq = GENESIS, 0
                    last = _last_line(fh)
                    if last.strip():
                        try:
                            rec = json.loads(last)
                            prev, seq = str(rec["hash"]), int(rec["seq"]) + 1
                        except (ValueError, KeyError, TypeError):
                            # A damaged last line: chain onto its bytes; `verify` reports it.
                            prev = hashlib.sha256(last).hexdigest()
                            seq = sum(1 for line in _iter_lines(self.path) if line.strip())
                    record = {"seq": seq, "time": _now(), "event": str(event), "data": data, "prev": prev}
                    record["hash"] = record_hash(record)
                    line = canonical_json(record) + b"\n"
                    fh.seek(0, os.SEEK_END)
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
                finally:
                    _unlock(fh)
        except OSError as exc:
            raise OutputError(f"cannot append to the audit log {self.path}: {exc.strerror or exc}") from None
        return record

    def check(self) -> None:
        """Refuse early (before any work) when the log cannot be appended to."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab"):
                pass
        except OSError as exc:
            raise OutputError(f"cannot write the audit log {self.path}: {exc.strerror or exc}") from None

    def verify(self) -> "ChainReport":
        return verify_log(self.path)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _iter_lines(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as fh:
        yield from fh


@dataclass(frozen=True)
class ChainReport:
    """Outcome of :func:`verify_log`: ``ok``, the record count, and the first bad line (1-based)."""

    ok: bool
    records: int
    line: int | None = None
    reason: str = ""

    def message(self, path: str | os.PathLike = "") -> str:
        where = f"{path}: " if path else ""
        if self.ok:
            return f"{where}{self.records} records, chain intact"
        return f"{where}line {self.line}: {self.reason}"


def verify_log(path: str | os.PathLike) -> ChainReport:
    """Check every record's hash and link; report the first line that does not fit.

    Raises :class:`~p2p_desktop.errors.InputError` when the file cannot be read at all.
    """
    from p2p_desktop.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"audit log not found: {path}")
    prev, expected_seq, count = GENESIS, 0, 0
    try:
        lines = list(_iter_lines(path))
    except OSError as exc:
        raise InputError(f"cannot read the audit log {path}: {exc.strerror or exc}") from None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            if number == len(lines):
                break
            return ChainReport(False, count, number, "empty line inside the log (a record was removed)")
        try:
            rec = json.loads(raw)
        except ValueError:
            return ChainReport(False, count, number, "not valid JSON (the record was edited or damaged)")
        if not isinstance(rec, dict) or not {"seq", "prev", "hash"} <= set(rec):
            return ChainReport(False, count, number, "not an audit record (seq, prev or hash missing)")
        if record_hash(rec) != rec["hash"]:
            return ChainReport(False, count, number, "hash mismatch: the record was edited")
        if rec["prev"] != prev:
            return ChainReport(False, count, number, "broken link: the record before it was deleted, "
                                                     "edited or moved (records reordered)")
        if rec["seq"] != expected_seq:
            return ChainReport(False, count, number, f"sequence number {rec['seq']} where {expected_seq} "
                                                     "was expected (records deleted or reordered)")
        prev, expected_seq, count = rec["hash"], expected_seq + 1, count + 1
    return ChainReport(True, count)


def outputs_summary(records: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The ``{kind, path, sha256}`` triples of an :class:`~p2p_desktop.io.outputs.OutputSet`."""
    return [{"kind": r["kind"], "path": r["path"], "sha256": r["sha256"]} for r in records]


def append_event(event: str, data: dict[str, Any], log: str | os.PathLike | None = None) -> dict[str, Any]:
    """Append one record to ``log`` (default :func:`default_log_path`)."""
    return AuditLog(log).append(event, data)


def audit_export(what: str, result: Any, study: Any, outputs: Iterable[dict[str, str]], *,
                 deidentified: bool = False, log: str | os.PathLike | None = None) -> dict[str, Any]:
    """Append an ``export`` record for files written from an existing run (the GUI's export
    actions): what was exported, from which input and run, and every file with its SHA-256.

    Call it inside the ``OutputSet`` block, after the last write, so a failed append rolls
    the export back::

        with OutputSet(folder, [study.path]) as outs:
            export_dicom(result, study, outs, deidentify=True)
            audit_export("dicom", result, study, outs.records, deidentified=True)
    """
    from p2p_desktop.hashing import sha256_file

    path = Path(study.path)
    clf = getattr(result, "classifier", None) or {}
    data = {
        "what": what,
        "input": str(path),
        "input_sha256": sha256_file(path) if path.is_file() else None,
        "frame": int(getattr(study, "frame_index", 0)),
        "attack": getattr(result, "attack", None),
        "config": getattr(result, "config", None),
        "classifier": {"name": clf.get("name"), "sha256": clf.get("sha256")},
        "seed": getattr(result, "seed", None),
        "device": getattr(result, "device", None),
        "deidentified": bool(deidentified),
        "outputs": outputs_summary(outputs),
    }
    return AuditLog(log).append("export", data)
