"""The report's pictures: images as PNG, the perturbation heatmap and its amplified view, the
probability and per-iteration charts, bar charts. Drawn with matplotlib's Agg canvas (no
pyplot, no display, thread-safe).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["figure_png", "perturbation_colours", "perturbation_heatmap_png", "amplified_perturbation_png",
           "probability_chart_png", "history_chart_png", "DELTA_UNITS"]

#: What δ is measured in, wherever it is shown.
DELTA_UNITS = "[0,1] pixel units"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (without the Software metadata entry)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _image_png(image: np.ndarray, max_side: int = 640) -> bytes:
    """(H, W, C) float [0,1] -> 8-bit PNG, downscaled so the longer side is at most ``max_side``."""
    from PIL import Image

    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    pil = Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8))
    if max(pil.size) > max_side:
        scale = max_side / max(pil.size)
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def _signed(perturbation: np.ndarray) -> np.ndarray:
    d = np.asarray(perturbation, dtype=np.float64)
    return d.mean(axis=2) if d.ndim == 3 else d


def _heat_scale(perturbation: np.ndarray):
    """The diverging colormap and the norm centred on 0 (symmetric: ±max|δ|)."""
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm

    d = _signed(perturbation)
    m = float(np.abs(d).max()) or 1.0 / 255.0
    return d, colormaps["RdBu_r"], TwoSlopeNorm(vcenter=0.0, vmin=-m, vmax=m)


def perturbation_colours(perturbation: np.ndarray) -> np.ndarray:
    """Signed perturbation (channel mean) -> (H, W, 3) RGB in [0,1]: 0 is white, + red, − blue."""
    d, cmap, norm = _heat_scale(perturbation)
    return np.asarray(cmap(norm(d)))[..., :3]


def perturbation_heatmap_png(perturbation: np.ndarray) -> bytes:
    """:func:`perturbation_colours` as a figure with a colour bar (δ in [0,1] pixel units)."""
    from matplotlib.cm import ScalarMappable

    d, cmap, norm = _heat_scale(perturbation)
    h, w = d.shape
    fig = _figure(3.2, 2.9 * h / max(w, 1) + 0.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(perturbation_colours(perturbation), interpolation="nearest")
    ax.set_axis_off()
    cb = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.046, pad=0.03)
    cb.set_label(f"δ ({DELTA_UNITS})", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    return figure_png(fig)


def amplified_perturbation_png(perturbation: np.ndarray) -> tuple[bytes, float]:
    """0.5 + k·δ with k chosen so the largest |δ| reaches 0 or 1; returns (PNG, k)."""
    d = np.asarray(perturbation, dtype=np.float64)
    m = float(np.abs(d).max())
    k = 0.5 / m if m > 0 else 1.0
    return _image_png(np.clip(0.5 + k * d, 0.0, 1.0)), k


def probability_chart_png(classes: Sequence[str], before: dict[str, float], after: dict[str, float],
                          true_label: str | None = None, target: str | None = None) -> bytes:
    """Grouped bars: class probabilities of the original and the adversarial image."""
    fig = _figure(5.6, 0.5 + 0.55 * len(classes))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(classes))
    ax.barh(y - 0.2, [before.get(c, 0.0) for c in classes], height=0.38, color="#4c72b0", label="original")
    ax.barh(y + 0.2, [after.get(c, 0.0) for c in classes], height=0.38, color="#dd8452", label="adversarial")
    labels = []
    for c in classes:
        tag = " (true)" if c == true_label else ""
        tag += " (target)" if c == target else ""
        labels.append(c + tag)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return figure_png(fig)


def history_chart_png(history: Sequence[Any], classes: Sequence[str]) -> bytes | None:
    """Loss and class probabilities per iteration (None when the history is empty)."""
    if not history:
        return None
    steps = [ev.step for ev in history]
    fig = _figure(6.4, 4.2)
    ax1 = fig.add_subplot(2, 1, 1)
    ax1.plot(steps, [ev.loss for ev in history], marker="o" if len(steps) < 30 else None, color="#222222")
    ax1.set_ylabel("loss")
    ax1.grid(alpha=0.3)
    ax2 = fig.add_subplot(2, 1, 2, sharex=ax1)
    for c in classes:
        ax2.plot(steps, [ev.probs.get(c, np.nan) for ev in history], marker="o" if len(steps) < 30 else None,
                 label=c)
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_ylabel("probability")
    ax2.set_xlabel("iteration")
    from matplotlib.ticker import MaxNLocator

    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="best")
    return figure_png(fig)


def _bar_chart_png(labels: Sequence[str], values: Sequence[float], xlabel: str) -> bytes:
    fig = _figure(6.0, 0.6 + 0.35 * len(labels))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(labels))
    ax.barh(y, values, color="#4c72b0")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.0, max(values, default=1.0)))
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return figure_png(fig)
