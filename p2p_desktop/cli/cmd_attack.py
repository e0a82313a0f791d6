"""``p2p-desktop attack INPUT --attack NAME --classifier MODEL --out DIR [...]``"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from p2p_desktop.cli.cmd_classify import add_classifier_args, classifier_from_args
from p2p_desktop.cli.common import add_device_arg, emit_json, progress_bar

__all__ = ["add_parser", "run", "build_attack", "parse_params"]


def add_parser(sub) -> None:
    p = sub.add_parser("attack", help="attack one image and write the adversarial outputs")
    p.add_argument("input", metavar="INPUT", help="DICOM or image file")
    p.add_argument("--attack", required=True, help="fgsm, pgd, diff-pgd, p2p (or a plugin's)")
    add_classifier_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (outside the input's folder)")
    p.add_argument("--backbone", help="diffusion backbone: 'demo' or a local diffusers SD folder / .safetensors")
    p.add_argument("--backbone-config", metavar="FOLDER", help="config folder for a single-file checkpoint")
    p.add_argument("--preset", help="attack preset (p2p: paper or fast)")
    p.add_argument("--target", help="target class (targeted attack); default untargeted")
    p.add_argument("--eps", type=float, help="perturbation budget ε in [0,1] pixel units")
    p.add_argument("--steps", type=int, help="number of iterations")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other attack parameter (repeatable), e.g. --param alpha=0.005")
    p.add_argument("--label", help="true class of the image (default: the clean prediction)")
    p.add_argument("--frame", type=int, help="frame of a multi-frame (cine) DICOM (default 0)")
    add_device_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run)


def parse_params(items: list[str]) -> dict[str, str]:
    from p2p_desktop.errors import InputError

    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--param {item!r}: expected KEY=VALUE")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def build_attack(name: str, *, preset=None, target=None, eps=None, steps=None, seed=0, params=None):
    """An attack instance from CLI-style options (validated; bad values raise InputError)."""
    from dataclasses import fields

    from p2p_desktop.attacks.registry import get
    from p2p_desktop.errors import InputError

    cls = get(name)
    known = {f.name for f in fields(cls.Config)}
    overrides: dict = dict(params or {})
    overrides["seed"] = seed
    if target:
        overrides["target"] = target
    for key, value in (("eps", eps), ("steps", steps)):
        if value is not None:
            if key not in known:
                raise InputError(f"--{key} does not apply to attack {name!r}")
            overrides[key] = value
    return cls.from_preset(preset, **overrides)


def run(args) -> int:
    from p2p_desktop.attacks.registry import spec
    from p2p_desktop.attacks.runner import run_attack
    from p2p_desktop.cancel import CancelToken
    from p2p_desktop.device import resolve_device
    from p2p_desktop.export.images import output_stem, write_image_outputs
    from p2p_desktop.hashing import sha256_file
    from p2p_desktop.io import load_study
    from p2p_desktop.io.encode import encode_png  # noqa: F401 - keeps the import error early
    from p2p_desktop.io.outputs import OutputSet, check_output_dir

    # 1. validate everything before any work
    spec(args.attack)
    check_output_dir(args.out, [args.input])
    attack = build_attack(args.attack, preset=args.preset, target=args.target, eps=args.eps,
                          steps=args.steps, seed=args.seed, params=parse_params(args.param))
    device = resolve_device(args.device)
    study = load_study(Path(args.input), frame=args.frame)
    classifier = classifier_from_args(args, device)
    backbone = None
    if attack.requires_backbone or args.backbone:
        from p2p_desktop.models.backbone import load_backbone

        backbone = load_backbone(args.backbone or "demo", device=device, config_dir=args.backbone_config)

    # 2. the attack, with a progress bar on stderr
    cancel = CancelToken()
    total = attack.total_steps()
    with progress_bar(total, f"{attack.name}", unit="it") as bar:
        def on_step(ev):
            bar.total = max(bar.total or 0, ev.total)
            bar.update(1)
            bar.set_postfix(loss=f"{ev.loss:.3f}", refresh=False)

        result = run_attack(study, classifier, attack, backbone=backbone, on_step=on_step, cancel=cancel,
                            true_label=args.label)

    # 3. outputs (all or nothing)
    with OutputSet(args.out, [args.input]) as outs:
        write_image_outputs(result, study, outs)
        summary = {"input": str(Path(args.input)), "input_sha256": sha256_file(args.input), **result.summary(),
                   "outputs": list(outs.records)}
        outs.write_bytes(f"{output_stem(study, attack.name)}_result.json",
                         json.dumps(summary, indent=2, default=str).encode(), kind="result")
    summary["outputs"] = [r for r in outs.records if r["kind"] != "result"]
    summary["result_file"] = next(r["path"] for r in outs.records if r["kind"] == "result")
    if args.json:
        emit_json(summary)
    else:
        verdict = "SUCCESS" if result.success else "failed"
        m = result.metrics
        print(f"{attack.name}: {verdict}: {result.original_label} -> {result.adversarial_label} "
              f"(SSIM {m['ssim']:.3f}, L∞ {m['linf']:.4f}, {result.seconds:.1f} s, {result.iterations} it)")
        for rec in outs.records:
            print(f"  {rec['kind']:<12} {rec['path']}")
        for note in result.notes:
            print(f"  note: {note}", file=sys.stderr)
    return 0
