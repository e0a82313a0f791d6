"""Synthetic breast-ultrasound phantoms: labelled B-mode images with lesion masks and prompts.

A phantom is fully determined by ``(seed, label, size)``. The breast (tissue layers and their
speckle) depends on the seed alone and the mass on the seed and the label, so
``generate_phantom(s, "benign")`` and ``generate_phantom(s, "normal")`` show the same breast
with and without a mass. The anatomy is drawn in millimetres, so one seed gives the same
scene at 128 and at 256 pixels (the speckle is resampled).

>>> ph = generate_phantom(7)                      # label from the seed (7 % 3 -> "malignant")
>>> ph.image.shape, ph.image.dtype, ph.label
((128, 128), dtype('float32'), 'malignant')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2p_desktop.errors import InputError

__all__ = ["Phantom", "CLASSES", "generate_phantom", "generate_batch", "class_prompt", "shared_site_of",
           "lesion_site_of",
           "write_png_dataset", "write_dicom_dataset", "MIN_SIZE", "MAX_SIZE"]

CLASSES = ("benign", "malignant", "normal")
MIN_SIZE, MAX_SIZE = 32, 1024
_MAX_SEED = 2 ** 63 - 1


@dataclass(frozen=True)
class Phantom:
    """One synthetic B-mode image with its ground truth."""

    image: np.ndarray              # float32 (H, W) in [0, 1], B-mode grey
    mask: np.ndarray               # bool (H, W), the lesion; all False for normal
    label: str                     # "benign" | "malignant" | "normal"
    descriptors: tuple[str, ...]   # BI-RADS words of what was drawn
    prompt: str                    # class prompt + descriptors
    seed: int
    params: dict                   # sampled parameters (JSON-serialisable)


def class_prompt(label: str) -> str:
    """``"ultrasound image of {benign|malignant|no} tumor in breast"``."""
    _check_label(label)
    word = "no" if label == "normal" else label
    return f"ultrasound image of {word} tumor in breast"


def _check_label(label) -> str:
    if label not in CLASSES:
        raise InputError(f"unknown phantom label {label!r}; expected one of {', '.join(CLASSES)}")
    return label


def _check_seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"phantom seed must be an integer, got {seed!r}")
    if not 0 <= int(seed) <= _MAX_SEED:
        raise InputError(f"phantom seed must be in 0..2**63-1, got {seed}")
    return int(seed)


def _check_size(size) -> int:
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
        raise InputError(f"phantom size must be an integer number of pixels, got {size!r}")
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise InputError(f"phantom size must be {MIN_SIZE}..{MAX_SIZE} pixels, got {size}")
    return int(size)


def _round(obj):
    """Floats rounded for a readable, JSON-serialisable parameter record."""
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v) for v in obj]
    if isinstance(obj, np.generic):
        return _round(obj.item())
    return obj


def generate_phantom(seed: int, label: str | None = None, size: int = 128,
                     shared_site: bool = False, site: tuple[float, float] | None = None,
                     appearance: dict | None = None, descriptors: dict | None = None,
                     edit_seed: int = 0) -> Phantom:
    """Simulate one ``size``×``size`` breast B-mode phantom.

    ``label`` None takes ``CLASSES[seed % 3]`` (balanced thirds over consecutive seeds).
    ``shared_site`` places the mass where the seed alone decides (not the seed and the label),
    so the benign and malignant phantoms of one seed have their masses at the same spot and the
    normal one shows the breast around that spot without a mass: counterfactual triplets, used
    to train the demo backbone's text conditioning. Off by default (the published datasets).
    ``site`` = ``(x_frac, depth_frac)`` places the mass there instead (it overrides
    ``shared_site``): the label-preservation oracle draws another class's mass where the
    source phantom's mass is (:mod:`p2p_desktop.phantoms.oracle`).
    ``appearance`` overrides how the same scene is imaged, never what it shows: any probe or
    display setting of :func:`~p2p_desktop.phantoms.simulate.sample_imaging` (``gain_db``,
    ``dynamic_range_db``, ``tgc_compensation``, ``smoothing``, ``sigma_lateral_mm`` ...),
    ``speckle_seed`` (another speckle draw), and for a mass ``posterior_scale`` (× its
    posterior shadowing/enhancement in dB) and ``edge_scale`` (× its margin's blur width).
    The label, the mass's shape and site, and the mask stay those of ``(seed, label)``; the
    appearance-only text conditioning of a demo backbone trains on such pairs
    (:mod:`p2p_desktop.training.appearance`).
    ``descriptors`` = ``{descriptor: value}`` redraws the mass with those BI-RADS descriptors set
    (``margin``, ``shape``, ``orientation``, ``echo_pattern``, ``posterior``, ``calcifications``,
    ``halo``; values in :data:`~p2p_desktop.phantoms.anatomy.DESCRIPTOR_VALUES`), everything else
    about the breast and the mass kept; the features a new value needs (spicules, posterior
    strength ...) are drawn from ``edit_seed``. The label stays ``label``: the oracle renders
    such descriptor counterfactuals, and validation sets use them as descriptor swaps.
    """
    from p2p_desktop.phantoms import anatomy, simulate

    seed = _check_seed(seed)
    size = _check_size(size)
    label = CLASSES[seed % 3] if label is None else _check_label(label)

    look = dict(appearance or {})
    speckle_seed = look.pop("speckle_seed", None)
    posterior_scale, edge_scale = float(look.pop("posterior_scale", 1.0)), float(look.pop("edge_scale", 1.0))

    # Independent streams: breast (seed), mass (seed, label), probe (seed), speckle (seed, size).
    rng_tissue = np.random.default_rng([seed, 1])
    rng_lesion = np.random.default_rng([seed, 2, CLASSES.index(label)])
    rng_probe = np.random.default_rng([seed, 3])
    rng_speckle = np.random.default_rng([seed, 4, size] if speckle_seed is None
                                        else [seed, 6, _check_seed(speckle_seed), size])

    tissue = anatomy.sample_tissue(rng_tissue)
    grid = anatomy.Grid(size, size, tissue["depth_mm"], tissue["depth_mm"])
    imaging = simulate.sample_imaging(rng_probe, grid.depth_mm)
    unknown = sorted(set(look) - set(imaging))
    if unknown:
        raise InputError(f"unknown phantom appearance setting(s) {', '.join(unknown)}; expected speckle_seed, "
                         f"posterior_scale, edge_scale or one of {', '.join(sorted(imaging))}")
    imaging.update({k: type(imaging[k])(v) if not isinstance(imaging[k], list) else list(v) for k, v in look.items()})
    maps, layout = anatomy.build_tissue(grid, tissue, rng_tissue)
    params: dict = {"label": label, "size": size, "field_of_view_mm": [grid.depth_mm, grid.width_mm],
                    "tissue": tissue, **layout["info"], "imaging": imaging}
    if label == "normal":
        descriptors = anatomy.tissue_descriptors(tissue)
    else:
        lesion = anatomy.sample_lesion(rng_lesion, label)
        if descriptors:
            rng_edit = np.random.default_rng([seed, 7, CLASSES.index(label), _check_seed(edit_seed)])
            for name, value in descriptors.items():
                try:
                    lesion = anatomy.set_descriptor(lesion, name, value, rng_edit)
                except ValueError as exc:
                    raise InputError(str(exc)) from None
        lesion["posterior_db"] *= posterior_scale
        lesion["edge_mm"] *= edge_scale
        if site is not None:
            lesion["x_frac"], lesion["depth_frac"] = float(site[0]), float(site[1])
        elif shared_site:
            lesion["x_frac"], lesion["depth_frac"] = shared_site_of(seed)
        placement = anatomy.add_lesion(maps, grid, lesion, tissue, layout["bounds"], imaging["f0_mhz"],
                                       rng_lesion)
        descriptors = anatomy.lesion_descriptors(lesion)
        params["lesion"] = {**lesion, **placement}
    image, _envelope = simulate.form_bmode(maps, grid, imaging, rng_speckle)
    prompt = ", ".join([class_prompt(label), *descriptors])
    return Phantom(image=image, mask=maps.mask, label=label, descriptors=tuple(descriptors), prompt=prompt,
                   seed=seed, params=_round(params))


def shared_site_of(seed: int) -> tuple[float, float]:
    """``(x_frac, depth_frac)`` of the mass of ``seed``'s phantoms drawn with ``shared_site``."""
    rng_site = np.random.default_rng([_check_seed(seed), 5])
    return float(rng_site.uniform(-0.25, 0.25)), float(rng_site.uniform(0.15, 0.85))


def lesion_site_of(seed: int, label: str) -> tuple[float, float] | None:
    """``(x_frac, depth_frac)`` of the mass of ``generate_phantom(seed, label)`` (default
    placement, exact values, not the rounded record); None for "normal"."""
    from p2p_desktop.phantoms import anatomy

    if _check_label(label) == "normal":
        return None
    lesion = anatomy.sample_lesion(np.random.default_rng([_check_seed(seed), 2, CLASSES.index(label)]), label)
    return float(lesion["x_frac"]), float(lesion["depth_frac"])


def generate_batch(seeds: Iterable[int], labels: Sequence[str | None] | str | None = None,
                   size: int = 128) -> list[Phantom]:
    """Phantoms for each seed; ``labels`` is None, one label for all, or one per seed."""
    seeds = list(seeds)
    if labels is None or isinstance(labels, str):
        labels = [labels] * len(seeds)
    labels = list(labels)
    if len(labels) != len(seeds):
        raise InputError(f"generate_batch: {len(seeds)} seeds but {len(labels)} labels")
    return [generate_phantom(s, lab, size) for s, lab in zip(seeds, labels)]


def write_png_dataset(out_dir: str | Path, n: int, seed: int, size: int = 256) -> list[Path]:
    """Write ``n`` phantoms in BUSI layout (see :mod:`p2p_desktop.phantoms.dataset`)."""
    from p2p_desktop.phantoms.dataset import write_png_dataset as _write

    return _write(out_dir, n, seed, size)


def write_dicom_dataset(out_dir: str | Path, n: int, seed: int, size: int = 256) -> list[Path]:
    """Write ``n`` phantoms as ultrasound DICOM files (see :mod:`p2p_desktop.phantoms.dataset`)."""
    from p2p_desktop.phantoms.dataset import write_dicom_dataset as _write

    return _write(out_dir, n, seed, size)
