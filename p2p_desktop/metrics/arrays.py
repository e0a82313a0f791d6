"""The one array shape the metrics work in: (H, W, C) float, a grey image as (H, W, 1)."""

from __future__ import annotations

import numpy as np

__all__ = ["as_hwc"]


def as_hwc(a, dtype=np.float32) -> np.ndarray:
    """``a`` as an (H, W, C) array of ``dtype``; an (H, W) image gains a channel axis."""
    a = np.asarray(a, dtype=dtype)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {a.shape}")
    return a
