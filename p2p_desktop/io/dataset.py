"""Folders of studies: BUSI layout (one sub-folder per class, ``X_mask*.png`` masks).

A scan never raises for a single bad file: each one is listed with its one-line reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from p2p_desktop.errors import Cancelled, InputError

# Never swallowed; everything else a decoder raises (incl. Rust panics, which are
# BaseException) becomes a one-line InputError.
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)

__all__ = ["ScanEntry", "SkippedFile", "FolderScan", "DatasetItem", "scan_folder", "load_dataset"]

_IGNORED_NAMES = {"thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class ScanEntry:
    """A loadable file found by :func:`scan_folder`."""

    path: Path
    kind: str  # "dicom" or "image"
    label: str | None  # first sub-folder under the scanned root (BUSI class), else None
    mask_paths: tuple[Path, ...] = ()
    n_frames: int = 1

    @property
    def mask_path(self) -> Path | None:
        return self.mask_paths[0] if self.mask_paths else None


@dataclass(frozen=True)
class SkippedFile:
    """A file the scan could not use, with one line saying why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class FolderScan:
    """The result of scanning a folder: the usable files (with class labels) and the skipped ones."""

    root: Path
    entries: tuple[ScanEntry, ...] = ()
    skipped: tuple[SkippedFile, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names present, sorted."""
        return tuple(sorted({e.label for e in self.entries if e.label is not None}))

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class DatasetItem:
    """One study of a dataset: its file, class label and lesion mask file(s)."""

    path: Path
    label: str | None
    mask_paths: tuple[Path, ...] = field(default=())

    @property
    def mask_path(self) -> Path | None:
        return self.mask_paths[0] if self.mask_paths else None


def _natural_key(rel: Path) -> tuple:
    return tuple(tuple((0, int(t)) if t.isdigit() else (1, t.lower())
                       for t in re.split(r"(\d+)", part)) for part in rel.parts)


def _reason(exc: BaseException, path: Path) -> str:
    from p2p_desktop.io.files import one_line

    text = one_line(exc, 10_000)
    prefix = one_line(f"cannot load {path}: ", 10_000)
    if text.startswith(prefix):
        text = text[len(prefix):]
    if not isinstance(exc, InputError):
        text = f"internal error ({type(exc).__name__}: {text})"
    return text[:300] or type(exc).__name__


def _walk(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or name.lower() in _IGNORED_NAMES:
                continue
            files.append(Path(dirpath) / name)
    return sorted(files, key=lambda p: _natural_key(p.relative_to(root)))


def scan_folder(path: str | os.PathLike, *, verify: bool = False,
                progress: Callable[[int, int], None] | None = None,
                cancel=None) -> FolderScan:
    """Walk a folder recursively: loadable studies and the files skipped (with reasons).

    Each file's header is checked (``probe_study``); ``verify=True`` decodes every file and
    mask fully (slower, catches corrupt pixel data). Masks (``X_mask.png``,
    ``X_mask_1.png``) are attached to image ``X.*`` in the same folder and never listed as
    studies; a mask without its image is listed as skipped. ``progress(done, total)`` is
    called per file; ``cancel`` (a CancelToken) is checked per file. Raises
    :class:`InputError` only when ``path`` is not a readable folder.
    """
    from p2p_desktop.io.images import is_mask_file, load_masks, mask_image_stem
    from p2p_desktop.io.loader import load_study, probe_study

    root = Path(path)
    if not root.is_dir():
        raise InputError(f"cannot scan {root}: {'no such folder' if not root.exists() else 'not a folder'}")
    try:
        files = _walk(root)
    except OSError as exc:
        raise InputError(f"cannot scan {root}: {exc.strerror or type(exc).__name__}") from exc

    masks: dict[tuple[Path, str], list[Path]] = {}
    studies: list[Path] = []
    for f in files:
        if is_mask_file(f):
            masks.setdefault((f.parent, mask_image_stem(f)), []).append(f)
        else:
            studies.append(f)

    entries: list[ScanEntry] = []
    skipped: list[SkippedFile] = []
    used: set[tuple[Path, str]] = set()
    total = len(studies)
    for done, f in enumerate(studies, 1):
        if cancel is not None:
            cancel.check()
        rel = f.relative_to(root)
        label = rel.parts[0] if len(rel.parts) > 1 else None
        key = (f.parent, f.stem)
        mask_paths = tuple(masks.get(key, ()))
        try:
            if verify:
                study = load_study(f, attach_mask=False)
                kind, frames, shape = study.kind, study.n_frames, (study.height, study.width)
            else:
                probe = probe_study(f)
                kind, frames, shape = probe.kind, probe.n_frames, (probe.rows, probe.columns)
        except Cancelled:
            raise
        except _PASS_THROUGH:
            raise
        except BaseException as exc:  # one bad file never stops the scan
            skipped.append(SkippedFile(f, _reason(exc, f)))
        else:
            if mask_paths:
                used.add(key)
            if verify and mask_paths:
                try:
                    load_masks(mask_paths, shape)
                except _PASS_THROUGH:
                    raise
                except BaseException as exc:
                    skipped.extend(SkippedFile(m, _reason(exc, m)) for m in mask_paths)
                    mask_paths = ()
            entries.append(ScanEntry(f, kind, label, mask_paths, frames))
        if progress is not None:
            progress(done, total)

    for key, paths in masks.items():
        if key not in used:
            for m in paths:
                skipped.append(SkippedFile(m, f"mask without a loadable image '{key[1]}.*' "
                                              "next to it"))
    skipped.sort(key=lambda s: _natural_key(s.path.relative_to(root)))
    return FolderScan(root, tuple(entries), tuple(skipped))


def load_dataset(path: str | os.PathLike, *, verify: bool = False,
                 progress: Callable[[int, int], None] | None = None,
                 cancel=None) -> list[DatasetItem]:
    """The studies of a BUSI-layout folder as (path, label, mask paths) items.

    Files that cannot be loaded are left out (see :func:`scan_folder` for the reasons).
    Raises :class:`InputError` when the folder holds no loadable study.
    """
    scan = scan_folder(path, verify=verify, progress=progress, cancel=cancel)
    if not scan.entries:
        extra = f"; {len(scan.skipped)} file(s) skipped, e.g. {scan.skipped[0].path.name}: " \
                f"{scan.skipped[0].reason}" if scan.skipped else ""
        raise InputError(f"no loadable images in {scan.root}{extra}")
    return [DatasetItem(e.path, e.label, e.mask_paths) for e in scan.entries]
