"""Safe output writing: temp file in the target folder, fsync, atomic link/rename, never overwrite.

All files of one job go through an :class:`OutputSet`; if the job fails or is cancelled, every
file it wrote is removed, so nothing half-written is ever left behind::

    with OutputSet(out_dir, inputs=[study.path]) as outs:
        outs.write_bytes("x_adv.png", data, kind="png")
    outs.records  # [{"kind": "png", "path": ..., "sha256": ...}]
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Iterable

from p2p_desktop.errors import OutputError
from p2p_desktop.hashing import sha256_bytes

__all__ = ["OutputSet", "check_output_dir", "unique_path", "atomic_write_bytes"]


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def check_output_dir(out_dir: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """Resolve ``out_dir`` and refuse it if it lies inside an input study's folder or is an input."""
    out = Path(out_dir).expanduser().resolve()
    for inp in inputs:
        src = Path(inp).expanduser().resolve()
        folder = src if src.is_dir() else src.parent
        if out == src or _is_within(out, folder):
            raise OutputError(
                f"output folder {out} is inside the input study's folder {folder}; "
                "choose a folder outside it (sources are never written to)")
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} exists and is not a folder")
    return out


def unique_path(path: Path) -> Path:
    """``path`` if free, else ``stem-1.ext``, ``stem-2.ext`` …"""
    if not path.exists():
        return path
    i = 1
    while True:
        cand = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not cand.exists():
            return cand
        i += 1


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a new file at ``path`` (or a fresh name beside it); returns the path used.

    The bytes go to a temporary file in the same folder, are fsynced, then linked into place
    (which fails rather than overwrite). A full disk raises :class:`OutputError` and leaves nothing.
    """
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".part")
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise OutputError(f"disk full while writing {path.name} in {folder}; nothing was written") from None
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        while True:
            target = unique_path(path)
            try:
                os.link(tmp, target)
                break
            except FileExistsError:
                continue  # someone took the name meanwhile: pick the next one
            except OSError:
                if target.exists():
                    continue
                os.replace(tmp, target)  # file systems without hard links
                break
        return target
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class OutputSet:
    """The files one job writes, removed together if the job does not finish."""

    def __init__(self, out_dir: str | Path, inputs: Iterable[str | Path] = (), cancel=None) -> None:
        self.out_dir = check_output_dir(out_dir, inputs)
        self.records: list[dict[str, str]] = []
        self._created_dir = False
        self.cancel = cancel  # optional CancelToken: checked before each file is written

    def __enter__(self) -> "OutputSet":
        if not self.out_dir.exists():
            try:
                self.out_dir.mkdir(parents=True)
            except OSError as exc:
                raise OutputError(f"cannot create output folder {self.out_dir}: {exc.strerror or exc}") from None
            self._created_dir = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.rollback()

    def path_for(self, name: str) -> Path:
        return unique_path(self.out_dir / name)

    def write_bytes(self, name: str, data: bytes, kind: str) -> Path:
        if self.cancel is not None:
            self.cancel.check()  # raises Cancelled; the with-block then rolls everything back
        digest = sha256_bytes(data)  # before the file exists: an interrupt here leaves nothing behind
        path = atomic_write_bytes(self.out_dir / name, data)
        self.records.append({"kind": kind, "path": str(path), "sha256": digest})
        return path

    def rollback(self) -> None:
        for rec in self.records:
            try:
                os.unlink(rec["path"])
            except OSError:
                pass
        self.records.clear()
        if self._created_dir:
            try:
                self.out_dir.rmdir()
            except OSError:
                pass
