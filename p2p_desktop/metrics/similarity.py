"""Image-similarity metrics between an original and an adversarial image (both [0,1], HxWxC).

Two protocols (``METRIC_PROTOCOLS``):

``native``  the images as they are (source geometry and channels): SSIM with scikit-image's
            default 7×7 uniform window, LPIPS (AlexNet) on the full image.
``paper``   as the P2P authors measured: both images converted to RGB, Resize(256) (shorter side,
            bilinear, antialiased) + CenterCrop(256), then SSIM with an 11×11 Gaussian window,
            σ = 1.5 (``pytorch_msssim.ssim``) and LPIPS (AlexNet) on those crops. FID per class
            averaged over classes is computed by the batch evaluation.

LPIPS needs torchvision's ImageNet AlexNet weights, which cannot be downloaded here: it is
computed only when the file is already in the torch hub cache, otherwise it is ``None`` and
a note says which file is missing and where it goes. No number is ever made up.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np

from p2p_desktop.metrics.arrays import as_hwc

__all__ = ["ssim", "psnr", "lpips_status", "lpips_distance", "lpips_net", "ALEXNET_FILE", "METRIC_PROTOCOLS",
           "paper_view", "ssim_paper", "paper_metrics"]

METRIC_PROTOCOLS = ("paper", "native")
PAPER_SIZE = 256

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
_lpips_nets: dict[str, object] = {}
_lpips_lock = threading.Lock()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two [0,1] images (NaN when smaller than SSIM's 7-pixel window)."""
    from skimage.metrics import structural_similarity

    a, b = as_hwc(a, np.float64), as_hwc(b, np.float64)
    if min(a.shape[:2]) < 7:
        return float("nan")
    if a.shape[2] == 1:
        return float(structural_similarity(a[:, :, 0], b[:, :, 0], data_range=1.0))
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=2))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two [0,1] images, in dB (inf when identical)."""
    mse = float(np.mean((as_hwc(a, np.float64) - as_hwc(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _alexnet_path() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def lpips_status() -> tuple[bool, str]:
    """(available, note). Available only when AlexNet's weights are on local disk."""
    path = _alexnet_path()
    if path.is_file():
        return True, ""
    return False, (f"LPIPS not computed: its AlexNet backbone weights ({ALEXNET_FILE}) are not on this "
                   f"machine; `p2p-desktop models import-weights FILE` checks it and puts it in {path.parent}")


def lpips_net(device="cpu"):
    """The LPIPS (AlexNet) network on ``device``, in eval mode without gradients to its weights,
    made once per device and shared by the metrics and the attacks (P2P's LPIPS fidelity).
    Callers check :func:`lpips_status` first: the AlexNet weights are never downloaded."""
    key = str(device)
    with _lpips_lock:
        if key not in _lpips_nets:
            import lpips

            net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
            net.requires_grad_(False)
            _lpips_nets[key] = net
        return _lpips_nets[key]


def lpips_distance(a: np.ndarray, b: np.ndarray) -> float | None:
    """LPIPS (AlexNet) distance, or None when the backbone weights are missing."""
    ok, _ = lpips_status()
    if not ok:
        return None
    import torch

    net = lpips_net("cpu")

    def prep(x):
        x = as_hwc(x)
        if x.shape[2] == 1:
            x = np.repeat(x, 3, axis=2)
        return torch.from_numpy(x.transpose(2, 0, 1))[None] * 2 - 1

    with torch.no_grad():
        return float(net(prep(a), prep(b)).item())


# -- the paper's protocol -------------------------------------------------------------------------
def paper_view(a: np.ndarray):
    """HxW(xC) image in [0,1] -> (1, 3, 256, 256) float32 tensor: RGB, Resize(256) + CenterCrop(256)
    (torchvision's transforms, bilinear with antialiasing), as the P2P authors' metric script."""
    import torch
    from torchvision.transforms import v2 as T

    x = as_hwc(a)
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    t = T.CenterCrop(PAPER_SIZE)(T.Resize(PAPER_SIZE, antialias=True)(t))
    return t.clamp(0, 1)


def ssim_paper(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the paper's protocol: 11×11 Gaussian window, σ = 1.5, on the 256 px RGB views."""
    from pytorch_msssim import ssim as _ssim

    return float(_ssim(paper_view(a).double(), paper_view(b).double(), data_range=1.0, size_average=True,
                       win_size=11, win_sigma=1.5))


def lpips_paper(a: np.ndarray, b: np.ndarray) -> float | None:
    """LPIPS (AlexNet) on the paper's 256 px RGB views, or None when the weights are missing."""
    ok, _ = lpips_status()
    if not ok:
        return None
    va, vb = paper_view(a)[0].numpy().transpose(1, 2, 0), paper_view(b)[0].numpy().transpose(1, 2, 0)
    return lpips_distance(va, vb)


def paper_metrics(original: np.ndarray, adversarial: np.ndarray) -> tuple[dict, list[str]]:
    """{"ssim", "lpips"} under the paper's protocol; returns (metrics, notes)."""
    notes: list[str] = []
    ok, note = lpips_status()
    if not ok:
        notes.append(note)
    return {"ssim": ssim_paper(original, adversarial),
            "lpips": lpips_paper(original, adversarial) if ok else None}, notes
