"""The metric table: every figure the project reports, described once.

Each row names the key used in results, CSV/JSON files and reports, the label and unit shown
to people, how to format it, which direction is better, how a batch averages it and, for
per-image metrics, the function that computes it. :func:`~p2p_desktop.metrics.compute_metrics`,
the batch evaluation, the reports, the GUI's results and history panels and the CLI all read
this table; a new metric is one row here (plus its test).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Metric", "METRICS", "image_metrics", "metric", "format_value", "compute_metrics"]


@dataclass(frozen=True)
class Metric:
    """One reported figure.

    ``compute(original, adversarial)`` takes HxW(xC) float images in [0, 1] and returns a float
    (``None`` for set-level metrics such as FID, which the batch evaluation computes).
    ``available()`` returns ``(ok, note)``; when not ok the value is ``None`` and the note says
    what is missing. ``average`` is how a batch summarises it: ``"mean"`` over images or
    ``"per-class mean"`` (computed per true class, then averaged over classes).
    """

    key: str
    label: str
    unit: str = ""
    fmt: str = "{:.4f}"
    higher_is_better: bool = True
    average: str = "mean"
    compute: Callable[[np.ndarray, np.ndarray], float | None] | None = None
    available: Callable[[], tuple[bool, str]] | None = None
    description: str = ""

    def format(self, value) -> str:
        """``value`` as shown to people (``—`` when it was not computed)."""
        return format_value(self, value)

    @property
    def heading(self) -> str:
        """Column heading: the label with the unit and the better direction, e.g. ``PSNR (dB) ↑``."""
        unit = f" ({self.unit})" if self.unit else ""
        return f"{self.label}{unit} {'↑' if self.higher_is_better else '↓'}"


def format_value(m: Metric, value) -> str:
    """Format ``value`` with the metric's format and unit; ``—`` for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = m.fmt.format(value)
    return f"{text} {m.unit}" if m.unit else text


def _ssim(o, a):
    from p2p_desktop.metrics.similarity import ssim

    return ssim(o, a)


def _ms_ssim(o, a):
    """MS-SSIM (Wang et al. 2003; pytorch_msssim, 5 scales). The Gaussian window shrinks from 11
    to fit small images (the smaller side must exceed 16·(window-1)); below 33 px it is None."""
    import torch
    from pytorch_msssim import ms_ssim

    win = min(11, (min(o.shape[:2]) - 1) // 16 + 1)
    win -= 1 - win % 2  # odd
    if win < 3:
        return None
    x, y = (torch.from_numpy(np.ascontiguousarray(np.asarray(v, np.float64).transpose(2, 0, 1)))[None] for v in (o, a))
    return float(ms_ssim(x, y, data_range=1.0, win_size=win))


def _psnr(o, a):
    from p2p_desktop.metrics.similarity import psnr

    return psnr(o, a)


def _l2(o, a):
    d = np.asarray(a, np.float64) - np.asarray(o, np.float64)
    return float(np.sqrt(np.sum(d * d)))


def _linf(o, a):
    d = np.asarray(a, np.float64) - np.asarray(o, np.float64)
    return float(np.max(np.abs(d))) if d.size else 0.0


def _lpips(o, a):
    from p2p_desktop.metrics.similarity import lpips_distance

    return lpips_distance(o, a)


def _lpips_available():
    from p2p_desktop.metrics.similarity import lpips_status

    return lpips_status()


#: key -> Metric, in the order they are shown.
METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("ssim", "SSIM", fmt="{:.4f}", compute=_ssim,
           description="structural similarity of the written image to the source"),
    Metric("ms_ssim", "MS-SSIM", fmt="{:.4f}", compute=_ms_ssim,
           description="multi-scale structural similarity (5 scales); null for images under 33 px"),
    Metric("psnr", "PSNR", unit="dB", fmt="{:.2f}", compute=_psnr,
           description="peak signal-to-noise ratio; null when the images are identical"),
    Metric("l2", "L2", fmt="{:.4f}", higher_is_better=False, compute=_l2,
           description="Euclidean norm of the perturbation (pixel values in [0, 1])"),
    Metric("linf", "L∞", fmt="{:.4f}", higher_is_better=False, compute=_linf,
           description="largest absolute pixel change"),
    Metric("lpips", "LPIPS", fmt="{:.4f}", higher_is_better=False, compute=_lpips, available=_lpips_available,
           description="learned perceptual distance (AlexNet), when its weights are on this machine"),
    Metric("fid", "FID", fmt="{:.2f}", higher_is_better=False, average="per-class mean",
           description="Fréchet Inception distance of adversarial to clean images, per true class, "
                       "averaged over classes (batch evaluation only)"),
)}


def image_metrics() -> list[Metric]:
    """The rows computed per image (those with a ``compute`` function), in table order."""
    return [m for m in METRICS.values() if m.compute is not None]


def metric(key: str) -> Metric:
    """The row for ``key``; a clear error for an unknown key."""
    try:
        return METRICS[key]
    except KeyError:
        raise KeyError(f"unknown metric {key!r}; known: {', '.join(METRICS)}") from None


def compute_metrics(original: np.ndarray, adversarial: np.ndarray) -> tuple[dict, list[str]]:
    """Every per-image metric of :data:`~p2p_desktop.metrics.table.METRICS` (SSIM, PSNR (dB), L2, L∞
    of the perturbation, LPIPS); returns (metrics, notes). A metric whose requirements are missing
    is ``None`` with a note saying what is missing; an infinite value (PSNR of identical images)
    is ``None`` with a note."""
    from p2p_desktop.metrics.arrays import as_hwc

    o, a = as_hwc(original, np.float64), as_hwc(adversarial, np.float64)
    notes: list[str] = []
    m: dict = {}
    for row in image_metrics():
        if row.available is not None:
            ok, note = row.available()
            if not ok:
                m[row.key] = None
                notes.append(note)
                continue
        value = row.compute(o, a)
        if value is not None and math.isinf(value):
            notes.append(f"{row.label} is infinite (the images are identical); reported as null")
            value = None
        m[row.key] = value
    return m, notes
