"""The blinded copies: one normalised DICOM header for every case, and the check that proves it.

Every case of a study is written from the same template (:func:`blinded_dataset`): a fresh
de-identified header that copies nothing from the source but what describes the pixels
(rows, columns, samples, photometric interpretation, bit depth, sign) and the modality, with
ImageType ``DERIVED\\SECONDARY`` and one derivation text for originals and adversarial images
alike. The copies differ only in their UIDs, their random case number (PatientID, PatientName)
and their pixel data; :func:`check_blinded` verifies exactly that and names every other
difference, so a set that would unblind by a header property is refused.

Sources whose pixel description differs (size, bit depth, photometric interpretation,
samples per pixel, sign, frames) cannot be normalised without changing pixels and are refused
by :func:`pixel_description` comparisons in :mod:`p2p_desktop.readerstudy.make`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from p2p_desktop.errors import InputError

__all__ = ["ALLOWED_DIFFERENCES", "PIXEL_KEYS", "blinded_dataset", "header_signature", "check_blinded",
           "check_study_folder", "read_pixels", "BlindingError"]

#: Attributes allowed to differ between cases: the UIDs, the random case number, the pixels.
ALLOWED_DIFFERENCES = frozenset({
    "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
    "MediaStorageSOPInstanceUID", "PatientID", "PatientName", "PixelData", "FileMetaInformationGroupLength",
})

#: What describes the pixels; sources that differ here would unblind and are refused.
PIXEL_KEYS = ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
              "PixelRepresentation", "NumberOfFrames")

DERIVATION = "Reader-study copy; de-identified, header normalised; research use only, not for diagnosis"
_US = "1.2.840.10008.5.1.4.1.1.6.1"  # Ultrasound Image Storage
_SC = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage


class BlindingError(InputError):
    """The set of cases would unblind by a property other than pixel data."""


def read_pixels(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """The pixel array of one single-frame image (DICOM, PNG, TIFF) and its pixel description."""
    path = Path(path)
    if path.suffix.lower() in (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"):
        from PIL import Image

        with Image.open(path) as im:
            mode = im.mode
            arr = np.asarray(im.convert("RGB") if mode not in ("L", "I;16", "RGB") else im)
        bits = 16 if mode == "I;16" else 8
        rgb = arr.ndim == 3
        desc = {"Rows": int(arr.shape[0]), "Columns": int(arr.shape[1]), "SamplesPerPixel": 3 if rgb else 1,
                "PhotometricInterpretation": "RGB" if rgb else "MONOCHROME2", "BitsAllocated": bits,
                "BitsStored": bits, "PixelRepresentation": 0, "NumberOfFrames": 1,
                "Modality": "OT", "SOPClassUID": _SC, "LossyImageCompression": "00", "BurnedInAnnotation": "NO"}
        return arr, desc
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise InputError(f"{path}: cannot read its pixels ({type(exc).__name__}: {exc})") from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames != 1:
        raise InputError(f"{path}: {frames} frames; a reader study takes single-frame images")
    photometric = str(ds.PhotometricInterpretation)
    if photometric.startswith("YBR") and arr.ndim == 3:
        photometric = "RGB"  # pydicom decodes YCbCr to RGB
    defaults = {"NumberOfFrames": 1, "SamplesPerPixel": 1, "PixelRepresentation": 0}
    desc = {k: (str(ds.get(k, "")) if k == "PhotometricInterpretation" else int(ds.get(k, defaults.get(k, 0))))
            for k in PIXEL_KEYS}
    desc.update(PhotometricInterpretation=photometric, Modality=str(ds.get("Modality", "OT") or "OT"),
                SOPClassUID=_US if str(ds.get("SOPClassUID", "")).startswith("1.2.840.10008.5.1.4.1.1.6") else _SC,
                LossyImageCompression=str(ds.get("LossyImageCompression", "00") or "00"),
                BurnedInAnnotation=str(ds.get("BurnedInAnnotation", "") or "").strip().upper())
    return arr, desc


def blinded_dataset(pixels: np.ndarray, desc: Mapping[str, Any], case: str):
    """A new, de-identified DICOM dataset for one case: the common template, fresh UIDs, the case
    number as patient, ``pixels`` (described by ``desc``, which comes from the *original* source
    so that its adversarial copy gets the same header)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from p2p_desktop.export.deidentify import UIDMap

    uids = UIDMap()  # fresh UIDs, never derived from the source
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = desc["SOPClassUID"]
    ds.SOPInstanceUID = uids(f"sop-{case}")
    ds.Modality = desc["Modality"]
    ds.ConversionType = "WSD" if desc["SOPClassUID"] == _SC else None
    if ds.ConversionType is None:
        del ds.ConversionType
    ds.StudyDate = ds.StudyTime = ds.AccessionNumber = ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Reader study"
    ds.SeriesDescription = "Reader study case"
    ds.DerivationDescription = DERIVATION
    ds.PatientName = f"CASE^{case}"
    ds.PatientID = case
    ds.PatientBirthDate = ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "p2p-desktop reader study: new header, no source attribute kept"
    ds.StudyInstanceUID = uids(f"study-{case}")
    ds.SeriesInstanceUID = uids(f"series-{case}")
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = int(desc["SamplesPerPixel"])
    ds.PhotometricInterpretation = str(desc["PhotometricInterpretation"])
    if ds.SamplesPerPixel > 1:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(desc["Rows"]), int(desc["Columns"])
    ds.BitsAllocated, ds.BitsStored = int(desc["BitsAllocated"]), int(desc["BitsStored"])
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(desc["PixelRepresentation"])
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = desc["LossyImageCompression"]
    dtype = {(8, 0): np.uint8, (16, 0): np.uint16, (16, 1): np.int16, (32, 0): np.uint32, (32, 1): np.int32}
    key = (ds.BitsAllocated, ds.PixelRepresentation)
    if key not in dtype:
        raise InputError(f"{ds.BitsAllocated}-bit pixels are not supported in a reader study")
    arr = np.ascontiguousarray(pixels).astype(dtype[key], copy=False)
    if arr.shape[:2] != (ds.Rows, ds.Columns):
        raise BlindingError(f"case {case}: pixels {arr.shape[1]}x{arr.shape[0]} do not match the "
                            f"original's {ds.Columns}x{ds.Rows}; the sizes would unblind")
    ds.PixelData = arr.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    meta.ImplementationVersionName = "P2PD_READER"
    ds.file_meta = meta
    return ds


def _values(ds, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for elem in ds:
        name = elem.keyword or f"{elem.tag}"
        if name in ALLOWED_DIFFERENCES:
            continue
        if elem.VR == "SQ":
            out[prefix + name] = f"{len(elem.value)} item(s)"
            for i, item in enumerate(elem.value):
                out.update(_values(item, f"{prefix}{name}[{i}]."))
        else:
            out[prefix + name] = f"{elem.VR}:{elem.value!r}"
    return out


def header_signature(ds) -> dict[str, str]:
    """Every header attribute (nested, file meta included) except the allowed differences."""
    sig = _values(ds)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        sig.update(_values(meta, "meta."))
    return sig


def check_blinded(datasets: Mapping[str, Any]) -> list[str]:
    """One line per case whose header differs from the first case's in anything but UIDs, case
    number or pixel data (empty: the set is indistinguishable except for its pixels)."""
    problems = []
    items = list(datasets.items())
    if not items:
        return problems
    ref_name, ref = items[0]
    ref_sig = header_signature(ref)
    for name, ds in items[1:]:
        sig = header_signature(ds)
        diff = sorted(k for k in set(sig) | set(ref_sig) if sig.get(k) != ref_sig.get(k))
        if diff:
            shown = ", ".join(diff[:6]) + (f" and {len(diff) - 6} more" if len(diff) > 6 else "")
            problems.append(f"{name} differs from {ref_name} in {shown}: the header would unblind")
        if len(ds.PixelData) != len(ref.PixelData):
            problems.append(f"{name}: pixel data length differs from {ref_name}'s: the size would unblind")
    return problems


def check_study_folder(study: str | os.PathLike) -> list[str]:
    """:func:`check_blinded` on every DICOM of a study folder, plus files that do not belong
    there (one line each; empty when the folder can be handed out)."""
    import pydicom

    root = Path(study)
    meta = json.loads((root / "study.json").read_text(encoding="utf-8"))
    datasets, problems = {}, []
    for case in meta["cases"]:
        for rel in case["files"]:
            try:
                datasets[rel] = pydicom.dcmread(root / rel)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{rel}: unreadable ({type(exc).__name__}: {exc})")
    expected = {Path(r) for c in meta["cases"] for r in c["files"]}
    for p in sorted((root / "cases").rglob("*")):
        if p.is_file() and p.relative_to(root) not in expected:
            problems.append(f"{p.relative_to(root)}: a file that is not a case of the study")
    for name in ("key.json", "KEY.json"):
        if any(root.rglob(name)):
            problems.append(f"a {name} lies inside the study folder: it would unblind")
    return problems + check_blinded(datasets)
