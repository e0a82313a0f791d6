"""The per-image table (``per_image.csv``) and the resume state (``evaluation_state.json``).

``per_image.csv`` is append-only: each row is one ``write`` of a whole line, then ``fsync``, so
a crash leaves at most a cut last line (dropped on resume). ``evaluation_state.json`` records a
fingerprint of the settings; the same settings resume, other settings are refused.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from p2p_desktop.errors import InputError, OutputError
from p2p_desktop.jobs.evaluate.files import PER_IMAGE_FILE, STATE_FILE, replace_file
from p2p_desktop.metrics import image_metrics

__all__ = ["PER_IMAGE_COLUMNS", "STATE_FORMAT", "RowLog", "cell", "csv_line", "read_rows", "repair_tail",
           "fingerprint", "check_state", "write_state"]

log = logging.getLogger(__name__)

#: the per-image metrics, in the metric table's order (ssim, psnr, l2, linf, lpips)
_METRIC_KEYS = tuple(m.key for m in image_metrics())
# issue 12: every row names its procedure
PER_IMAGE_COLUMNS = ("image", "label", "classifier", "attack", "clean_pred", "adv_pred", "success", *_METRIC_KEYS,
                     "seconds", "iterations", "error", "procedure")
_FLOAT_COLUMNS = frozenset(_METRIC_KEYS + ("seconds",))
STATE_FORMAT = 2  # 2: per_image.csv has a procedure column


def csv_line(values: Iterable[Any]) -> str:
    """One CSV line (with its newline)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def cell(v: Any) -> str:
    """A value as a CSV cell: empty for None and non-finite floats, ``true``/``false`` for bools."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)
    return str(v)


def _parse(col: str, text: str) -> Any:
    if text == "":
        return None if col not in ("error", "clean_pred", "adv_pred") else ""
    if col == "success":
        return text == "true"
    if col == "iterations":
        return int(text)
    if col in _FLOAT_COLUMNS:
        return float(text)
    return text


class RowLog:
    """Append-only CSV: each row is one ``os.write`` of a whole line, then ``fsync``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        if new:
            self._write(csv_line(PER_IMAGE_COLUMNS))

    def _write(self, line: str) -> None:
        try:
            os.write(self._fd, line.encode("utf-8"))
            os.fsync(self._fd)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise OutputError(f"disk full while appending to {self.path}") from None
            raise OutputError(f"cannot append to {self.path}: {exc.strerror or exc}") from None

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one row (missing columns empty)."""
        self._write(csv_line(cell(row.get(c)) for c in PER_IMAGE_COLUMNS))

    def close(self) -> None:
        os.close(self._fd)


def repair_tail(path: Path) -> None:
    """Drop a last line cut short by a crash (a row is only valid once its newline is written)."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(max(0, size - 1))
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        keep = data.rfind(b"\n") + 1
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    log.warning("dropped an incomplete last line from %s", path)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``per_image.csv`` with typed values (floats, bools, None for empty)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return []
        if tuple(header) != PER_IMAGE_COLUMNS:
            raise InputError(f"{path} does not have the columns of a p2p-desktop per-image table; "
                             "choose another --out folder")
        rows = []
        for values in reader:
            if len(values) != len(PER_IMAGE_COLUMNS):
                raise InputError(f"{path}: malformed row {len(rows) + 2}; choose another --out folder")
            rows.append({c: _parse(c, v) for c, v in zip(PER_IMAGE_COLUMNS, values)})
    return rows


def fingerprint(config: Mapping[str, Any]) -> str:
    """SHA-256 of the settings (canonical JSON)."""
    from p2p_desktop.hashing import sha256_bytes

    return sha256_bytes(json.dumps(config, sort_keys=True, default=str).encode())


def check_state(out_dir: Path, config: Mapping[str, Any], fp: str) -> bool:
    """True when ``out_dir`` holds a compatible earlier run; raises when it holds another one."""
    state_path = out_dir / STATE_FILE
    per_image = out_dir / PER_IMAGE_FILE
    if not state_path.is_file():
        if per_image.exists():
            raise InputError(f"{out_dir} holds a {PER_IMAGE_FILE} but no {STATE_FILE}, so it cannot be resumed "
                             "safely; choose another --out folder")
        return False
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        old_config, old_fp = state["config"], state["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{state_path} is unreadable; choose another --out folder") from None
    if old_fp != fp:
        differ = sorted(k for k in set(old_config) | set(config) if old_config.get(k) != config.get(k))
        raise InputError(
            f"{out_dir} holds an evaluation made with other settings (different: {', '.join(differ) or 'format'}); "
            "resume it with the same arguments, or choose another --out folder")
    return True


def write_state(out_dir: Path, config: Mapping[str, Any], fp: str, dataset: Path) -> None:
    """Write ``evaluation_state.json`` (a new run)."""
    state = {"format": STATE_FORMAT, "fingerprint": fp, "config": config, "dataset": str(dataset.resolve()),
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    replace_file(out_dir / STATE_FILE, json.dumps(state, indent=2).encode())
