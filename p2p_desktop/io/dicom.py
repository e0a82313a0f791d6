"""DICOM studies: checked header first, then one frame decoded, then a viewer's conversions.

Reading order, so a bad file is refused quickly and without large allocations:

1. file size and the ``DICM`` marker at byte 128 (``dcmread`` is never forced);
2. the header alone (``stop_before_pixels``): transfer syntax on the allowlist, geometry
   (Rows × Columns × Frames × Samples × bytes) under the caps, the frame index in range;
3. the whole file; native pixel data length checked against the geometry, a compressed
   frame's own size (JPEG SOF, J2K SIZ) checked against the header; one frame decoded;
4. palette -> 8-bit RGB (16-bit LUT entries >> 8, as viewers show them), YBR -> RGB (pydicom),
   modality LUT, MONOCHROME1 inverted, scaled to [0, 1].

Every failure is an :class:`~p2p_desktop.errors.InputError` with one line naming the file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from p2p_desktop.errors import InputError
from p2p_desktop.io.files import (
    check_regular_file,
    has_dicom_marker,
    sniff_image_format,
)
from p2p_desktop.io.files import describe as _describe
from p2p_desktop.io.files import input_error as _error
from p2p_desktop.io.files import one_line as _one_line
from p2p_desktop.io.study import Study, StudyMetadata

# Never swallowed; everything else a decoder raises (incl. Rust panics, which are
# BaseException) becomes a one-line InputError.
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)

__all__ = [
    "US_IMAGE_STORAGE",
    "DicomGeometry",
    "MAX_DIMENSION",
    "MAX_FRAME_BYTES",
    "MAX_TOTAL_BYTES",
    "MAX_FILE_BYTES",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "is_dicom_file",
    "read_dicom_header",
    "load_dicom",
]

#: SOP Class UID of Ultrasound Image Storage (single frame), the class the phantom generator
#: and the DICOM export write.
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"

MAX_DIMENSION = 16384  # rows and columns
MAX_FRAME_BYTES = 512 * 2**20  # one decoded frame
MAX_TOTAL_BYTES = 2 * 2**30  # all frames as declared by the header
MAX_FILE_BYTES = MAX_TOTAL_BYTES + 64 * 2**20  # the file itself (it is read whole)
MAX_SEQUENCE_DEPTH = 64  # nested sequence items (real files use a handful)

#: Transfer syntaxes this program decodes (UID -> name). A listed syntax still needs its
#: decoder plugin installed; an unlisted one (video, JPIP, private) is refused by UID.
SUPPORTED_TRANSFER_SYNTAXES: dict[str, str] = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
    "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 & 4)",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless (Process 14)",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless (Process 14, SV1)",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.201": "HTJ2K Lossless",
    "1.2.840.10008.1.2.4.202": "HTJ2K Lossless RPCL",
    "1.2.840.10008.1.2.4.203": "HTJ2K",
    "1.2.840.10008.1.2.5": "RLE Lossless",
}
_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}

# pydicom's own RLE decoder: on corrupt segments it raises, where pylibjpeg-rle panics
# (a Rust panic, caught below, but it prints a backtrace to stderr).
_PREFERRED_PLUGIN = {"1.2.840.10008.1.2.5": "pydicom"}

_GREY = {"MONOCHROME1", "MONOCHROME2"}
_COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"}
_PHOTOMETRICS = _GREY | _COLOUR | {"PALETTE COLOR"}
_PIXEL_TAG = 0x7FE00010
_FLOAT_PIXEL_TAGS = (0x7FE00008, 0x7FE00009)


@dataclass(frozen=True)
class DicomGeometry:
    """The pixel description read from a header, validated before anything is decoded."""

    rows: int
    columns: int
    n_frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    transfer_syntax: str

    @property
    def frame_bytes(self) -> int:
        """Bytes of one decoded frame (full resolution, every sample)."""
        return math.ceil(self.rows * self.columns * self.samples * self.bits_allocated / 8)

    @property
    def total_bytes(self) -> int:
        return self.frame_bytes * self.n_frames


def _check_file(path: Path) -> int:
    """Size and ``DICM`` marker; returns the file size."""
    try:
        check_regular_file(path)
        size = path.stat().st_size
        if size == 0:
            raise _error(path, "empty file (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise _error(path, f"file too large ({size / 2**30:.1f} GiB; limit "
                               f"{MAX_FILE_BYTES / 2**30:.1f} GiB)")
        with open(path, "rb") as fh:
            head = fh.read(132)
    except InputError:
        raise
    except OSError as exc:
        raise _error(path, exc.strerror or _describe(exc)) from exc
    if not has_dicom_marker(head):
        fmt = sniff_image_format(head)
        if fmt:
            raise _error(path, f"not a DICOM file: its content is a {fmt} image")
        raise _error(path, "not a DICOM file (no 'DICM' marker at byte 128)")
    return size


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Cheap content test: the ``DICM`` marker at byte 128 (never raises)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return has_dicom_marker(head)


def _int(ds: Any, keyword: str, path: Path, default: int | None = None) -> int:
    if keyword not in ds:
        if default is not None:
            return default
        raise _error(path, f"missing {keyword} in the image header")
    value = ds[keyword].value
    if value is None or value == "":
        if default is not None:
            return default
        raise _error(path, f"empty {keyword} in the image header")
    try:
        if isinstance(value, (bytes, bytearray)) or (
                hasattr(value, "__len__") and not isinstance(value, str)):
            raise TypeError("several values")
        return int(value)
    except Exception:
        raise _error(path, f"invalid {keyword} {_one_line(repr(value), 40)}") from None


def _text(ds: Any, keyword: str) -> str:
    try:
        value = ds.get(keyword)
        if value is None:
            return ""
        if hasattr(value, "value"):
            value = value.value
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = "\\".join(str(v) for v in value)
        return _one_line(str(value), 200)
    except Exception:
        return ""


def _check_elements(ds: Any, path: Path) -> None:
    """Convert every element once, so a corrupt value fails here and not at export."""
    current: list = [None]

    def walk(dataset: Any, depth: int = 0) -> None:
        if depth > MAX_SEQUENCE_DEPTH:
            raise ValueError(f"sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels")
        for tag in list(dataset.keys()):
            current[0] = tag
            elem = dataset[tag]  # converts the raw value; raises on a corrupt one
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item, depth + 1)

    try:
        walk(ds)
    except _PASS_THROUGH:
        raise
    except BaseException as exc:
        where = f" {current[0]}" if current[0] is not None else ""
        raise _error(path, f"corrupt header element{where} ({_describe(exc)})") from exc


def _geometry(ds: Any, path: Path) -> DicomGeometry:
    ts = _transfer_syntax(ds, path)
    for tag in _FLOAT_PIXEL_TAGS:
        if tag in ds:
            raise _error(path, "float pixel data is not supported")
    if "Rows" not in ds and "Columns" not in ds and _PIXEL_TAG not in ds:
        what = _text(ds, "Modality") or _text(ds, "SOPClassUID") or "unknown"
        raise _error(path, f"not an image: no Rows, Columns or pixel data (Modality {what})")
    rows = _int(ds, "Rows", path)
    cols = _int(ds, "Columns", path)
    if not (1 <= rows <= MAX_DIMENSION and 1 <= cols <= MAX_DIMENSION):
        raise _error(path, f"image size {rows}x{cols} outside 1..{MAX_DIMENSION} pixels")
    samples = _int(ds, "SamplesPerPixel", path, default=1)
    bits_allocated = _int(ds, "BitsAllocated", path)
    bits_stored = _int(ds, "BitsStored", path, default=bits_allocated)
    pixel_rep = _int(ds, "PixelRepresentation", path, default=0)
    n_frames = _int(ds, "NumberOfFrames", path, default=1)
    if n_frames < 0:
        raise _error(path, f"invalid NumberOfFrames {n_frames}")
    n_frames = max(n_frames, 1)  # as pydicom: 0 means a single frame
    if bits_allocated not in (1, 8, 16, 32):
        raise _error(path, f"unsupported BitsAllocated {bits_allocated} (1, 8, 16 or 32)")
    if not 1 <= bits_stored <= bits_allocated:
        raise _error(path, f"BitsStored {bits_stored} does not fit BitsAllocated {bits_allocated}")
    if pixel_rep not in (0, 1):
        raise _error(path, f"invalid PixelRepresentation {pixel_rep}")
    if "PhotometricInterpretation" not in ds:
        raise _error(path, "missing PhotometricInterpretation in the image header")
    photometric = _text(ds, "PhotometricInterpretation").strip().upper()
    if photometric not in _PHOTOMETRICS:
        raise _error(path, f"unsupported PhotometricInterpretation '{photometric}'")
    want = 1 if photometric in _GREY or photometric == "PALETTE COLOR" else 3
    if samples != want:
        raise _error(path, f"SamplesPerPixel {samples} does not match {photometric}")
    geo = DicomGeometry(rows, cols, n_frames, samples, bits_allocated, bits_stored,
                        pixel_rep == 1, photometric, ts)
    if geo.frame_bytes > MAX_FRAME_BYTES:
        raise _error(path, f"frame too large: {rows}x{cols}x{samples} at {bits_allocated} bits "
                           f"= {geo.frame_bytes / 2**20:.0f} MiB (limit {MAX_FRAME_BYTES / 2**20:.0f} MiB)")
    if geo.total_bytes > MAX_TOTAL_BYTES:
        raise _error(path, f"pixel data too large: {n_frames} frames of {rows}x{cols}x{samples} "
                           f"= {geo.total_bytes / 2**30:.1f} GiB (limit {MAX_TOTAL_BYTES / 2**30:.0f} GiB)")
    from p2p_desktop.io.memory import check_decode_budget

    reason = check_decode_budget(cols, rows)  # one frame goes through the pipeline
    if reason:
        raise _error(path, reason)
    return geo


def _transfer_syntax(ds: Any, path: Path) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = _text(meta, "TransferSyntaxUID").strip() if meta is not None else ""
    if not uid:
        raise _error(path, "no TransferSyntaxUID in the file meta information")
    if uid not in SUPPORTED_TRANSFER_SYNTAXES:
        try:
            from pydicom.uid import UID

            name = UID(uid).name
        except Exception:
            name = uid
        label = f" ({name})" if name and name != uid else ""
        raise _error(path, f"unsupported transfer syntax {uid}{label}")
    if uid not in _NATIVE:
        from pydicom.pixels import get_decoder

        decoder = get_decoder(uid)
        if not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies) or "no plugin"
            raise _error(path, f"transfer syntax {uid} ({SUPPORTED_TRANSFER_SYNTAXES[uid]}) needs a "
                               f"decoder that is not installed ({missing})")
    return uid


def _dcmread(path: Path, *, stop_before_pixels: bool):
    from pydicom import dcmread

    return dcmread(path, stop_before_pixels=stop_before_pixels)  # never forced open (no force flag)


def read_dicom_header(path: str | os.PathLike) -> tuple[Any, DicomGeometry]:
    """Read and validate the header only (no pixel data): ``(dataset, geometry)``.

    Raises :class:`InputError` for anything this program could not decode later: no
    ``DICM`` marker, unreadable header, unsupported transfer syntax (UID named), missing or
    oversized geometry. Fast: the pixel data is never read.
    """
    path = Path(path)
    _check_file(path)
    return _header(path)


def _header(path: Path) -> tuple[Any, DicomGeometry]:
    try:
        ds = _dcmread(path, stop_before_pixels=True)
    except InputError:
        raise
    except _PASS_THROUGH:
        raise
    except BaseException as exc:
        raise _error(path, f"unreadable DICOM header ({_describe(exc)})") from exc
    try:
        _check_elements(ds, path)
        geo = _geometry(ds, path)
    except InputError:
        raise
    except _PASS_THROUGH:
        raise
    except BaseException as exc:
        raise _error(path, f"invalid image header ({_describe(exc)})") from exc
    return ds, geo


def _check_frame(path: Path, frame: int | None, n_frames: int) -> int:
    index = 0 if frame is None else frame
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise _error(path, f"frame must be an integer, got {frame!r}")
    if not 0 <= int(index) < n_frames:
        raise _error(path, f"frame {index} out of range 0..{n_frames - 1}")
    return int(index)


def _decode(path: Path, geo: DicomGeometry, index: int, size: int) -> tuple[np.ndarray, str, Any]:
    """Read the whole file and decode one frame: ``(array, photometric out, dataset)``."""
    from pydicom.pixels import get_decoder
    from pydicom.pixels.utils import get_expected_length

    ds = _dcmread(path, stop_before_pixels=False)  # bounded by the file size cap
    if _PIXEL_TAG not in ds:
        raise _error(path, "no pixel data (not an image)")
    value = ds.PixelData
    if not value:
        raise _error(path, "empty pixel data")
    if geo.transfer_syntax in _NATIVE:
        expected = get_expected_length(ds)
        if len(value) < expected:
            raise _error(path, f"truncated pixel data ({len(value)} of {expected} bytes; "
                               f"file size {size} bytes)")
    else:
        _check_codestream(path, ds, geo, index)
    decoder = get_decoder(geo.transfer_syntax)
    plugin = _PREFERRED_PLUGIN.get(geo.transfer_syntax, "")
    arr, meta = decoder.as_array(ds, index=index, validate=True, raw=False, decoding_plugin=plugin)
    photometric_out = str(meta.get("photometric_interpretation", geo.photometric))
    return arr, photometric_out, ds


_J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
_JPEG = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
         "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}


def _jp2_codestream_offset(src: bytes) -> int | None:
    """Offset of the J2K codestream in a frame; None where pydicom's JP2 box walk
    (``get_j2k_parameters``) would never end (a box of length 0 before ``jp2c``)."""
    if not src.startswith(b"\x00\x00\x00\x0cjP  "):
        return 0
    offset, total = 12, len(src)
    while offset < total:  # the same walk as pydicom's, bounded
        length = int.from_bytes(src[offset:offset + 4], "big")
        if src[offset + 4:offset + 8] == b"jp2c":
            return offset + 8
        if length == 0:
            return None
        offset += length
    return offset


def _check_codestream(path: Path, ds: Any, geo: DicomGeometry, index: int) -> None:
    """Check the compressed frame against the header before a decoder sees it.

    Refuses a codestream that would hang pydicom's JP2 parser, or that declares a larger
    image than the header (the decoder would allocate for the codestream's size).
    """
    from pydicom.encaps import get_frame

    try:
        ext = None
        if 0x7FE00001 in ds:
            ext = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        src = get_frame(ds.PixelData, index, number_of_frames=geo.n_frames, extended_offsets=ext)
        src = bytes(src)
    except Exception:
        return  # the decoder meets the same problem and reports it
    size = None
    if geo.transfer_syntax in _J2K:
        offset = _jp2_codestream_offset(src)
        if offset is None:
            raise _error(path, "corrupt JPEG 2000 data (JP2 box of length 0)")
        siz = src[offset:offset + 40]
        if len(siz) == 40 and siz[:4] == b"\xff\x4f\xff\x51":
            x, y, x0, y0 = (int.from_bytes(siz[i:i + 4], "big") for i in (8, 12, 16, 20))
            size = (y - y0, x - x0)
    elif geo.transfer_syntax in _JPEG:
        from pydicom.pixels.utils import _get_jpg_parameters  # bounded marker walk

        info = _get_jpg_parameters(src)
        if info.get("height") and info.get("width"):
            size = (info["height"], info["width"])
    if size is not None and (size[0] <= 0 or size[1] <= 0 or size[0] * size[1] > geo.rows * geo.columns):
        raise _error(path, f"compressed frame is {size[0]}x{size[1]} pixels, larger than the "
                           f"header's {geo.rows}x{geo.columns}")


def _integral_dtype(values: np.ndarray, lo: float, hi: float) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    return np.dtype(np.float32)


def _grey(arr: np.ndarray, ds: Any, geo: DicomGeometry):
    """Modality LUT, range, MONOCHROME1 inversion -> (image, stored, bits, (lo, hi), window)."""
    from pydicom.pixels import apply_modality_lut

    has_modality = any(k in ds for k in ("RescaleSlope", "RescaleIntercept", "ModalityLUTSequence"))
    identity = True
    if has_modality:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        identity = "ModalityLUTSequence" not in ds and slope == 1.0 and intercept == 0.0
    inverted = geo.photometric == "MONOCHROME1"
    if identity and not geo.signed and geo.bits_stored <= 8:  # the common US case, no floats
        top = 2**geo.bits_stored - 1
        stored = np.minimum(arr, top).astype(np.uint8)
        if inverted:
            stored = (top - stored).astype(np.uint8)
        image = (stored.astype(np.float32) / np.float32(top))[..., None]
        window = _window(ds, 0.0, float(top), inverted)
        return image, stored, geo.bits_stored, (0.0, float(top)), window
    values = arr if identity else np.asarray(apply_modality_lut(arr, ds))
    values = values.astype(np.float64, copy=False)
    if not np.all(np.isfinite(values)):
        raise ValueError("non-finite values after the modality LUT")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 1.0
    if inverted:
        values = (lo + hi) - values
    image = ((values - lo) / (hi - lo)).astype(np.float32)[..., None]
    integral = bool(np.all(values == np.round(values)))
    stored = values.astype(_integral_dtype(values, lo, hi) if integral else np.float32)
    window = _window(ds, lo, hi, inverted)
    return image, stored, geo.bits_stored, (lo, hi), window


def _window(ds: Any, lo: float, hi: float, inverted: bool) -> tuple[float, float] | None:
    try:
        center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if center is None or width is None:
            return None
        if not isinstance(center, (int, float)):
            center = center[0]
        if not isinstance(width, (int, float)):
            width = width[0]
        c = (float(center) - lo) / (hi - lo)
        w = float(width) / (hi - lo)
        if not (math.isfinite(c) and math.isfinite(w)) or w <= 0:
            return None
        return (1.0 - c if inverted else c, w)
    except Exception:
        return None


def _colour(arr: np.ndarray, ds: Any, geo: DicomGeometry, photometric_out: str):
    """Palette -> RGB, RGB scaled to [0, 1] -> (image, stored, bits, (lo, hi))."""
    bits = geo.bits_stored
    if geo.photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = _palette_to_8_bits(np.asarray(apply_color_lut(arr, ds)), ds)
        bits = 8
    elif photometric_out.upper().startswith("YBR"):
        from pydicom.pixels import convert_color_space

        arr = convert_color_space(arr, photometric_out.upper(), "RGB")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"decoded colour frame has shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        lo, hi = 0.0, float(2**bits - 1)
        stored = np.minimum(arr, np.asarray(hi).astype(arr.dtype))
    else:
        stored = arr
        lo, hi = float(arr.min()), float(arr.max())
        if hi <= lo:
            hi = lo + 1.0
    work = np.float32 if stored.dtype.itemsize <= 2 else np.float64  # exact for 16-bit ints
    image = ((stored.astype(work) - work(lo)) / work(hi - lo)).astype(np.float32)
    return image, stored, bits, (lo, hi)


def _palette_to_8_bits(rgb: np.ndarray, ds: Any) -> np.ndarray:
    """Palette RGB as a DICOM viewer shows it: each entry scaled by its LUT's bit depth (the
    descriptor's third value), i.e. a 16-bit entry shifted right by 8 (0xFF00 -> 255, as DCMTK
    renders it), not divided by 65535 (0xFF00 -> 254)."""
    if rgb.dtype.itemsize == 1:
        return rgb.astype(np.uint8, copy=False)
    try:
        lut_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    except Exception:
        lut_bits = 16
    if lut_bits not in (8, 16):
        lut_bits = 16
    return (rgb.astype(np.uint16) >> (lut_bits - 8)).astype(np.uint8)


def _spacing(ds: Any) -> tuple[float, float] | None:
    """(row, col) mm from the ultrasound regions (units cm), else from PixelSpacing."""
    try:
        regions = list(ds.get("SequenceOfUltrasoundRegions") or [])
        regions.sort(key=lambda r: 0 if r.get("RegionSpatialFormat") == 1 else 1)
        for region in regions:
            if region.get("PhysicalUnitsXDirection") == 3 and region.get("PhysicalUnitsYDirection") == 3:
                dx, dy = float(region.get("PhysicalDeltaX")), float(region.get("PhysicalDeltaY"))
                if all(math.isfinite(v) and v != 0 for v in (dx, dy)):
                    return (abs(dy) * 10.0, abs(dx) * 10.0)
    except Exception:
        pass
    try:
        ps = ds.get("PixelSpacing")
        if ps is not None and len(ps) == 2:
            row, col = float(ps[0]), float(ps[1])
            if all(math.isfinite(v) and v > 0 for v in (row, col)):
                return (row, col)
    except Exception:
        pass
    return None


def _metadata(ds: Any, geo: DicomGeometry) -> StudyMetadata:
    burned = _text(ds, "BurnedInAnnotation").strip().upper()
    return StudyMetadata(
        patient_name=_text(ds, "PatientName"),
        patient_id=_text(ds, "PatientID"),
        study_uid=_text(ds, "StudyInstanceUID"),
        study_date=_text(ds, "StudyDate"),
        study_description=_text(ds, "StudyDescription"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        series_number=_text(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        modality=_text(ds, "Modality"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        instance_number=_text(ds, "InstanceNumber"),
        manufacturer=_text(ds, "Manufacturer"),
        transfer_syntax=geo.transfer_syntax,
        burned_in_annotation=burned if burned in ("YES", "NO") else "",
        laterality=_text(ds, "ImageLaterality") or _text(ds, "Laterality"),
    )


def load_dicom(path: str | os.PathLike, frame: int | None = None) -> Study:
    """Load one frame of a DICOM file (default frame 0) as a :class:`Study`.

    ``Study.dataset`` is the header (read with ``stop_before_pixels``, no PixelData),
    kept for export. Raises :class:`InputError` (one line naming the file) on any failure.
    """
    path = Path(path)
    size = _check_file(path)
    header, geo = _header(path)
    index = _check_frame(path, frame, geo.n_frames)
    try:
        arr, photometric_out, full = _decode(path, geo, index, size)
        if arr.ndim == 3 and arr.shape[0] == 1 and geo.samples == 1:
            arr = arr[0]
        want = (geo.rows, geo.columns) if geo.samples == 1 else (geo.rows, geo.columns, 3)
        if tuple(arr.shape) != want:
            raise ValueError(f"decoded frame has shape {arr.shape}, header says {want}")
        del full  # the pixel data is no longer needed; the header stays on the Study
        if geo.photometric in _GREY:
            image, stored, bits, value_range, window = _grey(arr, header, geo)
        else:
            image, stored, bits, value_range = _colour(arr, header, geo, photometric_out)
            window = None
    except InputError:
        raise
    except MemoryError as exc:
        raise _error(path, "not enough memory to decode the pixel data") from exc
    except _PASS_THROUGH:
        raise
    except BaseException as exc:
        raise _error(path, f"cannot decode the pixel data ({_describe(exc)})") from exc
    return Study(
        path=path,
        image=np.ascontiguousarray(image),
        kind="dicom",
        bits_stored=int(bits),
        photometric=geo.photometric,
        frame_index=index,
        n_frames=geo.n_frames,
        dataset=header,
        metadata=_metadata(header, geo),
        pixel_spacing_mm=_spacing(header),
        window=window,
        value_range=(float(value_range[0]), float(value_range[1])),
        stored=stored,
    )
