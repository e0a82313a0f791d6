"""Which procedure produced a result: preset, working resolution, output mode and precision.

Every table row, CSV field, JSON object, report and provenance record names it, e.g.
``p2p[paper, 224 px, decoded, fp32]``; settings that differ from the named preset are listed
(``p2p[paper, steps=50, 224 px, decoded, fp32]``), so a row never claims a preset it did not run.
Attacks without a backbone work on the source pixels: ``fgsm[default, source px, direct, fp32]``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["describe", "backbone_dtype", "apply_dtype", "METRIC_PROTOCOL_TEXT"]

METRIC_PROTOCOL_TEXT = {
    "paper": "paper protocol: LPIPS (AlexNet) and SSIM (11×11 Gaussian window, σ = 1.5) on Resize(256) + "
             "CenterCrop(256) RGB; FID per class (originals of the class vs its adversarials), averaged over classes",
    "native": "native protocol: SSIM (7×7 uniform window) and LPIPS (AlexNet) on the images as written "
              "(source geometry); FID over all successful examples",
}

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
    return {"label": f"{attack.name}[{', '.join(parts)}]", "attack": attack.name, "preset": name,
            "changes": changes, "resolution": res, "output": output, "precision": precision}


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
