"""One entry point for every input file: dispatch on content, attach masks."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from p2p_desktop.errors import InputError
from p2p_desktop.io.dicom import load_dicom, read_dicom_header
from p2p_desktop.io.files import (
    DICOM_SUFFIXES,
    check_regular_file,
    has_dicom_marker,
    input_error,
    one_line,
    sniff_image_format,
)
from p2p_desktop.io.images import find_masks, load_image, load_masks, probe_image
from p2p_desktop.io.study import Study

_error = input_error

__all__ = ["DICOM_SUFFIXES", "StudyProbe", "detect_kind", "probe_study", "n_frames", "load_study",
           "input_error", "one_line"]

log = logging.getLogger(__name__)

def detect_kind(path: str | os.PathLike) -> str | None:
    """'dicom' (``DICM`` at byte 128), 'image' (PNG/JPEG/BMP/TIFF magic) or None.

    Reads 132 bytes; never raises (an unreadable file gives None).
    """
    try:
        if not os.path.isfile(path):  # a FIFO or device would block or never end
            return None
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return None
    if has_dicom_marker(head):
        return "dicom"
    return "image" if sniff_image_format(head) else None


def _kind_or_raise(path: Path) -> str:
    check_regular_file(path, folder_hint="scan it with scan_folder")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise _error(path, exc.strerror or type(exc).__name__) from exc
    if size == 0:
        raise _error(path, "empty file (0 bytes)")
    is_dicom = has_dicom_marker(head)
    fmt = sniff_image_format(head)
    if path.suffix.lower() in DICOM_SUFFIXES and not is_dicom:
        what = f"its content is a {fmt} image" if fmt else "no 'DICM' marker at byte 128"
        raise _error(path, f"not a DICOM file ({what})")
    if is_dicom:
        return "dicom"
    if fmt:
        return "image"
    raise _error(path, "neither DICOM (no 'DICM' marker at byte 128) nor a PNG, JPEG, BMP "
                       "or TIFF image")


@dataclass(frozen=True)
class StudyProbe:
    """What a file's header says, read without decoding pixels."""

    path: Path
    kind: str  # "dicom" or "image"
    rows: int
    columns: int
    n_frames: int
    channels: int  # 1 grey, 3 colour (after palette/YBR conversion)
    photometric: str


def probe_study(path: str | os.PathLike) -> StudyProbe:
    """Validate a file's header cheaply (no pixel decoding); :class:`InputError` if it
    cannot be loaded for a reason visible in the header (format, size, transfer syntax)."""
    path = Path(path)
    kind = _kind_or_raise(path)
    if kind == "dicom":
        _ds, geo = read_dicom_header(path)
        channels = 1 if geo.photometric.startswith("MONOCHROME") else 3
        return StudyProbe(path, kind, geo.rows, geo.columns, geo.n_frames, channels,
                          geo.photometric)
    p = probe_image(path)
    grey = p.mode in ("1", "L", "LA", "La", "I", "F") or p.mode.startswith("I;16")
    return StudyProbe(path, kind, p.height, p.width, p.n_frames, 1 if grey else 3,
                      "MONOCHROME2" if grey else "RGB")


def n_frames(path: str | os.PathLike) -> int:
    """Number of frames (DICOM cine frames, TIFF pages; 1 for most images), header only."""
    return probe_study(path).n_frames


def load_study(path: str | os.PathLike, frame: int | None = None, *,
               label: str | None = None, attach_mask: bool = True) -> Study:
    """Load one frame of a DICOM or image file as a :class:`Study` (frame 0 by default).

    The format is taken from the content (``DICM`` at byte 128, else image magic); a file
    named ``.dcm`` must hold DICOM. Masks next to the file (``X_mask.png``,
    ``X_mask_1.png`` for ``X.*``) are attached as one bool (H, W) union when their size
    matches; an unusable mask is logged and skipped. ``label`` is stored on the Study.
    Raises :class:`InputError` (one line naming the file) for any unloadable input.
    """
    path = Path(path)
    kind = _kind_or_raise(path)
    if kind == "dicom":
        study = load_dicom(path, frame)
    else:
        study = load_image(path, frame)
    study.label = label
    if attach_mask:
        masks = find_masks(path)
        if masks:
            try:
                study.mask = load_masks(masks, (study.height, study.width))
            except InputError as exc:
                log.warning("mask not attached: %s", exc)
    return study
