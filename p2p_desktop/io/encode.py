"""Encode images and arrays to bytes for the output writer (deterministic: same input, same bytes)."""

from __future__ import annotations

import io

import numpy as np

__all__ = ["encode_png", "encode_npy"]


def encode_png(image: np.ndarray, bits: int = 8) -> bytes:
    """(H, W, C) float [0,1] -> PNG bytes; grey keeps 16-bit depth when ``bits > 8``."""
    from PIL import Image

    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2 and bits > 8:
        pil = Image.fromarray(np.round(np.clip(arr, 0, 1) * 65535).astype(np.uint16))
    else:
        pil = Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def encode_npy(array: np.ndarray) -> bytes:
    """An array as ``.npy`` file bytes (no pickled objects)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()
