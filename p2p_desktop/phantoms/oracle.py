"""Label-preservation oracle for phantoms: did an attack keep the finding, or redraw it?

An adversarial example must keep its true label: the image still shows the same finding and
only the classifier is fooled. On real images nobody can check that automatically; on the
phantoms we can, because a phantom is fully determined by its generator record
``(seed, label, size)`` and the generator draws **the same breast** (tissue, probe settings,
speckle) under every class. So for an attacked phantom we render its *counterfactuals*: the
same breast with a mass of each other class at the source's mass site (for a normal source:
at the seed's shared site, :func:`~p2p_desktop.phantoms.shared_site_of`), and the same breast
without a mass. Everything outside the mass and the region it shadows or enhances is
identical across the renderings, so the renderings differ exactly by what decides the label.

The rule (first principles, fixed before looking at any attack's output):

Speckle is appearance, not diagnosis (a new speckle draw of the same breast has the same
label), so both criteria look at the images smoothed at the speckle scale (a Gaussian of
``SMOOTH_MM`` = 1 mm, about a speckle cell laterally), written ``S(.)``. Let ``x`` be the
source, ``a`` the adversarial image, ``r_c`` the rendering of class ``c``,
``delta = S(a - x)`` and ``v_c = S(r_c - x)``.

1. **Nearest rendering.** Among the renderings of this breast, the adversarial image is
   nearest (L2, on ``S``) to its own class's: ``|S(a) - S(r_c)| > |S(a) - S(x)|`` for every other
   class ``c``. Equivalently the *progress* toward ``c``, ``p_c = <delta, v_c> / |v_c|²``
   (0 = no move toward ``c``, 1 = became ``c``), stays at most 1/2, the midpoint between the
   two renderings. Change orthogonal to ``v_c`` (noise, texture, gain elsewhere) does not
   count; only movement along the line from the source to the other class's rendering does.
2. **Finding not rewritten.** The change does not redraw a mass-sized region by as much as
   the finding itself differs from its absence: the largest local RMS of ``delta`` in a
   Gaussian window of the mass's size (sigma = half the mass's equivalent radius) stays
   below 1/2 of the finding's contrast (RMS of ``S(x - r_normal)`` over the mass for a
   lesion source; for a normal source, of ``S(r_c - x)`` over each counterfactual mass, the
   smaller of the two). A finding is judged against its surroundings (BI-RADS grades echo
   level relative to fat), so change shared by the neighbourhood (a gain or depth-compensation
   change) is first removed at twice the mass's radius: both criteria use
   ``H(d) = d - G(2 r_eq) * d`` of ``delta`` and of ``v_c`` (linear, so replacing the image by a
   counterfactual still gives progress 1). This catches edits that do not land on the one counterfactual the
   generator happens to draw (a mass reshaped into a different-looking mass of the other
   class, a mass drawn elsewhere in a normal breast), which criterion 1 alone cannot see.

**Oracle v2** (issue 25) adds, fixed on development seeds 6,000,000.. and then validated once on
labelled variants of seeds 7,000,000.. (``benchmarks/oracle_confusion.py``, table in the README):

* **Descriptor counterfactuals.** Margin, shape, orientation, echo pattern, posterior features,
  calcifications and echogenic halo decide the diagnosis, so besides the class renderings the
  oracle renders the source's mass with each descriptor set to each value of the other class
  (:func:`render_descriptor_counterfactuals`); criterion 1 runs over all of them.
* **Contrast floor.** A counterfactual fainter than ``CONTRAST_FLOOR`` (0.12 RMS grey over the
  region where it differs) counts as that faint in criteria 1 and 2: a change bounded by L∞
  0.05 (the gradient attacks' budget) shifts a local mean by at most 0.05, under half the floor,
  so a faint finding cannot turn a bounded pixel change into a semantic change.
* **Rewrite above the image's median**: criterion 2 counts the largest mass-sized change *above
  the median* mass-sized change of the image (an acquisition change moves every region alike).
* **3. Local edit.** The change at the resolution-cell scale (RMS of ``a - x`` in a Gaussian
  window of ``EDIT_SCALE_MM`` = 0.3 mm) peaks above ``EDIT_FLOOR`` (0.06, beyond any L∞ 0.05
  change) *and* above ``EDIT_RATIO`` (10) times its median over the image: the finding was
  redrawn while the rest of the breast was left as it was. This is what catches most descriptor
  swaps (a new margin, calcifications, a halo), which the 1 mm smoothing of criteria 1-2 blurs.
  It is conservative: any localised edit beyond the bounded budget is flagged, even one a
  radiologist would call the same finding; and a descriptor change made together with a global
  appearance change is left to criteria 1-2.

Verdict: ``"label kept"`` when all hold, ``"semantic change"`` otherwise (with the reasons).
The thresholds are the midpoints of the two hypotheses (unchanged vs. became the other
rendering; unchanged vs. rewritten by the finding's full contrast) and the bounds above; they
are not fitted to any attack. Also reported, not used in the verdict: RMS distances of ``S(a)``
to each class rendering inside the region where the renderings differ, and the share of the
change energy ``|a - x|²`` inside the lesion mask next to the mask's share of the image.

No generator record (not a phantom, or a phantom image that no longer matches what its record
renders, e.g. edited or resized), and the oracle returns ``verdict=None`` with the reason.

>>> from p2p_desktop.phantoms import generate_phantom
>>> rec = PhantomRecord(seed=42, label="malignant", size=128)
>>> x = generate_phantom(42, "malignant", 128).image
>>> judge(rec, x, x).verdict
'label kept'
>>> judge(rec, x, render_counterfactuals(rec)["normal"].image).verdict
'semantic change'
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PhantomRecord", "Verdict", "LABEL_KEPT", "SEMANTIC_CHANGE", "SMOOTH_MM", "phantom_record",
           "render_counterfactuals", "render_descriptor_counterfactuals", "judge", "judge_file", "NO_RECORD",
           "study_verdict", "cross_class_backbone", "CROSS_CLASS_NOTE", "CONTRAST_FLOOR", "EDIT_FLOOR",
           "ORACLE_VERSION"]

CROSS_CLASS_NOTE = ("this diffusion backbone was fine-tuned with cross-class targets (another class's prompt -> the "
                    "same breast drawn as that class), so P2P or Diff-PGD on it may redraw the lesion as another "
                    "class; such an image fools the classifier but is not an adversarial example (on phantoms the "
                    "label-preservation oracle says which)")

LABEL_KEPT = "label kept"
SEMANTIC_CHANGE = "semantic change"
SMOOTH_MM = 1.0          # speckle scale: structure below it is appearance
PROGRESS_LIMIT = 0.5     # criterion 1: the midpoint between the source and another class's rendering
REWRITE_LIMIT = 0.5      # criterion 2: half the finding's contrast over a mass-sized region
CONTRAST_FLOOR = 0.12    # a counterfactual fainter than this (RMS grey) counts as this faint: 0.05 > half of it
EDIT_SCALE_MM = 0.3      # criterion 3: the resolution cell (axial PSF ~0.2 mm, lateral ~0.45 mm)
EDIT_FLOOR = 0.06        # criterion 3: above the largest L-inf budget of the gradient attacks (0.05) + 8 bits
EDIT_RATIO = 10.0        # criterion 3: x the median local change; acquisition changes stay under ~6x
ORACLE_VERSION = 2
NO_RECORD = "not a phantom with a generator record (no manifest entry or phantom DICOM header)"
_QUANT_TOL = 1.0 / 255.0 + 1e-4  # an 8-bit file of a rendering differs from it by at most half a level


@dataclass(frozen=True)
class PhantomRecord:
    """What the generator needs to draw the phantom again."""

    seed: int
    label: str
    size: int
    source: str = ""  # where the record was read ("manifest ...", "DICOM header")


@dataclass
class Verdict:
    """The oracle's decision with the figures it measured (``verdict`` None: no decision)."""

    verdict: str | None
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def label_kept(self) -> bool | None:
        return None if self.verdict is None else self.verdict == LABEL_KEPT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the generator record ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _manifest_index(root: str, mtimes: tuple) -> dict[str, tuple[int, str, int, str]]:
    """{relative image path: (seed, label, size, manifest name)} of every phantom manifest in ``root``."""
    index: dict[str, tuple[int, str, int, str]] = {}
    for name, _mtime in mtimes:
        try:
            data = json.loads((Path(root) / name).read_text(encoding="utf-8"))
            if data.get("generator") != "p2p-desktop phantoms":
                continue
            for row in data.get("phantoms", []):
                index[str(row["image"])] = (int(row["seed"]), str(row["label"]), int(row["size"]), name)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return index


def _from_manifest(path: Path) -> PhantomRecord | None:
    for root in (path.parent.parent, path.parent):
        try:
            manifests = sorted(root.glob("phantoms_seed*_n*.json"))
            mtimes = tuple((m.name, m.stat().st_mtime_ns) for m in manifests)
        except OSError:
            continue
        if not mtimes:
            continue
        try:
            rel = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
        hit = _manifest_index(str(root.resolve()), mtimes).get(rel)
        if hit:
            return PhantomRecord(seed=hit[0], label=hit[1], size=hit[2], source=f"manifest {hit[3]}")
    return None


def _from_dicom(path: Path) -> PhantomRecord | None:
    from p2p_desktop.phantoms.dicom_writer import MANUFACTURER

    try:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - not readable as DICOM: no record
        return None
    if str(getattr(ds, "Manufacturer", "")) != MANUFACTURER:
        return None
    m = re.search(r"label=(\w+) seed=(\d+)", str(getattr(ds, "ImageComments", "")))
    rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
    if not m or rows != cols:
        return None
    return PhantomRecord(seed=int(m.group(2)), label=m.group(1), size=rows, source="DICOM header")


def phantom_record(path: str | Path) -> PhantomRecord | None:
    """The generator record of the phantom file at ``path`` (PNG listed in a phantom manifest
    of its dataset, or a phantom DICOM), or None."""
    from p2p_desktop.phantoms import CLASSES, MAX_SIZE, MIN_SIZE

    path = Path(path)
    rec = _from_dicom(path) if path.suffix.lower() in (".dcm", ".dicom", "") else None
    rec = rec or _from_manifest(path)
    if rec is None or rec.label not in CLASSES or not MIN_SIZE <= rec.size <= MAX_SIZE or rec.seed < 0:
        return None
    return rec


# -- rendering --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def render_counterfactuals(record: PhantomRecord) -> dict:
    """{class: Phantom}: the source as recorded and the same breast drawn as each other class,
    masses at the source's site (for a normal source, at the seed's shared site)."""
    from p2p_desktop.phantoms import CLASSES, generate_phantom, lesion_site_of, shared_site_of

    site = lesion_site_of(record.seed, record.label) or shared_site_of(record.seed)
    out = {record.label: generate_phantom(record.seed, record.label, record.size)}
    for c in CLASSES:
        if c != record.label:
            out[c] = generate_phantom(record.seed, c, record.size, site=None if c == "normal" else site)
    return out


@functools.lru_cache(maxsize=8)
def render_descriptor_counterfactuals(record: PhantomRecord) -> dict:
    """{"descriptor=value": Phantom}: the source's mass with one BI-RADS descriptor set to each
    value of the other class it does not have (:func:`~p2p_desktop.phantoms.variants.descriptor_swaps`):
    margin, shape, orientation, echo pattern, posterior features, calcifications, echogenic halo.
    Empty for a normal source (its counterfactuals are the masses of :func:`render_counterfactuals`)."""
    from p2p_desktop.phantoms import generate_phantom
    from p2p_desktop.phantoms.variants import descriptor_swaps

    if record.label == "normal":
        return {}
    own = render_counterfactuals(record)[record.label]
    return {f"{name}={value}": generate_phantom(record.seed, record.label, record.size, descriptors={name: value})
            for name, value in descriptor_swaps(record.label, own.params.get("lesion"))}


def _grey(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 3:  # (H, W, C) or (C, H, W); colour as the mean of its first three channels
        if a.shape[-1] not in (1, 3, 4) and a.shape[0] in (1, 3, 4):
            a = np.moveaxis(a, 0, -1)
        a = a[..., :3].mean(axis=-1)
    if a.size and a.max() > 1.0 + 1e-6:  # 8/16-bit integers
        a = a / (65535.0 if a.max() > 255 else 255.0)
    return a


# -- the decision -----------------------------------------------------------------------------------
def _local_rms(d: np.ndarray, sigma: float, mode: str = "constant") -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.sqrt(np.maximum(gaussian_filter(d * d, sigma, mode=mode), 0.0))


def judge(record: PhantomRecord, source: np.ndarray, adversarial: np.ndarray) -> Verdict:
    """The oracle's verdict for ``adversarial`` made from the phantom ``source`` (grey [0, 1]
    arrays at the phantom's size; see the module docstring for the rule)."""
    from scipy.ndimage import gaussian_filter

    x, a = _grey(source), _grey(adversarial)
    renders = render_counterfactuals(record)
    own = renders[record.label]
    if x.shape != own.image.shape or a.shape != x.shape:
        return Verdict(None, f"image size {x.shape[1]}x{x.shape[0]} (adversarial {a.shape[1]}x{a.shape[0]}) "
                             f"differs from the phantom's {record.size}x{record.size}; the oracle needs the "
                             "phantom as generated")
    mismatch = float(np.max(np.abs(x - own.image)))
    if mismatch > _QUANT_TOL:
        return Verdict(None, f"the image differs from what its generator record renders (max |Δ| "
                             f"{mismatch:.3f}); edited, or made by another generator version",
                       {"record_mismatch": round(mismatch, 4)})
    px_mm = float(own.params["field_of_view_mm"][0]) / record.size
    sigma = SMOOTH_MM / px_mm
    smooth = lambda img: gaussian_filter(img, sigma, mode="nearest")  # noqa: E731
    sx, sa = smooth(x), smooth(a)
    others = [c for c in renders if c != record.label]
    described = render_descriptor_counterfactuals(record)
    figures: dict[str, Any] = {"record": asdict(record), "smooth_sigma_px": round(sigma, 3),
                               "oracle_version": ORACLE_VERSION}

    # the finding: its mask(s) and its contrast against the same breast without it
    vs = {c: smooth(renders[c].image.astype(np.float64)) - sx for c in others}
    if record.label == "normal":
        masks = [renders[c].mask for c in others if renders[c].mask.any()]
        contrasts = [float(np.sqrt(np.mean(vs[c][renders[c].mask] ** 2))) for c in others if renders[c].mask.any()]
        contrast = min(contrasts) if contrasts else 0.0
        mask_for_share = np.any(masks, axis=0) if masks else np.zeros_like(x, dtype=bool)
    else:
        mask_for_share = own.mask
        contrast = float(np.sqrt(np.mean(vs["normal"][own.mask] ** 2))) if own.mask.any() else 0.0
        masks = [own.mask]
    area = float(np.mean([m.sum() for m in masks])) if masks else 0.0
    r_eq = math.sqrt(max(area, 1.0) / math.pi)
    # a finding is judged against its surroundings (echo level relative to fat, BI-RADS): change
    # shared by the whole neighbourhood (gain, depth compensation) is removed at twice the mass size
    detrend = lambda d: d - gaussian_filter(d, 2.0 * r_eq, mode="nearest")  # noqa: E731
    delta = detrend(sa - sx)

    # criterion 1: progress toward each other class's rendering and each descriptor rendering;
    # a rendering fainter than the floor counts as if it differed by the floor
    vs.update({k: smooth(ph.image.astype(np.float64)) - sx for k, ph in described.items()})
    progress, effective, cf_contrast, dist = {}, {}, {}, {}
    diff_region = np.zeros_like(x, dtype=bool)
    for k, v_raw in vs.items():
        region = np.abs(v_raw) > 0.01
        if k in others:
            diff_region |= np.abs(v_raw) > 0.02
        v = detrend(v_raw)
        vv = float(np.sum(v * v))
        c_k = math.sqrt(vv / max(int(region.sum()), 1))
        progress[k] = float(np.sum(delta * v) / max(vv, 1e-12))
        cf_contrast[k] = c_k
        effective[k] = progress[k] * min(1.0, c_k / CONTRAST_FLOOR)
    if not diff_region.any():
        diff_region[:] = True
    rms = lambda d: float(np.sqrt(np.mean(d[diff_region] ** 2)))  # noqa: E731
    dist["own"] = rms(sa - sx)
    for c in others:
        dist[c] = rms(sa - sx - vs[c])
    figures["progress"] = {c: round(progress[c], 4) for c in others}
    figures["progress_descriptors"] = {k: round(progress[k], 4) for k in described}
    figures["counterfactual_contrast"] = {k: round(v, 4) for k, v in cf_contrast.items()}
    figures["effective_progress"] = {k: round(v, 4) for k, v in effective.items()}
    figures["distance_in_region"] = {c: round(v, 4) for c, v in dist.items()}
    figures["region_share"] = round(float(diff_region.mean()), 4)

    # criterion 2: the largest mass-sized rewrite against the finding's contrast (at least the floor)
    # above the image's median mass-sized change (an acquisition change moves every region alike)
    local = np.sqrt(gaussian_filter(delta ** 2, max(r_eq / 2.0, 1.0), mode="constant"))
    rewrite = (float(local.max()) - float(np.median(local))) / max(contrast, CONTRAST_FLOOR)
    figures["finding_contrast"] = round(contrast, 4)
    figures["rewrite"] = round(rewrite, 4)
    figures["rewrite_peak"] = round(float(local.max()), 4)

    # criterion 3: a local edit: the change at the resolution-cell scale somewhere exceeds what a
    # bounded pixel change can make and stands out of the change across the image
    edit_map = _local_rms(a - x, EDIT_SCALE_MM / px_mm)
    peak, level = float(edit_map.max()), float(np.median(edit_map))
    edit_ratio = peak / max(level, 1.0 / 255.0)
    figures["local_edit"] = {"peak": round(peak, 4), "median": round(level, 4), "ratio": round(edit_ratio, 2)}

    raw = (a - x) ** 2
    total = float(raw.sum())
    figures["mask_energy_share"] = round(float(raw[mask_for_share].sum()) / total, 4) if total > 0 else 0.0
    figures["mask_area_share"] = round(float(mask_for_share.mean()), 4)

    reasons = [f"nearer to the {_name(k)} rendering of this breast than to its source (progress "
               f"{effective[k]:.2f} > {PROGRESS_LIMIT})" for k in vs if effective[k] > PROGRESS_LIMIT]
    if rewrite >= REWRITE_LIMIT:
        reasons.append(f"a mass-sized region changed by {rewrite:.2f} of the finding's contrast "
                       f"(limit {REWRITE_LIMIT})")
    if peak > EDIT_FLOOR and edit_ratio > EDIT_RATIO:
        reasons.append(f"a local edit: a {EDIT_SCALE_MM:g} mm region changed by {peak:.3f} RMS, "
                       f"{edit_ratio:.1f}x the image's median change (limits {EDIT_FLOOR}, {EDIT_RATIO:g}x)")
    if reasons:
        return Verdict(SEMANTIC_CHANGE, "; ".join(reasons), figures)
    best = max(effective, key=effective.get)
    return Verdict(LABEL_KEPT, f"nearest to its own {record.label} rendering (largest progress "
                               f"{effective[best]:.2f} toward {_name(best)}); rewrite {rewrite:.2f} of the "
                               f"finding's contrast; local edit {peak:.3f} ({edit_ratio:.1f}x the median)", figures)


def _name(key: str) -> str:
    return key.replace("=", " ") if "=" in key else key


def judge_file(source_path: str | Path, source: np.ndarray, adversarial: np.ndarray) -> Verdict:
    """:func:`judge` for the file at ``source_path``, or ``verdict=None`` with the reason."""
    record = phantom_record(source_path)
    if record is None:
        return Verdict(None, NO_RECORD)
    return judge(record, source, adversarial)


def study_verdict(study, adversarial: np.ndarray, success: bool | None = None) -> dict[str, Any]:
    """The oracle's verdict for an attack on ``study`` (a :class:`~p2p_desktop.io.study.Study`)
    as a JSON-ready dict: ``verdict`` (None without a generator record), ``reason``,
    ``valid_success`` (fooled and the label kept; None when not judged) and the figures.
    Never raises: a failure of the oracle is reported as ``verdict=None`` with the reason."""
    try:
        if getattr(study, "n_frames", 1) != 1:
            v = Verdict(None, "multi-frame study: " + NO_RECORD)
        else:
            v = judge_file(study.path, study.image, adversarial)
    except Exception as exc:  # noqa: BLE001 - the oracle must never break an attack
        v = Verdict(None, f"oracle failed: {type(exc).__name__}: {exc}")
    out = v.to_dict()
    out["valid_success"] = None if v.verdict is None or success is None else bool(success and v.label_kept)
    return out


def cross_class_backbone(identity: dict | None) -> bool:
    """True when the backbone's card records a counterfactual (cross-class) fine-tuning phase
    (``training.counterfactual``, as the first demo backbone's does)."""
    path = (identity or {}).get("path")
    if not path:
        return False
    try:
        card = json.loads((Path(path) / "card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(card, dict) and isinstance(card.get("training"), dict) and "counterfactual" in card["training"]
