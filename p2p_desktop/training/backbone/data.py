"""The phantoms the backbone learns from, as arrays with labels, prompts and seeds; the pixel
space of the VAE (grey [0, 1] <-> three channels in [-1, 1]); their latents."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2p_desktop.io.outputs import atomic_replace_bytes, atomic_replace_text
from p2p_desktop.training.backbone.model import RESOLUTION

__all__ = ["TRAIN_SEED_START", "EVAL_SEED_START", "TEST_SEED_START", "PhantomData", "load_phantom_data",
           "load_paired_phantom_data", "cached_data", "to_model_space", "to_grey", "encode_latents"]

TRAIN_SEED_START = 0
EVAL_SEED_START = 1_000_000   # held out: quality figures in card.json
TEST_SEED_START = 1_100_000   # held out: unit tests


@dataclass
class PhantomData:
    """Phantom images (N, H, W) float32 in [0, 1] with labels, prompts and seeds."""

    images: np.ndarray
    labels: list[str]
    prompts: list[str]        # descriptor prompts ("ultrasound image of ... , oval, ...")
    class_prompts: list[str]  # bare class prompts (what P2P starts from)
    seeds: list[int]

    def __len__(self) -> int:
        return len(self.seeds)


def _phantom_data(phantoms: Sequence, size: int) -> PhantomData:
    """Stack generated phantoms with their labels, prompts and seeds."""
    from p2p_desktop.phantoms import class_prompt

    images = np.empty((len(phantoms), size, size), np.float32)
    for i, ph in enumerate(phantoms):
        images[i] = ph.image
    return PhantomData(images, [ph.label for ph in phantoms], [ph.prompt for ph in phantoms],
                       [class_prompt(ph.label) for ph in phantoms], [ph.seed for ph in phantoms])


def load_phantom_data(start: int, n: int, size: int = RESOLUTION) -> PhantomData:
    """Generate ``n`` phantoms from seeds ``start ..`` (labels balanced by ``seed % 3``)."""
    from p2p_desktop.phantoms import generate_phantom

    return _phantom_data([generate_phantom(start + i, size=size) for i in range(n)], size)


def load_paired_phantom_data(start: int, n_seeds: int, size: int = RESOLUTION,
                             shared_site: bool = False) -> PhantomData:
    """Seeds ``start ..`` each drawn as every class, in the order (s, CLASSES[0]), (s, CLASSES[1]), …

    The phantom generator keeps the breast of a seed fixed across labels, so each triplet is
    one breast with a benign mass, a malignant mass and no mass (with ``shared_site`` both
    masses sit at the same spot: see :func:`p2p_desktop.phantoms.generate_phantom`)."""
    from p2p_desktop.phantoms import CLASSES, generate_phantom

    return _phantom_data([generate_phantom(start + s, label, size=size, shared_site=shared_site)
                          for s in range(n_seeds) for label in CLASSES], size)

def cached_data(folder: Path, stem: str, make: Callable[[], object], fields: Sequence[str], cls):
    """``make()``'s data (an object with ``images`` and the JSON-able ``fields``) kept in ``folder``
    as ``stem.npy`` + ``stem.json`` (each written atomically), so a resumed run skips generating
    it; read back as ``cls(images, **fields)``."""
    img_f, meta_f = folder / f"{stem}.npy", folder / f"{stem}.json"
    if img_f.is_file() and meta_f.is_file():
        return cls(np.load(img_f, allow_pickle=False), **json.loads(meta_f.read_text(encoding="utf-8")))
    data = make()
    atomic_replace_bytes(img_f, lambda fh: np.save(fh, data.images, allow_pickle=False))
    atomic_replace_text(meta_f, json.dumps({k: getattr(data, k) for k in fields}))
    return data


#: The fields of :class:`PhantomData` besides its images.
PHANTOM_FIELDS = ("labels", "prompts", "class_prompts", "seeds")


def _cached_phantoms(folder: Path, start: int, n: int, paired: bool = False) -> PhantomData:
    """Phantom data kept in ``folder`` (npy + json) so a resumed run skips generating it."""
    stem = f"phantoms-{'paired-' if paired else ''}{start}-{n}"
    return cached_data(folder, stem, lambda: load_paired_phantom_data(start, n) if paired
                       else load_phantom_data(start, n), PHANTOM_FIELDS, PhantomData)


def to_model_space(images) -> torch.Tensor:  # noqa: F821
    """(N, H, W) grey in [0, 1] -> (N, 3, H, W) in [-1, 1], as SD's VAE expects."""
    import torch

    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    return (x * 2 - 1).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def to_grey(x) -> torch.Tensor:  # noqa: F821
    """(N, 3, H, W) in [-1, 1] -> (N, H, W) grey in [0, 1] (channel mean, clamped)."""
    return ((x.mean(1) + 1) / 2).clamp(0, 1)


def encode_latents(vae, images: np.ndarray, batch: int = 32):
    """Posterior means of (N, H, W) phantoms, unscaled (N, 4, H/2, W/2)."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(vae.encode(to_model_space(images[i:i + batch])).latent_dist.mean)
    return torch.cat(out)
