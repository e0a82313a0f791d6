"""Safe output writing: temp file in the target folder, fsync, atomic link/rename, never overwrite.

This is the one atomic writer of the project. :func:`atomic_write_bytes` never overwrites (a
taken name becomes ``stem-1.ext``); :func:`atomic_replace_bytes` (and its text and JSON forms)
replaces a file in place, for state files, caches, checkpoints and cards: the file is either the
old one or the new one, never half of either.

All files of one job go through an :class:`OutputSet`; if the job fails or is cancelled, every
file it wrote is removed, so nothing half-written is ever left behind::

    with OutputSet(out_dir, inputs=[study.path]) as outs:
        outs.write_bytes("x_adv.png", data, kind="png")
    outs.records  # [{"kind": "png", "path": ..., "sha256": ...}]
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from p2p_desktop.errors import OutputError
from p2p_desktop.hashing import sha256_bytes

__all__ = ["OutputSet", "safe_name", "check_output_dir", "export_start_folder", "unique_path", "atomic_write_bytes",
           "atomic_replace_bytes", "atomic_replace_text", "atomic_replace_json", "FolderLock", "LOCK_FILE",
           "deferred_signals"]

#: What a writer takes: the bytes themselves, or a function that writes them to a binary file
#: (``lambda fh: torch.save(obj, fh)``), so a large object need not be held in memory twice.
Content = bytes | Callable[[IO[bytes]], Any]


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def check_output_dir(out_dir: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """Resolve ``out_dir`` and refuse it if it lies inside an input study's folder or is an input."""
    try:
        out = Path(out_dir).expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop
        raise OutputError(f"output folder {out_dir} cannot be resolved ({exc})") from None
    for inp in inputs:
        try:
            src = Path(inp).expanduser().resolve()
        except (RuntimeError, OSError) as exc:
            raise OutputError(f"input {inp} cannot be resolved ({exc})") from None
        folder = src if src.is_dir() else src.parent
        if out == src or _is_within(out, folder):
            raise OutputError(
                f"output folder {out} is inside the input study's folder {folder}; "
                "choose a folder outside it (sources are never written to)")
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} exists and is not a folder")
    return out


def export_start_folder(last: str | os.PathLike | None, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Where an export's folder picker opens: the first existing folder that
    :func:`check_output_dir` accepts for ``inputs`` among the last export folder, the user's
    documents folder and home (the documents folder when none is allowed)."""
    from p2p_desktop.paths import documents_dir

    docs = documents_dir()
    for candidate in ([Path(last)] if last else []) + [docs, Path.home()]:
        try:
            if candidate.is_dir():
                check_output_dir(candidate, inputs)
                return candidate
        except (OutputError, OSError):
            continue
    return docs


def _taken(path: Path) -> bool:
    """Any directory entry makes a name taken: a file, a folder, a symlink (dangling ones too)."""
    return os.path.lexists(path)


def unique_path(path: Path) -> Path:
    """``path`` if free, else ``stem-1.ext``, ``stem-2.ext`` … (any existing entry counts as taken)."""
    if not _taken(path):
        return path
    i = 1
    while True:
        cand = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not _taken(cand):
            return cand
        i += 1
        if i > 100_000:
            raise OutputError(f"no free name for {path.name} in {path.parent}")


def _umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)  # pragma: no cover - non-Linux: read and restore at once
    os.umask(mask)
    return mask


class _deferred_signals:
    """Ctrl-C and SIGTERM wait (POSIX, main thread) while a file is linked into place and
    recorded, so a cancel can never leave a file that its OutputSet does not know about.
    Nests; leaving one that was never entered does nothing."""

    _mask = None

    def __enter__(self):
        import signal
        import threading

        self._mask = None
        if hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread():
            self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self._mask is not None:
            mask, self._mask = self._mask, None
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


deferred_signals = _deferred_signals


def _write_temp(path: Path, data: Content, *, private: bool) -> str:
    """A fsynced temporary file holding ``data`` in ``path``'s folder (created if need be); its name.

    Its mode follows the umask (0666 & ~umask), like any file the user creates, or 0600 when
    ``private``. A failure (a full disk) raises :class:`OutputError` and leaves nothing.
    """
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    try:  # a short temporary name: it must fit wherever the final name fits
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".p2p-", suffix=".part")
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror or exc}") from None
    try:
        try:
            os.fchmod(fd, 0o600 if private else 0o666 & ~_umask())
        except (OSError, AttributeError):  # pragma: no cover - Windows
            pass
        try:
            with os.fdopen(fd, "wb") as fh:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    fh.write(data)
                else:
                    data(fh)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise OutputError(f"disk full while writing {path.name} in {folder}; nothing was written") from None
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return tmp


def atomic_write_bytes(path: str | Path, data: Content, *, private: bool = False, on_created=None) -> Path:
    """Write ``data`` to a new file at ``path`` (or a fresh name beside it); returns the path used.

    The bytes go to a temporary file in the same folder, are fsynced, then linked into place
    (which fails rather than overwrite). A full disk raises :class:`OutputError` and leaves nothing.
    The file's mode follows the umask (0666 & ~umask), like any file the user creates, except
    ``private`` outputs (identifying by design, e.g. a DICOM export that keeps the patient's
    header): those are 0600. ``on_created(path)`` is called as soon as the file exists (with
    Ctrl-C and SIGTERM held back), so that a caller can always roll it back.
    """
    path = Path(path)
    tmp = _write_temp(path, data, private=private)
    return _link_into_place(tmp, path, on_created)


def _link_into_place(tmp: str, path: Path, on_created=None) -> Path:
    """Link the finished temporary file ``tmp`` (in ``path``'s folder) to ``path`` or a fresh
    name beside it, never overwriting; ``tmp`` is removed either way."""
    try:
        while True:
            target = unique_path(path)
            with _deferred_signals():
                try:
                    os.link(tmp, target)
                except FileExistsError:
                    continue  # someone took the name meanwhile: pick the next one
                except OSError as exc:
                    if _taken(target):
                        continue
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
                    os.replace(tmp, target)  # file systems without hard links
                if on_created is not None:
                    on_created(target)
                break
        return target
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_replace_bytes(path: str | Path, data: Content, *, private: bool = False) -> Path:
    """Replace the file at ``path`` with ``data`` atomically: a crash leaves the old file or the new one.

    Temporary file in the same folder, fsync, ``os.replace``; the mode as in
    :func:`atomic_write_bytes`. Any failure raises :class:`OutputError` and leaves the old file.
    """
    path = Path(path)
    tmp = _write_temp(path, data, private=private)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_replace_text(path: str | Path, text: str, *, private: bool = False) -> Path:
    """:func:`atomic_replace_bytes` of ``text`` encoded as UTF-8."""
    return atomic_replace_bytes(path, text.encode("utf-8"), private=private)


def atomic_replace_json(path: str | Path, obj: Any, *, indent: int | None = 2, private: bool = False) -> Path:
    """:func:`atomic_replace_text` of ``obj`` as JSON (``indent``), ending with a newline."""
    return atomic_replace_text(path, json.dumps(obj, indent=indent) + "\n", private=private)


class OutputSet:
    """The files one job writes, removed together if the job does not finish."""

    def __init__(self, out_dir: str | Path, inputs: Iterable[str | Path] = (), cancel=None) -> None:
        self.out_dir = check_output_dir(out_dir, inputs)
        self.records: list[dict[str, str]] = []
        self._created_dir = False
        self.cancel = cancel  # optional CancelToken: checked before each file is written

    def __enter__(self) -> OutputSet:
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

    def write_bytes(self, name: str, data: bytes, kind: str, *, private: bool = False) -> Path:
        if self.cancel is not None:
            self.cancel.check()  # raises Cancelled; the with-block then rolls everything back
        digest = sha256_bytes(data)

        def created(path: Path) -> None:  # recorded the moment it exists: a cancel rolls it back
            self.records.append({"kind": kind, "path": str(path), "sha256": digest})

        return atomic_write_bytes(self.out_dir / name, data, private=private, on_created=created)

    def adopt_file(self, name: str, src: str | Path, kind: str, *, private: bool = False) -> Path:
        """Move the finished file ``src`` (on :attr:`out_dir`'s file system, e.g. a received
        instance spooled in a folder inside it) into place as ``name``, as :meth:`write_bytes`
        would write it, without holding its bytes in memory: hashed in chunks, fsynced, given the
        umask's mode, then linked; ``src`` is gone afterwards."""
        if self.cancel is not None:
            self.cancel.check()
        import hashlib

        src = str(src)
        digest = hashlib.sha256()
        try:
            with open(src, "rb+") as fh:
                for chunk in iter(lambda: fh.read(2**20), b""):
                    digest.update(chunk)
                os.fsync(fh.fileno())
            os.chmod(src, 0o600 if private else 0o666 & ~_umask())
        except OSError as exc:
            raise OutputError(f"cannot write {self.out_dir / name}: {exc.strerror or exc}") from None
        sha = digest.hexdigest()

        def created(path: Path) -> None:
            self.records.append({"kind": kind, "path": str(path), "sha256": sha})

        return _link_into_place(src, self.out_dir / name, created)

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


LOCK_FILE = ".p2p-desktop.lock"


class FolderLock:
    """One job at a time in an output folder (``evaluate --out``): an exclusive ``flock`` on
    ``LOCK_FILE`` inside it, held for the job's life. The kernel drops the lock when the holder
    dies however it dies, so a killed run's folder is free at once (and resumes); a finishing
    run removes the file. A second run is refused with one line (:class:`OutputError`).
    Creates the folder (and its parents) when missing. Without ``fcntl`` (Windows) no lock."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the output folder {self.folder}: {exc.strerror or exc}") from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as exc:
                raise OutputError(f"cannot write in {self.folder}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputError(f"{self.folder} is in use by another run{holder}; wait for it to finish, "
                                      "or choose another output folder") from None
                # a file system without locks (some network or FUSE mounts): run unlocked, as before
                import logging

                logging.getLogger(__name__).warning("cannot lock %s (%s); two runs there would not be told "
                                                    "apart", self.path, exc.strerror or exc)
                self._cleanup_unlocked()
                return
            try:  # the file locked is still the one at the path (a finishing run removes it)
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the pid is only for the refusal's message
        self._fd = fd

    def _cleanup_unlocked(self) -> None:
        try:
            if self.path.stat().st_size == 0:
                self.path.unlink()
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self._fd), os.stat(self.path)):
                os.unlink(self.path)  # while still locked: a waiting run then locks a fresh file
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (process {text})" if text.isdigit() else ""


def safe_name(name: str) -> str:
    """``name`` as one path component (classifier and attack folders of a batch)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
