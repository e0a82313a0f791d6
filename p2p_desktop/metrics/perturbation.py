"""The perturbation of one attack run, δ = adversarial − original, and its statistics.

Qt-free: the GUI's heatmap, hover readout, ROI statistics and lesion energy all come from
here, so they can be tested and reused by reports. Arrays are (H, W, C) float in [0, 1]
(δ in [-1, 1]); regions are given in pixel coordinates (x = column, y = row)::

    pm = PerturbationMap(result.original, result.adversarial, mask=study.mask)
    image, levels = pm.display("signed", amplification=4)   # (H, W) and (lo, hi)
    pm.region_stats(10, 20, 64, 48).l2                        # L2 energy inside the rectangle
    pm.lesion_energy().inside_fraction                        # share of ‖δ‖² inside the lesion
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from p2p_desktop.metrics.arrays import as_hwc

__all__ = ["PerturbationMap", "RegionStats", "LesionEnergy", "MODES"]

#: Heatmap modes: ``signed`` (channel mean of δ, diverging around 0) or ``absolute``
#: (largest |δ| over the channels, so colour changes that cancel in the mean still show).
MODES = ("signed", "absolute")


@dataclass(frozen=True)
class RegionStats:
    """Perturbation statistics over a rectangle (all channels of every pixel inside it)."""

    x: int  # first column (clipped to the image)
    y: int  # first row
    width: int
    height: int
    pixels: int
    mean: float  # mean of δ (signed)
    abs_mean: float  # mean of |δ|
    max_abs: float  # max |δ| (L∞ inside the region)
    energy: float  # Σ δ²
    l2: float  # sqrt(Σ δ²), the L2 norm of δ restricted to the region

    def as_dict(self) -> dict[str, float | int]:
        from dataclasses import asdict

        return asdict(self)


@dataclass(frozen=True)
class LesionEnergy:
    """How the perturbation energy Σ δ² splits between the lesion mask and the rest."""

    inside_pixels: int
    outside_pixels: int
    inside_energy: float
    outside_energy: float

    @property
    def total_energy(self) -> float:
        return self.inside_energy + self.outside_energy

    @property
    def inside_fraction(self) -> float:
        """Share of the energy inside the lesion (0 when there is no perturbation)."""
        total = self.total_energy
        return self.inside_energy / total if total > 0 else 0.0

    @property
    def inside_density(self) -> float:
        """Mean energy per pixel inside the lesion."""
        return self.inside_energy / self.inside_pixels if self.inside_pixels else 0.0

    @property
    def outside_density(self) -> float:
        return self.outside_energy / self.outside_pixels if self.outside_pixels else 0.0

    @property
    def density_ratio(self) -> float:
        """Inside / outside energy per pixel (> 1: the attack concentrates on the lesion)."""
        if self.outside_density > 0:
            return self.inside_density / self.outside_density
        return math.inf if self.inside_density > 0 else 0.0


class PerturbationMap:
    """δ = adversarial − original for one run, with display maps and region statistics."""

    def __init__(self, original: np.ndarray, adversarial: np.ndarray, mask: np.ndarray | None = None) -> None:
        o, a = as_hwc(original), as_hwc(adversarial)
        if o.shape != a.shape:
            raise ValueError(f"original {o.shape} and adversarial {a.shape} differ in shape")
        self.delta = (a - o).astype(np.float32)
        self.mask = self._check_mask(mask)

    @classmethod
    def from_delta(cls, delta: np.ndarray, mask: np.ndarray | None = None) -> PerturbationMap:
        d = as_hwc(delta)
        return cls(np.zeros_like(d), d, mask)

    @classmethod
    def from_result(cls, result, mask: np.ndarray | None = None) -> PerturbationMap:
        """From an :class:`~p2p_desktop.attacks.runner.AttackResult` (uses its stored δ)."""
        return cls.from_delta(result.perturbation, mask)

    def _check_mask(self, mask: np.ndarray | None) -> np.ndarray | None:
        if mask is None:
            return None
        m = np.asarray(mask)
        if m.ndim == 3:
            m = m.any(axis=2)
        if m.shape != self.delta.shape[:2]:
            raise ValueError(f"mask {m.shape} does not match the image {self.delta.shape[:2]}")
        return m.astype(bool)

    # -- geometry -------------------------------------------------------------------
    @property
    def height(self) -> int:
        return int(self.delta.shape[0])

    @property
    def width(self) -> int:
        return int(self.delta.shape[1])

    @property
    def channels(self) -> int:
        return int(self.delta.shape[2])

    # -- maps ---------------------------------------------------------------------------
    def signed(self) -> np.ndarray:
        """(H, W) channel mean of δ (equals δ for grey images)."""
        return self.delta.mean(axis=2) if self.channels > 1 else self.delta[:, :, 0].copy()

    def absolute(self) -> np.ndarray:
        """(H, W) largest |δ| over the channels."""
        return np.abs(self.delta).max(axis=2)

    def map(self, mode: str = "signed") -> np.ndarray:
        if mode not in MODES:
            raise ValueError(f"unknown heatmap mode {mode!r}: choose one of {', '.join(MODES)}")
        return self.signed() if mode == "signed" else self.absolute()

    def scale(self, mode: str = "signed", percentile: float = 100.0) -> float:
        """The largest |value| of the map (or its ``percentile``), never 0."""
        values = np.abs(self.map(mode))
        if values.size == 0:
            return 1e-6
        top = float(np.percentile(values, percentile)) if percentile < 100 else float(values.max())
        return top if top > 0 else 1e-6

    def levels(self, mode: str = "signed", amplification: float = 1.0,
               percentile: float = 100.0) -> tuple[float, float]:
        """Colour levels: symmetric around 0 for ``signed``, from 0 for ``absolute``.

        ``amplification`` > 1 narrows the range so small changes get strong colours.
        """
        if not amplification > 0:
            raise ValueError(f"amplification must be > 0, got {amplification}")
        top = self.scale(mode, percentile) / amplification
        return (-top, top) if mode == "signed" else (0.0, top)

    def display(self, mode: str = "signed", amplification: float = 1.0,
                percentile: float = 100.0) -> tuple[np.ndarray, tuple[float, float]]:
        """The (H, W) map to draw and its colour levels."""
        return self.map(mode), self.levels(mode, amplification, percentile)

    def normalised(self, mode: str = "signed", amplification: float = 1.0,
                   percentile: float = 100.0) -> np.ndarray:
        """The map scaled to [-1, 1] (signed) or [0, 1] (absolute), clipped."""
        values, (lo, hi) = self.display(mode, amplification, percentile)
        top = max(abs(lo), abs(hi))
        out = values / top
        return np.clip(out, -1.0, 1.0) if mode == "signed" else np.clip(out, 0.0, 1.0)

    # -- readout and statistics ---------------------------------------------------------------
    def value_at(self, row: int, col: int) -> np.ndarray | None:
        """δ at one pixel (one value per channel), or None outside the image."""
        if 0 <= row < self.height and 0 <= col < self.width:
            return self.delta[int(row), int(col)].copy()
        return None

    def region_stats(self, x: float, y: float, width: float, height: float) -> RegionStats:
        """Statistics of δ inside the rectangle (x, y, width, height), clipped to the image."""
        x0 = int(np.clip(math.floor(x), 0, self.width))
        y0 = int(np.clip(math.floor(y), 0, self.height))
        x1 = int(np.clip(math.ceil(x + width), 0, self.width))
        y1 = int(np.clip(math.ceil(y + height), 0, self.height))
        region = self.delta[y0:y1, x0:x1].astype(np.float64)
        w, h = max(x1 - x0, 0), max(y1 - y0, 0)
        if region.size == 0:
            return RegionStats(x0, y0, w, h, 0, 0.0, 0.0, 0.0, 0.0, 0.0)
        energy = float(np.sum(region * region))
        return RegionStats(x0, y0, w, h, w * h, float(region.mean()), float(np.abs(region).mean()),
                           float(np.abs(region).max()), energy, math.sqrt(energy))

    def whole_image_stats(self) -> RegionStats:
        return self.region_stats(0, 0, self.width, self.height)

    def lesion_energy(self) -> LesionEnergy | None:
        """Energy inside vs outside the lesion mask; None without a mask."""
        if self.mask is None:
            return None
        per_pixel = np.sum(self.delta.astype(np.float64) ** 2, axis=2)
        inside = float(per_pixel[self.mask].sum())
        outside = float(per_pixel[~self.mask].sum())
        n_in = int(self.mask.sum())
        return LesionEnergy(n_in, int(self.mask.size - n_in), inside, outside)
