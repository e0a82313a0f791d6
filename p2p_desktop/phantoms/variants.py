"""Labelled variants of a phantom: what the label-preservation oracle must keep, and what it must flag.

A phantom is determined by its generator record ``(seed, label, size)``, so the generator can
draw the *same breast* changed in a known way. Each variant has a kind and a truth, fixed by
how it was made, never by what any oracle says about it:

=============  ==========  ====================================================================
kind           truth       how it is made
=============  ==========  ====================================================================
acquisition    kept        the same scene imaged again: another speckle draw, and gain, dynamic
                           range, depth compensation and scanner smoothing redrawn over the
                           ranges the appearance-only backbone trains on (``speckle``: speckle
                           only)
noise          kept        the source plus bounded pixel noise, L∞ 8/255 or 0.05: random signs
                           per pixel, a smooth random field (2 mm), or the sign of the
                           difference toward another class's rendering (what FGSM does when the
                           classifier's gradient points at the other class)
descriptor     semantic    the same mass with one BI-RADS descriptor (margin, shape, orientation,
                           echo pattern, posterior features, calcifications, echogenic halo) set
                           to the other class's value, its features drawn afresh
class          semantic    the same breast drawn as each other class: the other class's mass at
                           the source's site imaged again (new speckle), and a freshly drawn mass
                           of that class (for a normal source at that class's own site, not the
                           site the oracle draws its counterfactuals at)
=============  ==========  ====================================================================

The descriptor values "toward the other class" (:func:`descriptor_swaps`) are the ones the
oracle also renders; a variant draws the new features (spicules, outline, posterior strength,
calcification spots ...) from another stream than the oracle's counterfactual, so it is a
different mass with the same descriptor, not the oracle's own reference image.

:func:`make_variants` returns them in memory; ``p2p-desktop phantoms ... --variants
acquisition,descriptor,class,noise`` writes each as ``VARIANT.png`` beside its source with a
sidecar ``VARIANT.json`` = ``{"source", "kind", "truth", ...}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from p2p_desktop.errors import InputError

__all__ = ["Variant", "KINDS", "TRUTH", "NOISE_EPS", "descriptor_swaps", "make_variants", "parse_kinds",
           "class_swap_descriptors", "variant_names"]

KINDS = ("acquisition", "descriptor", "class", "noise")
TRUTH = {"acquisition": "kept", "noise": "kept", "descriptor": "semantic", "class": "semantic"}
NOISE_EPS = (8.0 / 255.0, 0.05)
_EDIT_STREAM = 1000  # edit seeds of variants start here; the oracle's counterfactuals use 0

# The other class's values of each diagnostic descriptor (the generator's typical draws).
_TOWARD = {
    "benign": {"margin": ("indistinct", "angular", "microlobulated", "spiculated"), "shape": ("irregular",),
               "orientation": ("not parallel",), "echo_pattern": ("heterogeneous",),
               "posterior": ("posterior shadowing",), "calcifications": (True,), "halo": (True,)},
    "malignant": {"margin": ("circumscribed",), "shape": ("oval",), "orientation": ("parallel",),
                  "echo_pattern": ("anechoic",), "posterior": ("posterior enhancement",),
                  "calcifications": (False,), "halo": (False,)},
}
_CURRENT = {"margin": lambda p, v: v in p["margins"] and len(p["margins"]) == 1,
            "shape": lambda p, v: p["shape"] == v, "orientation": lambda p, v: p["orientation"] == v,
            "echo_pattern": lambda p, v: p["echo_pattern"] == v, "posterior": lambda p, v: p["posterior"] == v,
            "calcifications": lambda p, v: bool(p["calcifications"]) == v, "halo": lambda p, v: bool(p["halo"]) == v}


@dataclass
class Variant:
    """One labelled variant of a phantom (``image`` grey float in [0, 1])."""

    name: str
    kind: str
    truth: str
    image: np.ndarray
    detail: dict = field(default_factory=dict)


def descriptor_swaps(label: str, lesion: dict | None) -> list[tuple[str, object]]:
    """``[(descriptor, value)]``: each descriptor of the mass ``lesion`` (a phantom's
    ``params["lesion"]``) set to a value of the other class it does not have already."""
    if label == "normal" or not lesion:
        return []
    out = []
    for name, values in _TOWARD[label].items():
        for v in values:
            if name == "margin" and v in lesion["margins"]:
                continue
            if not _CURRENT[name](lesion, v):
                out.append((name, v))
    return out


def class_swap_descriptors(label: str, rng: np.random.Generator) -> dict:
    """Descriptor values typical of ``label`` drawn from ``rng``: a freshly drawn mass of that class."""
    if label == "malignant":
        return {"margin": str(rng.choice(["spiculated", "angular", "microlobulated", "indistinct"])),
                "shape": "irregular", "orientation": str(rng.choice(["parallel", "not parallel"], p=[0.2, 0.8])),
                "echo_pattern": str(rng.choice(["heterogeneous", "hypoechoic"])),
                "posterior": str(rng.choice(["posterior shadowing", "no posterior features"], p=[0.7, 0.3]))}
    return {"margin": "circumscribed", "shape": str(rng.choice(["oval", "round"], p=[0.75, 0.25])),
            "orientation": "parallel", "echo_pattern": str(rng.choice(["anechoic", "hypoechoic"])),
            "posterior": str(rng.choice(["posterior enhancement", "no posterior features"], p=[0.7, 0.3])),
            "calcifications": False, "halo": False}


def parse_kinds(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"acquisition,noise"`` -> ("acquisition", "noise"); unknown kinds are an :class:`InputError`."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    bad = [t for t in items if t not in KINDS]
    if bad or not items:
        raise InputError(f"unknown variant kind(s) {', '.join(bad) or '(none given)'}; expected a comma-separated "
                         f"list of {', '.join(KINDS)}")
    return tuple(k for k in KINDS if k in items)


def _acquisition_look(rng: np.random.Generator, imaging: dict, speckle_only: bool) -> dict:
    look = {"speckle_seed": int(rng.integers(1, 2 ** 31))}
    if not speckle_only:  # the appearance-only backbone's ranges (p2p_desktop/training/appearance.py)
        look["gain_db"] = imaging["gain_db"] + float(rng.uniform(-4.0, 4.0))
        look["dynamic_range_db"] = imaging["dynamic_range_db"] + float(rng.uniform(-6.0, 6.0))
        look["tgc_compensation"] = imaging["tgc_compensation"] + float(rng.uniform(-0.12, 0.08))
        look["smoothing"] = imaging["smoothing"] * float(np.exp(rng.uniform(np.log(0.5), np.log(1.6))))
    return look


def _smooth_field(rng: np.random.Generator, shape, sigma_px: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    return f / max(float(np.abs(f).max()), 1e-12)


def variant_names(seed: int, label: str, kinds: Iterable[str]) -> list[str]:
    """The names :func:`make_variants` gives (without rendering anything)."""
    from p2p_desktop.phantoms import CLASSES

    kinds = tuple(kinds)
    if not kinds:
        return []
    others = [c for c in CLASSES if c != label]
    names = []
    if "acquisition" in kinds:
        names += [f"acquisition-{k}" for k in (1, 2, 3)]
    if "noise" in kinds:
        for eps in NOISE_EPS:
            names += [f"noise-{how}-{eps:.4f}" for how in ("random-sign", "smooth-2mm", *(f"sign-toward-{c}"
                                                                                          for c in others))]
    if "descriptor" in kinds and label != "normal":
        from p2p_desktop.phantoms import anatomy

        lesion = anatomy.sample_lesion(np.random.default_rng([seed, 2, CLASSES.index(label)]), label)
        names += list(dict.fromkeys(f"descriptor-{d}" for d, _ in descriptor_swaps(label, lesion)))
    if "class" in kinds:
        for c in others:
            names += [f"class-{c}"] + ([f"class-{c}-redrawn"] if c != "normal" else [])
    return names


def make_variants(seed: int, label: str, size: int = 128, kinds: Iterable[str] = KINDS,
                  variant_seed: int = 0) -> list[Variant]:
    """The labelled variants of phantom ``(seed, label, size)`` of the given kinds (see the
    module docstring), deterministic in ``(seed, label, size, variant_seed)``."""
    from p2p_desktop.phantoms import CLASSES, generate_phantom, lesion_site_of, shared_site_of

    kinds = parse_kinds(kinds)
    src = generate_phantom(seed, label, size)
    x = src.image.astype(np.float64)
    rng = np.random.default_rng([seed, 11, CLASSES.index(label), size, variant_seed])
    site = lesion_site_of(seed, label) or shared_site_of(seed)
    others = [c for c in CLASSES if c != label]
    out: list[Variant] = []
    if "acquisition" in kinds:
        for k, speckle_only in enumerate((True, False, False)):
            look = _acquisition_look(rng, src.params["imaging"], speckle_only)
            img = generate_phantom(seed, label, size, appearance=look).image
            out.append(Variant(f"acquisition-{k + 1}", "acquisition", "kept", img,
                               {"appearance": {k_: round(v, 4) if isinstance(v, float) else v
                                               for k_, v in look.items()}}))
    if "noise" in kinds:
        px_mm = float(src.params["field_of_view_mm"][0]) / size
        for eps in NOISE_EPS:
            tag = f"{eps:.4f}"
            shapes = [("random-sign", rng.choice([-1.0, 1.0], x.shape)),
                      ("smooth-2mm", _smooth_field(rng, x.shape, 2.0 / px_mm))]
            for c in others:
                cf = generate_phantom(seed, c, size, site=None if c == "normal" else site).image
                shapes.append((f"sign-toward-{c}", np.sign(cf.astype(np.float64) - x)))
            for how, pattern in shapes:
                img = np.clip(x + eps * pattern, 0.0, 1.0)
                out.append(Variant(f"noise-{how}-{tag}", "noise", "kept", img, {"linf": round(eps, 4), "noise": how}))
    if "descriptor" in kinds and label != "normal":
        by_name: dict[str, list] = {}
        for name, value in descriptor_swaps(label, src.params["lesion"]):
            by_name.setdefault(name, []).append(value)
        for k, (name, values) in enumerate(by_name.items()):
            value = values[int(rng.integers(len(values)))]
            img = generate_phantom(seed, label, size, descriptors={name: value},
                                   edit_seed=_EDIT_STREAM + variant_seed * 100 + k).image
            out.append(Variant(f"descriptor-{name}", "descriptor", "semantic", img,
                               {"descriptor": name, "value": value}))
    if "class" in kinds:
        for c in others:
            look = {"speckle_seed": int(rng.integers(1, 2 ** 31))}
            img = generate_phantom(seed, c, size, site=None if c == "normal" else site, appearance=look).image
            out.append(Variant(f"class-{c}", "class", "semantic", img, {"class": c, "site": "source's"}))
            if c != "normal":
                desc = class_swap_descriptors(c, rng)
                img = generate_phantom(seed, c, size, site=site if label != "normal" else None, descriptors=desc,
                                       edit_seed=_EDIT_STREAM + variant_seed * 100 + 50).image
                out.append(Variant(f"class-{c}-redrawn", "class", "semantic", img,
                                   {"class": c, "descriptors": desc,
                                    "site": "source's" if label != "normal" else f"the {c} mass's own"}))
    return out
