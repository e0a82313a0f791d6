"""Fréchet Inception Distance (FID) between two sets of images.

FID (Heusel et al., NeurIPS 2017) is the Fréchet distance between Gaussians fitted to the
InceptionV3 pool3 features (2048-d, after global average pooling) of two image sets::

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

The network's weights cannot be downloaded here, so FID is computed only when one of these
files is already in the torch hub cache (``torch.hub.get_dir()/checkpoints``):

* ``pt_inception-2015-12-05-6726825d.pth`` — pytorch-fid's port of the original TensorFlow
  FID network (preferred: its values are comparable with published FIDs);
* ``inception_v3_google-0cc3c7bd.pth`` — torchvision's ImageNet InceptionV3 (values are close
  to, but not exactly, the standard FID).

Both are read with ``torch.load(weights_only=True)``; nothing is ever downloaded. Without
either, :func:`fid_status` says which file is missing and where it goes, and callers report
FID as unavailable (``None``), never a made-up number.

FID on few samples is biased upward (and with fewer than 2048 samples the covariance is
rank-deficient): compare values only between sets of similar size.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FEATURE_DIM",
    "PYTORCH_FID_FILE",
    "TORCHVISION_FILE",
    "SMALL_SAMPLE_NOTE",
    "FIDStatus",
    "InceptionFeatures",
    "fid_status",
    "build_inception",
    "load_inception",
    "feature_statistics",
    "frechet_distance",
    "fid_from_features",
]

FEATURE_DIM = 2048
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
TORCHVISION_FILE = "inception_v3_google-0cc3c7bd.pth"
SMALL_SAMPLE_NOTE = ("FID on few samples is biased upward (the 2048-d covariance is rank-deficient below "
                     "2048 images): compare FIDs only between sets of similar size")

_cache: dict[tuple[str, str], InceptionFeatures] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class FIDStatus:
    """Which InceptionV3 weights are present: ``path`` is None when none are, ``note`` says why."""

    path: Path | None
    flavour: str  # "pytorch-fid", "torchvision" or ""
    note: str

    @property
    def available(self) -> bool:
        return self.path is not None


def _checkpoints_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def fid_status() -> FIDStatus:
    """Locate local InceptionV3 weights (pytorch-fid's first, then torchvision's)."""
    folder = _checkpoints_dir()
    for name, flavour in ((PYTORCH_FID_FILE, "pytorch-fid"), (TORCHVISION_FILE, "torchvision")):
        if (folder / name).is_file():
            note = ("" if flavour == "pytorch-fid" else
                    f"FID uses torchvision's InceptionV3 ({TORCHVISION_FILE}); values are close to but not "
                    f"identical with the standard (TensorFlow / pytorch-fid) FID — put {PYTORCH_FID_FILE} "
                    f"in {folder} for the standard one")
            return FIDStatus(folder / name, flavour, note)
    return FIDStatus(None, "", (
        f"FID not computed: no InceptionV3 weights on this machine; put {PYTORCH_FID_FILE} (pytorch-fid, "
        f"standard FID) or {TORCHVISION_FILE} (torchvision) in {folder} to enable FID "
        "(`p2p-desktop models import-weights FILE` checks the file's hash and puts it there)"))


# -- the network ------------------------------------------------------------------------------
def _fid_blocks():
    """InceptionV3 blocks as in the TensorFlow FID graph: its pooling branches differ from torchvision's."""
    import torch.nn.functional as F
    from torchvision.models.inception import InceptionA, InceptionC, InceptionE

    def swap_pool(outputs, block, x, pool):
        outputs[-1] = block.branch_pool(pool(x))
        return outputs

    def avg_no_pad(x):
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    def max_pool(x):
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)

    class FIDInceptionA(InceptionA):
        def _forward(self, x):
            return swap_pool(super()._forward(x), self, x, avg_no_pad)

    class FIDInceptionC(InceptionC):
        def _forward(self, x):
            return swap_pool(super()._forward(x), self, x, avg_no_pad)

    class FIDInceptionE1(InceptionE):
        def _forward(self, x):
            return swap_pool(super()._forward(x), self, x, avg_no_pad)

    class FIDInceptionE2(InceptionE):
        def _forward(self, x):
            return swap_pool(super()._forward(x), self, x, max_pool)

    return FIDInceptionA, FIDInceptionC, FIDInceptionE1, FIDInceptionE2


def build_inception(flavour: str):
    """An untrained InceptionV3 whose state-dict keys match the given weights file flavour."""
    from torchvision.models.inception import Inception3

    if flavour == "torchvision":
        return Inception3(num_classes=1000, aux_logits=True, transform_input=False, init_weights=False)
    if flavour == "pytorch-fid":
        a, c, e1, e2 = _fid_blocks()
        model = Inception3(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
            old = getattr(model, name)
            setattr(model, name, a(old.branch1x1.conv.in_channels, old.branch_pool.conv.out_channels))
        for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            old = getattr(model, name)
            setattr(model, name, c(768, old.branch7x7_1.conv.out_channels))
        model.Mixed_7b = e1(1280)
        model.Mixed_7c = e2(2048)
        return model
    raise ValueError(f"unknown InceptionV3 flavour {flavour!r}")


class InceptionFeatures:
    """Pool3 (2048-d) features of (H, W, C) images in [0, 1]: resized to 299 px, scaled to [-1, 1]."""

    def __init__(self, model, flavour: str, path: Path | None = None, device: str = "cpu") -> None:
        import torch

        self.flavour = flavour
        self.path = path
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def _pool3(self, x):
        m = self.model
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                     "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"):
            x = getattr(m, name)(x)
        return x.flatten(1)

    def __call__(self, images: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """(N, 2048) float64 features of N images (grey images are repeated to 3 channels)."""
        import torch
        import torch.nn.functional as F

        feats = []
        for start in range(0, len(images), batch_size):
            batch = []
            for img in images[start:start + batch_size]:
                a = np.asarray(img, dtype=np.float32)
                if a.ndim == 2:
                    a = a[:, :, None]
                t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]
                if t.shape[1] == 1:
                    t = t.expand(-1, 3, -1, -1)
                t = F.interpolate(t.clamp(0, 1), size=(299, 299), mode="bilinear", align_corners=False)
                batch.append(t)
            x = torch.cat(batch).to(self.device) * 2 - 1
            with torch.no_grad():
                feats.append(self._pool3(x).double().cpu().numpy())
        if not feats:
            return np.zeros((0, FEATURE_DIM))
        return np.concatenate(feats)


def load_inception(device: str = "cpu") -> InceptionFeatures | None:
    """The feature extractor from local weights (cached), or None when no weights are present.

    A present file that does not fit the network raises :class:`~p2p_desktop.errors.ModelError`.
    """
    from p2p_desktop.errors import ModelError
    from p2p_desktop.models.weights import load_state_dict

    status = fid_status()
    if status.path is None:
        return None
    key = (str(status.path), str(device))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        import torch

        state = load_state_dict(status.path)  # torch.load(weights_only=True); refuses pickled code
        with torch.device("meta"):  # no random init: every tensor comes from the file
            model = build_inception(status.flavour)
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError:
            raise ModelError(f"{status.path.name} does not hold {status.flavour} InceptionV3 weights "
                             f"(keys or shapes differ); replace it with the original file") from None
        _cache[key] = InceptionFeatures(model, status.flavour, status.path, device=device)
        return _cache[key]


# -- the distance ---------------------------------------------------------------------------------
def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, N ≥ 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """d² = ‖μ₁−μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½) between two Gaussians.

    ``scipy.linalg.sqrtm`` of a product of (near-)singular covariances can be non-finite or carry
    small imaginary parts from round-off: the first is retried with ``eps``·I added to both
    covariances, the second is dropped (the trace of the real part is used).
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: μ {mu1.shape} / {mu2.shape}, Σ {s1.shape} / {s2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products are expected and handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # round-off can give tiny negatives for identical sets


def fid_from_features(features1: np.ndarray, features2: np.ndarray, reduce: bool | None = None) -> float:
    """FID between two (N, D) feature sets (each N ≥ 2).

    With fewer samples than dimensions (N₁ + N₂ ≤ D, the usual case for a few hundred images
    and 2048-d features) both covariances live in the span of the centred samples; the
    matrix square root is then taken in that (N₁+N₂)-d subspace, which gives the same
    value as the full D×D computation, exactly and much faster (``reduce=None``: automatic).
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    mu1, s1 = feature_statistics(f1)
    mu2, s2 = feature_statistics(f2)
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sizes differ: {f1.shape[1]} vs {f2.shape[1]}")
    if reduce is None:
        reduce = f1.shape[0] + f2.shape[0] <= f1.shape[1]
    if not reduce:
        return frechet_distance(mu1, s1, mu2, s2)
    centred = np.concatenate([f1 - mu1, f2 - mu2])
    basis, _ = np.linalg.qr(centred.T)  # (D, N1+N2), orthonormal columns spanning both sample sets
    p1, p2 = (f1 - mu1) @ basis, (f2 - mu2) @ basis
    zero = np.zeros(basis.shape[1])
    diff = mu1 - mu2
    spread = frechet_distance(zero, np.cov(p1, rowvar=False), zero, np.cov(p2, rowvar=False))
    return max(float(diff @ diff) + spread, 0.0)
