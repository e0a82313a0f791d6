"""The adversarial image as a DICOM instance derived from its source (highdicom's practice).

:func:`export_dicom` writes one single-frame, uncompressed (Explicit VR Little Endian) file:

- the source's header, minus what no longer holds (pixel description, multi-frame and cine
  attributes, palette tables, group lengths, signatures, icon, padding);
- new SOP Instance UID and Series Instance UID; the Study Instance UID is kept (remapped when
  de-identifying, see :mod:`p2p_desktop.export.deidentify`);
- SOP class: Ultrasound Image Storage when the source is ultrasound (single- or multi-frame),
  otherwise Secondary Capture Image Storage with the SC Equipment module (ConversionType WSD);
- Image Type ``DERIVED\\SECONDARY`` (+ the source's values 3 and on); Derivation Description
  naming the attack, its parameters and the model hashes; Derivation Code Sequence
  DCM 113042 "Pixel by pixel addition" (CID 7203: adversarial = source + perturbation);
- Source Image Sequence: the source instance (and frame) with Purpose of Reference
  DCM 121322 "Source image for image processing operation" (CID 7202);
- Contributing Equipment Sequence: this software and version, DCM 109103 "Modifying
  Equipment" (CID 7005), plus DCM 109104 "De-identifying Equipment" when de-identified;
- Series Description marking the series adversarial and research only; BurnedInAnnotation
  carried over;
- pixels in the source's geometry: colour (RGB, YBR, PALETTE COLOR) is written as 8-bit RGB,
  PlanarConfiguration 0; grey keeps BitsAllocated/BitsStored/PixelRepresentation; MONOCHROME1
  is inverted back so it stays MONOCHROME1 with the source's windows; a linear modality LUT
  (rescale slope/intercept) is inverted back.

A plain image source (PNG/JPEG...) gets a fresh Secondary Capture with empty patient data, in
its own depth: 8-bit grey or RGB stays 8-bit; 16-bit grey PNG/TIFF is written with BitsAllocated
and BitsStored 16, the values as read; a float (or 32-bit integer) TIFF, read as its own range
lo..hi mapped onto 16 bits, is written as those 16-bit values with RescaleIntercept lo and
RescaleSlope (hi - lo) / 65535, so the modality values reproduce the source's range.
"""

from __future__ import annotations

import copy
import datetime as _dt
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from p2p_desktop.errors import InputError
from p2p_desktop.io.dicom import US_IMAGE_STORAGE

__all__ = ["US_IMAGE_STORAGE", "SECONDARY_CAPTURE_STORAGE", "export_dicom", "build_adversarial_dataset",
           "dataset_to_bytes", "dicom_output_name"]

SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
_US_CLASSES = {
    US_IMAGE_STORAGE,  # Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.6",  # (retired) Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.3",  # (retired) Ultrasound Multi-frame Image Storage
}
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_SWAP_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}

# Attributes of the source that no longer describe the derived single-frame image.
_DROP = (
    # pixel description and data (rewritten)
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths", "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration",
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "SmallestImagePixelValue", "LargestImagePixelValue", "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries", "PixelAspectRatio",
    # palette colour tables (the output is RGB)
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "AlphaPaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
    "AlphaPaletteColorLookupTableData", "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData", "SegmentedBluePaletteColorLookupTableData",
    "SegmentedAlphaPaletteColorLookupTableData", "PaletteColorLookupTableUID",
    # multi-frame, cine and enhanced functional groups (the output is one frame)
    "NumberOfFrames", "FrameIncrementPointer", "FrameDimensionPointer", "FrameTime", "FrameTimeVector",
    "StartTrim", "StopTrim", "RecommendedDisplayFrameRate", "CineRate", "FrameDelay", "ImageTriggerDelay",
    "EffectiveDuration", "ActualFrameDuration", "PreferredPlaybackSequencing", "FrameLabelVector",
    "FramePrimaryAngleVector", "FrameSecondaryAngleVector", "RepresentativeFrameNumber",
    "MultiplexedAudioChannelsDescriptionCodeSequence", "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence", "DimensionIndexSequence", "DimensionOrganizationSequence",
    # instance identity and provenance of the source (replaced)
    "SOPClassUID", "SOPInstanceUID", "SourceImageSequence", "DerivationDescription",
    "DerivationCodeSequence", "InstanceCreatorUID", "InstanceCreationDate", "InstanceCreationTime",
    "ImageComments", "IconImageSequence", "DataSetTrailingPadding", "DigitalSignaturesSequence",
    "MACParametersSequence", "ReferencedImageSequence",
)


def _tags(keywords) -> set[int]:
    from pydicom.datadict import tag_for_keyword

    out = set()
    for kw in keywords:
        tag = tag_for_keyword(kw)
        if tag is not None:
            out.add(int(tag))
    return out


def _code(value: str, meaning: str, scheme: str = "DCM"):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _copy_element(elem, big_endian: bool):
    """A deep copy of one element; binary values of a big-endian source swapped to little."""
    new = copy.deepcopy(elem)
    if big_endian:
        if new.VR == "SQ":
            for item in new.value or []:
                _swap_dataset(item)
        elif new.VR in _SWAP_SIZES and isinstance(new.value, (bytes, bytearray)):
            size = _SWAP_SIZES[new.VR]
            arr = np.frombuffer(bytes(new.value), dtype=f">u{size}" if size < 8 else ">u8")
            new.value = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    return new


def _swap_dataset(ds) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                _swap_dataset(item)
        elif elem.VR in _SWAP_SIZES and isinstance(elem.value, (bytes, bytearray)):
            size = _SWAP_SIZES[elem.VR]
            arr = np.frombuffer(bytes(elem.value), dtype=f">u{size}")
            elem.value = arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def _copy_header(src, *, multi_frame: bool):
    """The source header minus what the derived image must not inherit."""
    from pydicom.dataset import Dataset

    drop = _tags(_DROP)
    meta = getattr(src, "file_meta", None)
    big_endian = str(getattr(meta, "TransferSyntaxUID", "")) == _BIG_ENDIAN if meta is not None else False
    ds = Dataset()
    for elem in src:
        tag = int(elem.tag)
        group, element = tag >> 16, tag & 0xFFFF
        if tag in drop or element == 0 or group in (0x0000, 0x0002):
            continue  # replaced, group lengths, command and file meta groups
        if multi_frame and 0x6000 <= group <= 0x601E:
            continue  # overlays of a multi-frame source may address other frames
        ds.add(_copy_element(elem, big_endian))
    return ds


def _new_header(study) -> Any:
    """A Secondary Capture header for a plain image: patient data empty, new study."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "ReferringPhysicianName", "StudyID", "AccessionNumber", "Manufacturer", "PatientOrientation",
               "Laterality"):
        setattr(ds, kw, "")
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    return ds


def _now_strings(now: _dt.datetime) -> tuple[str, str, str]:
    offset = now.strftime("%z") or "+0000"
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S"), now.strftime("%Y%m%d%H%M%S") + offset


def dicom_output_name(study, attack: str) -> str:
    """File name of the adversarial DICOM exported for ``study`` and ``attack``."""
    from p2p_desktop.export.images import output_stem

    return f"{output_stem(study, attack)}_adv.dcm"


def _derivation_text(result) -> str:
    clf = result.classifier or {}
    parts = [
        "Adversarial example, research use only, not for diagnosis",
        f"p2p-desktop {result.versions.get('p2p-desktop', '')}".strip(),
        # the procedure (preset, resolution, output mode, precision) before the long config, which may be cut
        f"procedure {(getattr(result, 'procedure', None) or {}).get('label', result.attack)}",
        f"attack {result.attack} {json.dumps(result.config, sort_keys=True, default=str)}",
        f"classifier {clf.get('name', '')} ({clf.get('architecture', '')}) sha256 {clf.get('sha256') or 'unknown'}",
    ]
    if result.backbone:
        parts.append(f"backbone {result.backbone.get('name', '')} sha256 {result.backbone.get('sha256') or 'unknown'}")
    parts.append(f"seed {result.seed}, device {result.device}")
    parts.append(f"verdict {result.original_label} -> {result.adversarial_label} "
                 f"({'success' if result.success else 'failure'})")
    text = "; ".join(parts)
    return text if len(text) <= 1024 else text[:1021] + "..."


def _grey_pixels(adv: np.ndarray, study, src, notes: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Grey [0,1] -> stored values in the source's bit depth, photometric and modality LUT."""
    lo, hi = study.value_range
    values = lo + np.clip(adv[..., 0].astype(np.float64), 0.0, 1.0) * (hi - lo)
    photometric = str(getattr(src, "PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").upper() \
        if src is not None else "MONOCHROME2"
    if photometric == "MONOCHROME1":
        values = (lo + hi) - values  # back to MONOCHROME1 storage: the source's windows stay valid
    elif photometric != "MONOCHROME2":
        photometric = "MONOCHROME2"
    raw = values
    modality_drop: list[str] = []
    if src is not None and "ModalityLUTSequence" in src:
        notes.append("DICOM export: the source's Modality LUT Sequence was replaced by identity "
                     "(pixels are written as modality values)")
        modality_drop.append("ModalityLUTSequence")
    elif src is not None:
        slope = float(src.get("RescaleSlope", 1) or 1)
        intercept = float(src.get("RescaleIntercept", 0) or 0)
        if slope != 1.0 or intercept != 0.0:
            raw = (values - intercept) / slope
    raw = np.round(raw)
    rescale: dict[str, Any] = {}
    if src is not None:
        bits_alloc = int(getattr(src, "BitsAllocated", 8) or 8)
        bits_stored = int(getattr(src, "BitsStored", bits_alloc) or bits_alloc)
        signed = int(getattr(src, "PixelRepresentation", 0) or 0) == 1
    else:  # a plain image: its own depth (8 or 16 bits), its values as they were read
        bits_stored = 16 if study.bits_stored > 8 else 8
        bits_alloc, signed = bits_stored, False
        if study.rescale is not None:  # float / 32-bit TIFF: the rescale gives back its range
            from pydicom.valuerep import format_number_as_ds

            slope, intercept = study.rescale
            rescale = {"RescaleIntercept": format_number_as_ds(float(intercept)),
                       "RescaleSlope": format_number_as_ds(float(slope)), "RescaleType": "US"}
    if bits_alloc == 1:
        bits_alloc = 8
    if bits_alloc not in (8, 16, 32):
        bits_alloc = 16
    bits_stored = max(1, min(bits_stored, bits_alloc))
    if raw.size and not _fits(float(raw.min()), float(raw.max()), bits_stored, signed):
        # modality values (a Modality LUT Sequence written as identity) beyond the stored bits:
        # the smallest depth that holds them, never a clip
        lo_v, hi_v = float(raw.min()), float(raw.max())
        signed = signed or lo_v < 0
        depth = next((b for b in range(bits_stored, max(16, bits_alloc) + 1) if _fits(lo_v, hi_v, b, signed)), None)
        if depth is None:
            raise InputError(f"{study.path.name}: the adversarial values {lo_v:g}..{hi_v:g} do not fit "
                             f"{max(16, bits_alloc)}-bit DICOM pixels; no DICOM written")
        notes.append(f"DICOM export: written with {depth} stored bits (the source's {bits_stored} cannot "
                     f"hold the values {lo_v:g}..{hi_v:g})")
        bits_stored, bits_alloc = depth, max(bits_alloc, 8 if depth <= 8 else 16 if depth <= 16 else 32)
    dtype = {8: np.int8 if signed else np.uint8, 16: np.int16 if signed else np.uint16,
             32: np.int32 if signed else np.uint32}[bits_alloc]
    attrs = {"SamplesPerPixel": 1, "PhotometricInterpretation": photometric, "BitsAllocated": bits_alloc,
             "BitsStored": bits_stored, "HighBit": bits_stored - 1, "PixelRepresentation": int(signed),
             "_drop": modality_drop} | rescale
    return raw.astype(dtype), attrs


def _fits(lo: float, hi: float, bits: int, signed: bool) -> bool:
    vmin, vmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    return vmin <= lo and hi <= vmax


def _colour_pixels(adv: np.ndarray, study, notes: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Colour [0,1] -> 8-bit RGB, interleaved (PlanarConfiguration 0)."""
    rgb = np.round(np.clip(adv.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    source = (study.photometric or "RGB").upper()
    if source != "RGB":
        notes.append(f"DICOM export: written as RGB (the source's {source} was converted to RGB)")
    if study.levels > 255:
        notes.append("DICOM export: colour written at 8 bits per sample (the source has "
                     f"{study.bits_stored}-bit colour values)")
    attrs = {"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB", "PlanarConfiguration": 0,
             "BitsAllocated": 8, "BitsStored": 8, "HighBit": 7, "PixelRepresentation": 0, "_drop": []}
    return rgb, attrs


def build_adversarial_dataset(result, study, *, deidentify: bool = False, now: _dt.datetime | None = None):
    """The derived dataset (with file meta) and the warnings it raised: ``(dataset, warnings)``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    from p2p_desktop import __version__
    from p2p_desktop.export.deidentify import apply_basic_profile

    adv = np.asarray(result.adversarial)
    if adv.ndim != 3 or adv.shape[:2] != (study.height, study.width):
        raise InputError(f"adversarial image shape {adv.shape} does not match the study's "
                         f"{study.height}x{study.width} geometry")
    now = now or _dt.datetime.now(_dt.timezone.utc).astimezone()
    date, time, datetime = _now_strings(now)
    warnings: list[str] = []
    src = study.dataset if study.kind == "dicom" else None
    if study.kind == "dicom" and src is None:
        raise InputError(f"{study.path.name}: the DICOM header was not kept, so no derived DICOM can be written")

    # 1. the header: the source's, or a fresh Secondary Capture for plain images
    if src is not None:
        ds = _copy_header(src, multi_frame=study.n_frames > 1)
        source_class = str(src.get("SOPClassUID", ""))
        source_uid = str(src.get("SOPInstanceUID", ""))
    else:
        ds = _new_header(study)
        source_class = source_uid = ""
    sop_class = US_IMAGE_STORAGE if source_class in _US_CLASSES else SECONDARY_CAPTURE_STORAGE

    # 2. de-identification (before anything this program adds)
    uid_map = None
    if deidentify:
        report = apply_basic_profile(ds)
        uid_map = report.uid_map
        warnings += report.warnings  # burned-in text: every time, unless the header says NO

    # 3. identity of the new instance and series
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    if "StudyInstanceUID" not in ds or not str(ds.StudyInstanceUID):
        ds.StudyInstanceUID = generate_uid()
    try:
        series_number = int(str(ds.get("SeriesNumber", "") or 0)) + 1000
    except ValueError:
        series_number = 1000
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    description = f"ADVERSARIAL RESEARCH ONLY {result.attack}"
    ds.SeriesDescription = description[:64]
    ds.ImageComments = ("Adversarial example made by p2p-desktop: research use only, not for diagnosis. "
                        f"Attack {result.attack}; the source image is referenced in the Source Image Sequence.")
    if not deidentify:
        ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
        ds.SeriesDate, ds.SeriesTime = date, time
        ds.ContentDate, ds.ContentTime = date, time
    else:
        ds.ContentDate, ds.ContentTime = "", ""
    if sop_class == SECONDARY_CAPTURE_STORAGE:
        ds.ConversionType = "WSD"
        ds.SecondaryCaptureDeviceManufacturer = "p2p-desktop"
        ds.SecondaryCaptureDeviceSoftwareVersions = __version__
        if "Modality" not in ds or not str(ds.Modality):
            ds.Modality = "OT"
        for kw in ("PatientOrientation",):
            if kw not in ds:
                setattr(ds, kw, "")

    # 4. derivation
    source_types = [str(v) for v in (src.get("ImageType", []) if src is not None else [])]
    if isinstance(source_types, str):
        source_types = [source_types]
    ds.ImageType = ["DERIVED", "SECONDARY"] + source_types[2:]
    ds.DerivationDescription = _derivation_text(result)
    ds.DerivationCodeSequence = [_code("113042", "Pixel by pixel addition")]
    if source_uid and source_class:
        ref = Dataset()
        ref.ReferencedSOPClassUID = source_class
        ref.ReferencedSOPInstanceUID = uid_map(source_uid) if uid_map is not None else source_uid
        if study.n_frames > 1:
            ref.ReferencedFrameNumber = study.frame_index + 1
        ref.PurposeOfReferenceCodeSequence = [_code("121322", "Source image for image processing operation")]
        ref.SpatialLocationsPreserved = "YES"
        ds.SourceImageSequence = [ref]
    equipment = Dataset()
    equipment.Manufacturer = "p2p-desktop"
    equipment.ManufacturerModelName = "p2p-desktop"
    versions = result.versions or {}
    equipment.SoftwareVersions = [f"p2p-desktop {__version__}"] + [
        f"{k} {v}" for k, v in versions.items() if k in ("torch", "pydicom", "diffusers")]
    if not deidentify:
        equipment.ContributionDateTime = datetime
    equipment.ContributionDescription = f"Adversarial perturbation ({result.attack}); research use only"
    equipment.PurposeOfReferenceCodeSequence = [_code("109103", "Modifying Equipment")]
    # a de-identified export drops the source's equipment history (vendors, contribution times)
    contributing = ([] if deidentify else list(ds.get("ContributingEquipmentSequence", []) or [])) + [equipment]
    if deidentify:
        deid_eq = Dataset()
        deid_eq.Manufacturer = "p2p-desktop"
        deid_eq.SoftwareVersions = f"p2p-desktop {__version__}"
        deid_eq.ContributionDescription = "DICOM PS3.15 Annex E basic profile (pixel data not cleaned)"
        deid_eq.PurposeOfReferenceCodeSequence = [_code("109104", "De-identifying Equipment")]
        contributing.append(deid_eq)
    ds.ContributingEquipmentSequence = contributing

    # 5. pixels: one frame in the source's geometry
    notes: list[str] = []
    if adv.shape[2] == 1:
        pixels, attrs = _grey_pixels(adv, study, src, notes)
    else:
        pixels, attrs = _colour_pixels(adv, study, notes)
    for kw in attrs.pop("_drop"):
        if kw in ds:
            delattr(ds, kw)
    if attrs["PhotometricInterpretation"] == "RGB":
        for kw in ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTSequence",
                   "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence"):
            if kw in ds:
                delattr(ds, kw)
    elif sop_class == SECONDARY_CAPTURE_STORAGE and "RescaleIntercept" in ds and "RescaleType" not in ds:
        ds.RescaleType = "US"  # SC Image module: required with a rescale
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    for kw, value in attrs.items():
        setattr(ds, kw, value)
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OB" if attrs["BitsAllocated"] == 8 else "OW"
    warnings += notes

    # 6. file meta: uncompressed, little endian
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"P2PD_{__version__}"[:16]
    ds.file_meta = meta
    return ds, [w for w in warnings if w]


def dataset_to_bytes(ds) -> bytes:
    """Encode a dataset as a DICOM Part 10 file (preamble, meta, Explicit VR Little Endian)."""
    from pydicom import dcmwrite

    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def export_dicom(result, study, outs, deidentify: bool = False, *, name: str | None = None,
                 now: _dt.datetime | None = None) -> Path:
    """Write the adversarial DICOM through ``outs`` (kind ``dicom``); returns its path.

    Warnings (burned-in text when de-identifying, colour model changes) are appended to
    ``result.notes``. Raises :class:`InputError` for a DICOM study whose header was not kept.
    """
    ds, warnings = build_adversarial_dataset(result, study, deidentify=deidentify, now=now)
    data = dataset_to_bytes(ds)
    path = outs.write_bytes(name or dicom_output_name(study, result.attack), data, kind="dicom",
                            private=not deidentify)  # the patient's header: owner-only
    for w in warnings:
        if w not in result.notes:
            result.notes.append(w)
    return path
