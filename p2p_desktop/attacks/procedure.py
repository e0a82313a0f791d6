"""Which procedure produced a result: preset, working resolution, output mode and precision.

Every table row, CSV field, JSON object, report and provenance record names it, e.g.
``p2p[paper, 224 px, decoded, fp32]``; settings that differ from the named preset are listed
(``p2p[paper, steps=50, 224 px, decoded, fp32]``), so a row never claims a preset it did not run.
Attacks without a backbone work on the source pixels: ``fgsm[default, source px, direct, fp32]``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["describe", "backbone_dtype", "apply_dtype", "METRIC_PROTOCOL_TEXT", "FID_TEXT", "metric_protocol",
           "training_resolution", "RESOLUTION_WARNING_PREFIX"]

METRIC_PROTOCOL_TEXT = {
    "paper": "paper protocol: LPIPS (AlexNet) and SSIM (11×11 Gaussian window, σ = 1.5, data range 1) on "
             "Resize(256) + CenterCrop(256) RGB; FID per class (originals of the class vs its adversarials), "
             "averaged over classes",
    "native": "native protocol: SSIM (7×7 uniform window, data range 1) and LPIPS (AlexNet) on the images as "
              "written (source geometry); FID over all successful examples",
}
_FID_COMMON = ("Fréchet distance between Gaussians fitted to InceptionV3 pool3 features (2048-d) of the originals and "
               "of the adversarial images; pytorch-fid's weights (pt_inception-2015-12-05-6726825d.pth) give the "
               "standard FID, torchvision's InceptionV3 a close but not identical one; not computed without either "
               "(p2p-desktop models import-weights installs them); biased upward on few samples (below 2048)")
#: What FID is under each metric protocol (tables and reports print it right under the protocol).
FID_TEXT = {
    "paper": f"FID (paper protocol): per class, the class's originals vs its successful adversarials, averaged over "
             f"classes; {_FID_COMMON}",
    "native": f"FID (native protocol): all successful examples, originals vs adversarials as written; {_FID_COMMON}",
}
_SSIM = {"paper": {"window": "11×11 Gaussian, σ = 1.5", "data_range": 1.0, "on": "Resize(256) + CenterCrop(256) RGB"},
         "native": {"window": "7×7 uniform", "data_range": 1.0, "on": "the images as written (source geometry)"}}
#: Notes that start so are warnings (the CLI, the report): the diffusion model runs off its training size.
RESOLUTION_WARNING_PREFIX = "working resolution differs from the backbone's training resolution: "


def metric_protocol(name: str = "native") -> dict[str, Any]:
    """The metric protocol ``name`` as JSON: its description, SSIM window and data range, LPIPS, FID."""
    return {"protocol": name, "description": METRIC_PROTOCOL_TEXT[name], "ssim": dict(_SSIM[name]),
            "lpips": "AlexNet (lpips package), inputs scaled to [-1, 1]", "fid": FID_TEXT[name]}


def training_resolution(backbone: Any) -> tuple[int | None, str]:
    """(side in pixels, where it was read) the backbone was trained at: its card.json's ``trained_on.size``
    (or ``training_resolution``), else its native size (the UNet's sample size × the VAE's factor)."""
    import json
    from pathlib import Path

    path = getattr(backbone, "path", None)
    if path:
        try:
            card = json.loads((Path(path) / "card.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            card = None
        if isinstance(card, dict):
            trained = card.get("trained_on") if isinstance(card.get("trained_on"), dict) else {}
            size = trained.get("size") or card.get("training_resolution")
            if isinstance(size, int) and size > 0:
                return int(size), f"{getattr(backbone, 'name', 'backbone')} card.json"
    res = getattr(backbone, "resolution", None)
    return (int(res), "the backbone's native size") if res else (None, "")

_IGNORED = ("seed", "target", "preset", "resolution", "output", "dtype")  # these have their own slots


def _preset_name(attack, preset: str | None) -> str:
    if preset:
        return preset
    own = attack.config.to_dict().get("preset")
    return str(own) if own else "default"


def describe(attack, preset: str | None = None, backbone: Any = None, info: dict | None = None) -> dict[str, Any]:
    """{"label", "attack", "preset", "changes", "resolution", "output", "precision"} of one attack.

    ``info`` (the attack's output info) gives the resolution and precision actually used; without it
    they come from the config and the backbone.
    """
    from p2p_desktop.attacks import _diffusion as D

    info = info or {}
    cfg = attack.config.to_dict()
    name = _preset_name(attack, preset)
    base_preset = name if name in type(attack).presets else None
    try:
        base = type(attack).from_preset(base_preset, seed=cfg.get("seed", 0)).config.to_dict()
    except Exception:  # noqa: BLE001 - a plugin config without defaults: no list of changes
        base = cfg
    changes = {k: v for k, v in cfg.items() if k not in _IGNORED and base.get(k) != v}
    if "resolution" in cfg:
        res = info.get("resolution") or cfg["resolution"] or (backbone.resolution if backbone is not None else None)
        resolution = f"{res} px" if res else "native px"
    else:
        res, resolution = None, "source px"
    output = str(cfg.get("output", "direct"))
    if "dtype" in cfg:
        precision = info.get("precision") or (
            cfg["dtype"] if cfg["dtype"] != "auto" else
            (D.precision_name(backbone.dtype) if backbone is not None else "auto"))
    else:
        precision = "fp32"
    parts = [name, *(f"{k}={v}" for k, v in sorted(changes.items())), resolution, output, precision]
    out = {"label": f"{attack.name}[{', '.join(parts)}]", "attack": attack.name, "preset": name,
           "changes": changes, "resolution": res, "output": output, "precision": precision,
           "control": bool(getattr(type(attack), "control", False))}
    if backbone is not None and res and getattr(type(attack), "requires_backbone", False):
        trained, where = training_resolution(backbone)
        out["training_resolution"] = trained
        if trained and int(res) != trained:
            out["resolution_warning"] = (
                f"{RESOLUTION_WARNING_PREFIX}{attack.name} works at {res} px, but the {getattr(backbone, 'name', '')} "
                f"backbone was trained at {trained} px ({where}); its diffusion model runs off the size it learned")
    return out


def backbone_dtype(attacks) -> str | None:
    """The precision to load the backbone in for these attacks (None: the default for the device)."""
    wanted = {a.config.to_dict().get("dtype") for a in attacks if a.requires_backbone}
    wanted.discard(None)
    wanted.discard("auto")
    return next(iter(wanted)) if len(wanted) == 1 else None


def apply_dtype(attack, dtype: str | None, device: str):
    """The attack with ``--dtype`` applied, after checking the device can run it (InputError otherwise)."""
    from dataclasses import fields

    from p2p_desktop.device import check_dtype
    from p2p_desktop.errors import InputError

    if dtype is None:
        want = attack.config.to_dict().get("dtype")
        if want and want != "auto":
            check_dtype(device, want)
        return attack
    check_dtype(device, dtype)
    if "dtype" not in {f.name for f in fields(attack.Config)}:
        if dtype in ("auto", "fp32"):
            return attack
        raise InputError(f"--dtype {dtype} applies to the diffusion attacks (diff-pgd, p2p); "
                         f"{attack.name} runs in fp32")
    return type(attack)(attack.config.replace(dtype=dtype))
