"""The settings of a batch evaluation, checked before any work: attacks and their parameters and
presets, classifiers, backbone, dataset, output folder — and the fingerprint that resumes a run.

:func:`plan` turns the arguments of :func:`~p2p_desktop.jobs.evaluate.evaluate` into a
:class:`Plan` (every model loaded once) or raises :class:`~p2p_desktop.errors.InputError`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p_desktop.errors import InputError
from p2p_desktop.jobs.evaluate.log import STATE_FORMAT, fingerprint

__all__ = ["Plan", "plan", "build_attacks", "select_items", "default_presets", "split_presets"]


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def split_params(params: Mapping[str, Any] | None, attack_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{attack: {key: value}} from ``{"pgd.steps": 20, "eps": 0.03, "p2p": {"lam": 1}}``.

    A key without an attack prefix applies to every attack whose config has that field.
    """
    from dataclasses import fields

    from p2p_desktop.attacks.registry import get

    by_norm = {_norm(a): a for a in attack_names}
    out: dict[str, dict[str, Any]] = {a: {} for a in attack_names}
    unscoped: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if isinstance(value, Mapping):
            if _norm(key) not in by_norm:
                raise InputError(f"--param for attack {key!r}, which is not in --attacks ({', '.join(attack_names)})")
            out[by_norm[_norm(key)]].update({_norm(k): v for k, v in value.items()})
            continue
        prefix, dot, rest = str(key).partition(".")
        if dot:
            if _norm(prefix) not in by_norm:
                raise InputError(f"--param {key}: attack {prefix!r} is not in --attacks ({', '.join(attack_names)})")
            out[by_norm[_norm(prefix)]][_norm(rest)] = value
        else:
            unscoped[_norm(key)] = value
    for key, value in unscoped.items():
        takers = [a for a in attack_names if key in {f.name for f in fields(get(a).Config)}]
        if not takers:
            raise InputError(f"--param {key}: none of the attacks ({', '.join(attack_names)}) has a parameter "
                             f"{key!r}; scope it as ATTACK.{key}")
        for a in takers:
            out[a].setdefault(key, value)
    return out


def split_presets(preset: str | Mapping[str, str] | None, attack_names: Sequence[str]) -> dict[str, str | None]:
    """Preset per attack. A bare name applies to every attack that defines a preset of that name."""
    from p2p_desktop.attacks.registry import get

    out: dict[str, str | None] = {a: None for a in attack_names}
    if not preset:
        return out
    by_norm = {_norm(a): a for a in attack_names}
    if isinstance(preset, str) and "=" not in preset:
        takers = [a for a in attack_names if preset in get(a).presets]
        if not takers:
            raise InputError(f"--preset {preset}: none of the attacks ({', '.join(attack_names)}) has a preset "
                             f"of that name")
        return {**out, **{a: preset for a in takers}}
    items = preset.items() if isinstance(preset, Mapping) else (
        p.partition("=")[::2] for p in str(preset).split(",") if p.strip())
    for name, value in items:
        if _norm(name) not in by_norm:
            raise InputError(f"--preset {name}={value}: attack {name!r} is not in --attacks")
        out[by_norm[_norm(name)]] = str(value).strip()
    return out


def build_attacks(attacks: Sequence[str], *, seed: int = 0, params: Mapping[str, Any] | None = None,
                  preset: str | Mapping[str, str] | None = None) -> list:
    """Validated attack instances (one per name), or :class:`InputError` before any work."""
    from p2p_desktop.attacks.factory import build_attack
    from p2p_desktop.attacks.registry import spec

    names = [a.strip() for a in attacks if a and a.strip()]
    if not names:
        raise InputError("--attacks: give at least one attack (e.g. fgsm,pgd)")
    names = [spec(a).name for a in names]
    dupes = sorted({a for a in names if names.count(a) > 1})
    if dupes:
        raise InputError(f"--attacks: {', '.join(dupes)} given more than once")
    per_attack = split_params(params, names)
    presets = split_presets(preset, names)
    return [build_attack(a, preset=presets[a], seed=seed, params=per_attack[a]) for a in names]


def select_items(items: Sequence, limit: int | None) -> list:
    """The first ``limit`` items, taking classes in turn (so a small limit still covers every class)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    groups: dict[Any, list] = defaultdict(list)
    for it in items:
        groups[it.label].append(it)
    order = sorted(groups, key=lambda k: (k is None, str(k)))
    chosen, i = [], 0
    while len(chosen) < limit:
        for label in order:
            if i < len(groups[label]) and len(chosen) < limit:
                chosen.append(groups[label][i])
        i += 1
    keep = {id(it) for it in chosen}
    return [it for it in items if id(it) in keep]


# -- issue 12: procedures, precision, the demo-backbone warning ---------------------------------------
def default_presets(attacks: Sequence[str], preset: str | Mapping[str, str] | None):
    """P2P runs its ``paper`` preset unless ``preset`` names another for it (validated as usual); a
    control of P2P with presets (random-prompt, p2p-lr0) runs P2P's preset unless one is named for it."""
    from p2p_desktop.attacks.registry import get, spec

    try:
        names = [spec(a).name for a in attacks if a and str(a).strip()]
        follows = {n: getattr(get(n), "control_for", None) for n in names}
    except InputError:
        return preset  # build_attacks reports the unknown attack
    controls = [n for n in names if follows[n] == "p2p" and get(n).presets]
    if ("p2p" not in names and not controls) or len(set(names)) != len(names):
        return preset
    split = split_presets(preset, names)
    p2p_preset = split.get("p2p") or "paper"
    if "p2p" in names:
        split["p2p"] = p2p_preset
    for n in controls:
        if split[n] is None and p2p_preset in get(n).presets:
            split[n] = p2p_preset
    return {a: v for a, v in split.items() if v}


def _apply_dtype(attack_objs: list, dtype: str | None, device: str) -> list:
    """``dtype`` applied to every diffusion attack (after checking the device can run it)."""
    from p2p_desktop.attacks.procedure import apply_dtype

    if dtype is not None and not any(a.requires_backbone for a in attack_objs) and dtype not in ("auto", "fp32"):
        raise InputError(f"--dtype {dtype} applies to the diffusion attacks (diff-pgd, p2p), none of which is in "
                         "--attacks")
    return [apply_dtype(a, dtype, device) if (a.requires_backbone or dtype is None) else a for a in attack_objs]


def _phantom_listing(root: Path) -> set[str]:
    """Image paths (relative to ``root``) listed by the project's phantom manifests in ``root``."""
    listed: set[str] = set()
    for manifest in root.glob("phantoms_seed*_n*.json"):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("generator") == "p2p-desktop phantoms":
            listed.update(str(r.get("image", "")).replace(os.sep, "/") for r in data.get("phantoms") or ()
                          if isinstance(r, dict))
    return listed


def _demo_backbone_warnings(root: Path, image_ids: Sequence[str], attack_objs: list, bb) -> list[str]:
    """A plain warning when the demo backbone runs on images that are not the project's phantoms."""
    if bb is None or bb.name != "demo" or not any(a.requires_backbone for a in attack_objs):
        return []
    listed = _phantom_listing(root)
    foreign = [i for i in image_ids if i not in listed]
    if not foreign:
        return []
    names = ", ".join(a.name for a in attack_objs if a.requires_backbone)
    return [f"{len(foreign)} of {len(image_ids)} image(s) of this dataset are not the project's phantoms (no phantom "
            f"manifest lists them), but {names} ran with the DEMO backbone, which was trained only on those "
            "phantoms: its results on these images say nothing about a real diffusion model; use a Stable "
            "Diffusion backbone (--backbone FOLDER) for real data"]


def _resolution_warning(procedures: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line naming every diffusion attack whose working resolution is not the backbone's training one."""
    from p2p_desktop.attacks.procedure import RESOLUTION_WARNING_PREFIX

    off = [d for d in procedures.values() if d.get("resolution_warning")]
    if not off:
        return []
    if len(off) == 1:
        return [off[0]["resolution_warning"]]
    what = "; ".join(f"{d['attack']} at {d['resolution']} px" for d in off)
    return [f"{RESOLUTION_WARNING_PREFIX}{what}, but the backbone was trained at {off[0]['training_resolution']} px; "
            "its diffusion model runs off the size it learned"]


# -- the plan -----------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Everything one evaluation needs, validated, with its models loaded once."""

    root: Path  # the dataset folder
    out: Path  # the output folder (checked; may not exist yet)
    items: list  # dataset items (after ``limit``)
    image_ids: list[str]  # their paths relative to ``root`` (the rows' keys)
    attacks: list  # attack objects
    classifiers: list  # loaded classifiers
    clf_specs: list[str]  # the classifiers as given (names or model cards)
    backbone: Any  # the loaded backbone, or None
    backbone_spec: str | Path | None
    device: str
    procedures: dict[str, dict[str, Any]]  # attack name -> procedure description (issue 12)
    warnings: list[str]
    config: dict[str, Any]  # the settings that make the fingerprint
    fingerprint: str
    limit: int | None
    seed: int
    metrics: str
    report_formats: tuple[str, ...] = ()
    dicom: Any = None
    executor: Any = None

    @property
    def attack_names(self) -> list[str]:
        return [a.name for a in self.attacks]

    @property
    def classifier_names(self) -> list[str]:
        return [c.name for c in self.classifiers]

    @property
    def keys(self) -> set[tuple[str, str, str]]:
        """Every (image, classifier, attack) of this evaluation."""
        return {(i, c, a) for i in self.image_ids for c in self.classifier_names for a in self.attack_names}

    @property
    def total(self) -> int:
        return len(self.items) * len(self.classifiers) * len(self.attacks)

    @property
    def deidentified(self) -> bool:
        """Whether the run de-identifies its exports (``--export-dicom --deidentify``)."""
        return bool(getattr(self.dicom, "deidentify", False))

    def classes_of(self, name: str) -> tuple[str, ...]:
        return next(c.classes for c in self.classifiers if c.name == name)


def plan(dataset_dir, attacks: Sequence[str], classifiers: Sequence[str], out_dir, *, backbone=None,
         limit: int | None = None, seed: int = 0, device: str = "cpu", params: Mapping[str, Any] | None = None,
         preset: str | Mapping[str, str] | None = None, report=None, metrics: str = "native",
         dtype: str | None = None, dicom: Any = None, executor: Any = None, cancel=None) -> Plan:
    """Validate every setting and load every model once; :class:`InputError` before any work."""
    from p2p_desktop.device import resolve_device
    from p2p_desktop.hashing import sha256_bytes, sha256_file
    from p2p_desktop.io import load_dataset
    from p2p_desktop.io.outputs import check_output_dir
    from p2p_desktop.metrics import METRIC_PROTOCOLS
    from p2p_desktop.models.classifier import load_classifier

    if executor is not None and dicom is not None:
        raise InputError("--export-dicom runs with the serial executor only: the Ray workers return the "
                         "adversarial images, not the DICOM sources (run the export without --executor ray)")
    root = Path(dataset_dir)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist" if not root.exists() else f"{root} is not a folder")
    out = check_output_dir(out_dir, [root])
    if limit is not None and int(limit) < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    if int(seed) < 0:
        raise InputError(f"--seed must be ≥ 0, got {seed}")
    report_formats: tuple[str, ...] = ()
    if report:
        from p2p_desktop.export.report import parse_formats

        report_formats = parse_formats(report)
    if metrics not in METRIC_PROTOCOLS:
        raise InputError(f"--metrics {metrics!r}: choose one of {', '.join(METRIC_PROTOCOLS)}")
    preset = default_presets(attacks, preset)
    attack_objs = build_attacks(attacks, seed=int(seed), params=params, preset=preset)
    clf_specs = [c.strip() for c in classifiers if c and str(c).strip()]
    if not clf_specs:
        raise InputError("--classifiers: give at least one classifier (a registered name or a model card)")
    dev = resolve_device(device)
    attack_objs = _apply_dtype(attack_objs, dtype, dev)
    items = select_items(load_dataset(root, cancel=cancel), limit)
    loaded = [load_classifier(c, device=dev) for c in clf_specs]
    names = [c.name for c in loaded]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"--classifiers: two classifiers are named {dupes[0]!r}; give each model card its own name")
    bb = None
    if backbone or any(a.requires_backbone for a in attack_objs):
        from p2p_desktop.attacks.procedure import backbone_dtype
        from p2p_desktop.models.backbone import load_backbone

        bb = load_backbone(backbone or "demo", device=dev, dtype=backbone_dtype(attack_objs))

    from p2p_desktop.attacks.procedure import describe

    image_ids = [it.path.relative_to(root).as_posix() for it in items]
    presets = split_presets(preset, [a.name for a in attack_objs])
    procedures = {a.name: describe(a, presets.get(a.name), bb) for a in attack_objs}
    listing = "\n".join(f"{i}\t{it.label}\t{it.path.stat().st_size}" for i, it in zip(image_ids, items))
    config: dict[str, Any] = {
        "format": STATE_FORMAT,
        "images": {"count": len(items), "sha256": sha256_bytes(listing.encode())},
        "limit": limit, "seed": int(seed), "device": dev,
        "attacks": [{"name": a.name, "config": a.config.to_dict()} for a in attack_objs],
        "classifiers": [{"name": c.name, "architecture": c.card.architecture, "classes": list(c.classes),
                         "sha256": c.card.sha256 or sha256_file(c.card.weights_path)} for c in loaded],
        "backbone": None if bb is None else {k: v for k, v in bb.identity().items() if k != "path"},
    }
    if dicom is not None:  # derived DICOMs (export/batch_dicom.py): resumed only with the same export settings
        config["dicom_export"] = dicom.settings()
    config = json.loads(json.dumps(config, default=str))
    return Plan(root=root, out=out, items=items, image_ids=image_ids, attacks=attack_objs, classifiers=loaded,
                clf_specs=clf_specs, backbone=bb, backbone_spec=backbone, device=dev, procedures=procedures,
                warnings=_demo_backbone_warnings(root, image_ids, attack_objs, bb) + _resolution_warning(procedures),
                config=config,
                fingerprint=fingerprint(config), limit=limit, seed=int(seed), metrics=metrics,
                report_formats=report_formats, dicom=dicom, executor=executor)
