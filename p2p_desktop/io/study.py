"""The in-memory form of one loaded image (one frame of a study)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Study", "StudyMetadata"]


@dataclass(frozen=True)
class StudyMetadata:
    """Patient / study / series / instance attributes for a study tree (DICOM only)."""

    patient_name: str = ""
    patient_id: str = ""
    study_uid: str = ""
    study_date: str = ""
    study_description: str = ""
    series_uid: str = ""
    series_number: str = ""
    series_description: str = ""
    modality: str = ""
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    instance_number: str = ""
    manufacturer: str = ""
    transfer_syntax: str = ""
    burned_in_annotation: str = ""  # "YES" / "NO" / "" (unknown)
    laterality: str = ""

    def as_dict(self) -> dict[str, str]:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class Study:
    """One image ready for classification and attack.

    ``image`` is float32 in [0, 1], shape (H, W, C) with C = 1 (grey) or 3 (RGB), in the
    source's geometry. ``stored`` is the decoded pixel array exactly as stored after the
    photometric conversions a viewer applies (palette -> RGB, YBR -> RGB, MONOCHROME1
    inverted, modality LUT), kept with its dtype so exports can be written back in the
    source's bit depth.
    """

    path: Path
    image: np.ndarray
    kind: str  # "dicom" or "image"
    bits_stored: int = 8  # quantisation depth of the written output
    photometric: str = "MONOCHROME2"
    frame_index: int = 0
    n_frames: int = 1
    dataset: Any = None  # pydicom Dataset (header kept for export); None for plain images
    metadata: StudyMetadata = field(default_factory=StudyMetadata)
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, col) from US calibration
    mask: np.ndarray | None = None  # bool (H, W) lesion mask when one is attached
    label: str | None = None  # class folder name in a BUSI-layout dataset
    window: tuple[float, float] | None = None  # (center, width) in [0,1] units, for display
    value_range: tuple[float, float] = (0.0, 255.0)  # stored value mapped to 0 and 1
    output_name: str | None = None  # stem for output files (an anonymous one when de-identifying)
    stored: np.ndarray | None = None  # see the class docstring; None when not kept
    #: (slope, intercept) of a plain image whose values are not 8/16-bit integers (float or
    #: 32-bit TIFF): its range lo..hi was mapped linearly onto the 16-bit ``stored`` values, and
    #: source value = stored × slope + intercept (a DICOM export writes it as its rescale).
    rescale: tuple[float, float] | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def channels(self) -> int:
        return int(self.image.shape[2])

    @property
    def name(self) -> str:
        suffix = f" [frame {self.frame_index}]" if self.n_frames > 1 else ""
        return f"{self.path.name}{suffix}"

    @property
    def levels(self) -> float:
        """Number of quantisation steps between 0 and 1 in the written output (colour is
        always written as 8-bit RGB: PNG and the ultrasound IOD)."""
        bits = 8 if self.channels == 3 else min(self.bits_stored, 16)
        levels = float(2 ** bits - 1)
        lo, hi = self.value_range
        return min(levels, hi - lo) if hi > lo else levels

    def quantise(self, image: np.ndarray) -> np.ndarray:
        """Snap a [0,1] image to the levels this study's output will be written with.

        The change against the original is rounded toward zero, so quantisation never
        enlarges a perturbation (an ε-bounded attack stays within ε once written).
        """
        levels = self.levels
        base = np.round(np.clip(self.image, 0.0, 1.0) * levels)
        if base.shape != np.shape(image):
            return (np.round(np.clip(image, 0.0, 1.0) * levels) / levels).astype(np.float32)
        delta = np.clip(image, 0.0, 1.0) * levels - base
        q = np.clip(base + np.trunc(delta + np.sign(delta) * 1e-6), 0, levels) / levels
        return q.astype(np.float32)
