"""The adversarial image as a 16-bit TIFF (``<stem>_adv.tif``), for tools that read TIFF stacks.

Grey images are written as one 16-bit channel, colour ones as 16-bit RGB; values are the
written image's [0,1] intensities scaled to 0..65535 (an 8-bit source's levels map exactly,
``v * 257``). Written with tifffile, which the imaging stack already brings.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["encode_tiff16", "write_tiff"]


def encode_tiff16(image: np.ndarray) -> bytes:
    """(H, W, C) float [0,1] -> 16-bit TIFF bytes (grey when C is 1, RGB when C is 3)."""
    import tifffile

    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    data = np.round(np.clip(arr, 0.0, 1.0) * 65535.0).astype(np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, data, photometric="rgb" if data.ndim == 3 else "minisblack", software="p2p-desktop")
    return buf.getvalue()


def write_tiff(result, study, outs):
    """Write the adversarial image through ``outs`` (kind ``tiff``); returns its path."""
    from p2p_desktop.export.images import output_stem

    return outs.write_bytes(f"{output_stem(study, result.attack)}_adv.tif", encode_tiff16(result.adversarial),
                            kind="tiff")
