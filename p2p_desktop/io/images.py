"""Plain images (PNG, JPEG, BMP, TIFF) via Pillow, with a decompression-bomb guard, and
BUSI-style lesion masks (``X_mask.png``, ``X_mask_1.png`` next to ``X.png``).

The pixel count is checked from the header before anything is decoded; Pillow's own
guard (``Image.MAX_IMAGE_PIXELS``) is set to the same limit as a backstop.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from p2p_desktop.errors import InputError
from p2p_desktop.io.files import check_regular_file, sniff_image_format
from p2p_desktop.io.files import describe as _describe
from p2p_desktop.io.files import input_error as _error
from p2p_desktop.io.study import Study

# Never swallowed; everything else a decoder raises (incl. Rust panics, which are
# BaseException) becomes a one-line InputError.
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "ImageProbe",
    "sniff_image_format",
    "probe_image",
    "load_image",
    "is_mask_file",
    "mask_image_stem",
    "find_masks",
    "load_mask",
    "load_masks",
]

log = logging.getLogger(__name__)

MAX_IMAGE_PIXELS = 50_000_000  # per frame; a 20000x20000 one-colour PNG is refused
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # JPEG also opens MPO files
_MASK_RE = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<n>\d+))?$", re.IGNORECASE)

@dataclass(frozen=True)
class ImageProbe:
    """What an image header says, read without decoding the pixels."""

    format: str
    width: int
    height: int
    n_frames: int
    mode: str


def _open(path: Path):
    """Open (header only) with the format allowlist and the bomb guard; caller closes."""
    check_regular_file(path)
    try:
        if path.stat().st_size == 0:
            raise _error(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path, formats=_FORMATS)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _error(path, f"image too large (decompression bomb guard: {_describe(exc)})") from exc
    except Image.UnidentifiedImageError as exc:
        raise _error(path, "not a PNG, JPEG, BMP or TIFF image") from exc
    except OSError as exc:
        raise _error(path, exc.strerror or _describe(exc)) from exc
    except _PASS_THROUGH:
        raise
    except BaseException as exc:
        raise _error(path, f"unreadable image header ({_describe(exc)})") from exc
    _check_size(path, im)
    return im


def _check_size(path: Path, im) -> None:
    w, h = im.size
    if w < 1 or h < 1:
        im.close()
        raise _error(path, f"invalid image size {w}x{h}")
    if w * h > MAX_IMAGE_PIXELS:
        im.close()
        raise _error(path, f"image too large: {w}x{h} = {w * h / 1e6:.0f} megapixels "
                           f"(limit {MAX_IMAGE_PIXELS / 1e6:.0f}; decompression bomb guard)")
    from p2p_desktop.io.memory import check_decode_budget

    reason = check_decode_budget(w, h)
    if reason:
        im.close()
        raise _error(path, reason)


def probe_image(path: str | os.PathLike) -> ImageProbe:
    """Format, size, frame count and mode from the header (no pixel decoding)."""
    path = Path(path)
    im = _open(path)
    try:
        return ImageProbe(str(im.format), int(im.size[0]), int(im.size[1]),
                          int(getattr(im, "n_frames", 1) or 1), str(im.mode))
    except _PASS_THROUGH:
        raise
    except BaseException as exc:
        raise _error(path, f"unreadable image header ({_describe(exc)})") from exc
    finally:
        im.close()


def _pixels(im) -> tuple[np.ndarray, int, str, tuple[float, float] | None]:
    """(stored array, bits, photometric, rescale) for any Pillow mode; alpha dropped.

    Float and 32-bit integer grey (beyond 0..65535) is mapped linearly from its own range
    lo..hi onto 0..65535; ``rescale`` = (slope, intercept) takes a stored value back to the
    source's units (None for every other mode: the stored values are the source's)."""
    mode = im.mode
    if mode in ("L", "1", "LA", "La"):
        return np.asarray(im.convert("L") if mode != "L" else im, dtype=np.uint8), 8, "MONOCHROME2", None
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16), 16, "MONOCHROME2", None
    if mode in ("I", "F"):
        arr = np.asarray(im)
        if mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return arr.astype(np.uint16), 16, "MONOCHROME2", None
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError("non-finite pixel values")
        lo, hi = float(arr.min()), float(arr.max())
        span = hi - lo if hi > lo else 1.0
        scaled = np.round((arr - lo) / span * 65535).astype(np.uint16)
        return scaled, 16, "MONOCHROME2", (span / 65535, lo)
    rgb = im if mode == "RGB" else im.convert("RGB")
    return np.asarray(rgb, dtype=np.uint8), 8, "RGB", None


def load_image(path: str | os.PathLike, frame: int | None = None) -> Study:
    """Load one image (frame 0 unless given; TIFF pages are frames) as a :class:`Study`.

    Grey images give (H, W, 1), colour (H, W, 3) with alpha dropped; palette images become
    RGB; 16-bit grey keeps ``bits_stored=16``; float (and 32-bit integer) grey is mapped from its
    own range onto 16 bits, with ``Study.rescale`` taking it back to the source's units. No mask is
    attached here (see ``load_study``).
    """
    path = Path(path)
    im = _open(path)
    try:
        n = int(getattr(im, "n_frames", 1) or 1)
        index = 0 if frame is None else frame
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise _error(path, f"frame must be an integer, got {frame!r}")
        if not 0 <= int(index) < n:
            raise _error(path, f"frame {index} out of range 0..{n - 1}")
        index = int(index)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if index:
                im.seek(index)
                _check_size(path, im)
            im.load()
            stored, bits, photometric, rescale = _pixels(im)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _error(path, f"image too large (decompression bomb guard: {_describe(exc)})") from exc
    except MemoryError as exc:
        raise _error(path, "not enough memory to decode the image") from exc
    except _PASS_THROUGH:
        raise
    except BaseException as exc:
        raise _error(path, f"cannot decode the image ({_describe(exc)})") from exc
    finally:
        im.close()
    stored = np.ascontiguousarray(stored)
    hi = float(2**bits - 1)
    image = (stored.astype(np.float32) / hi)
    if image.ndim == 2:
        image = image[..., None]
    return Study(path=path, image=image, kind="image", bits_stored=bits,
                 photometric=photometric, frame_index=index, n_frames=n,
                 value_range=(0.0, hi), stored=stored, rescale=rescale)


# --- masks -----------------------------------------------------------------------------


def mask_image_stem(path: str | os.PathLike) -> str | None:
    """The image stem a mask file belongs to (``X_mask_1.png`` -> ``X``), else None."""
    p = Path(path)
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    m = _MASK_RE.match(p.stem)
    return m.group("stem") if m else None


def is_mask_file(path: str | os.PathLike) -> bool:
    """True for ``*_mask.<ext>`` and ``*_mask_<n>.<ext>`` image files (BUSI masks)."""
    return mask_image_stem(path) is not None


def _mask_order(p: Path) -> tuple[int, str]:
    m = _MASK_RE.match(p.stem)
    n = int(m.group("n")) if m and m.group("n") else 0
    return (n, p.name)


def find_masks(image_path: str | os.PathLike) -> tuple[Path, ...]:
    """Mask files next to an image: ``X_mask.*``, ``X_mask_1.*``, ... (sorted)."""
    p = Path(image_path)
    if is_mask_file(p):
        return ()
    try:
        siblings = list(p.parent.iterdir())
    except OSError:
        return ()
    masks = [s for s in siblings
             if s.name != p.name and mask_image_stem(s) == p.stem and s.is_file()]
    return tuple(sorted(masks, key=_mask_order))


def load_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A mask image as bool (H, W): pixels above half the mask's maximum are lesion."""
    path = Path(path)
    im = _open(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()
            stored, _bits, _ph, _rescale = _pixels(im)
    except InputError:
        raise
    except _PASS_THROUGH:
        raise
    except BaseException as exc:
        raise _error(path, f"cannot decode the mask ({_describe(exc)})") from exc
    finally:
        im.close()
    if stored.ndim == 3:
        stored = stored.max(axis=2)
    peak = float(stored.max()) if stored.size else 0.0
    mask = stored > (peak / 2.0) if peak > 0 else np.zeros(stored.shape, dtype=bool)
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise _error(path, f"mask size {mask.shape[1]}x{mask.shape[0]} does not match the "
                           f"image size {shape[1]}x{shape[0]}")
    return mask


def load_masks(paths, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """The union of several masks (one lesion per file in BUSI), or None for none."""
    union = None
    for p in paths:
        m = load_mask(p, shape)
        if union is not None and union.shape != m.shape:
            raise _error(Path(p), "masks of one image differ in size")
        union = m if union is None else (union | m)
    return union
