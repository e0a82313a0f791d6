"""``p2p-desktop attack INPUT --attack NAME --classifier MODEL --out DIR [...]``"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from p2p_desktop.cli.cmd_classify import add_classifier_args, classifier_from_args
from p2p_desktop.cli.common import add_device_arg, emit_json, progress_bar, split_list

__all__ = ["add_parser", "run", "build_attack", "parse_params", "add_export_args", "check_export_args",
           "write_run_outputs", "audit_record", "print_run"]


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
    add_export_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run)


def add_export_args(p) -> None:
    """``--export-dicom``, ``--report``, ``--deidentify``, ``--audit-log`` (shared with ``rerun``)."""
    p.add_argument("--export-dicom", action="store_true",
                   help="also write the adversarial image as a DICOM derived from the source "
                        "(Secondary Capture for plain images)")
    p.add_argument("--report", metavar="FORMATS",
                   help="audit report formats, comma-separated: html, pdf (e.g. --report html,pdf)")
    p.add_argument("--deidentify", action="store_true",
                   help="de-identify the DICOM export (PS3.15 Annex E basic profile) and leave identifying "
                        "attributes out of the report")
    p.add_argument("--audit-log", metavar="FILE",
                   help="audit log to append to (default: $P2P_DESKTOP_AUDIT_LOG or the user data folder)")


def check_export_args(args) -> tuple[str, ...]:
    """Validate the export options before any work; returns the report formats."""
    from p2p_desktop.errors import InputError
    from p2p_desktop.export.report import parse_formats

    formats = parse_formats(args.report) if args.report is not None else ()
    if args.deidentify and not (args.export_dicom or formats):
        raise InputError("--deidentify applies to --export-dicom and --report; give at least one of them")
    return formats


def write_run_outputs(result, study, outs, *, input_sha256: str, export_dicom: bool = False,
                      deidentify: bool = False, reports: tuple[str, ...] = (), classifier_spec=None,
                      backbone_spec=None, label: str | None = None) -> dict:
    """Every output of one run, in order: PNG and perturbation, DICOM, provenance, the result
    JSON, then the reports (last, so they list the others). Returns the JSON summary."""
    from p2p_desktop.export.images import output_stem, write_image_outputs
    from p2p_desktop.export.provenance import write_provenance

    write_image_outputs(result, study, outs)
    if export_dicom:
        from p2p_desktop.export.dicom import export_dicom as _export_dicom

        _export_dicom(result, study, outs, deidentify=deidentify)
    options = {"export_dicom": bool(export_dicom), "deidentify": bool(deidentify), "report": list(reports)}
    write_provenance(result, study, outs, input_sha256=input_sha256, classifier_spec=classifier_spec,
                     backbone_spec=backbone_spec, label=label, options=options)
    summary = {"input": str(study.path), "input_sha256": input_sha256, **result.summary(),
               "outputs": list(outs.records)}
    outs.write_bytes(f"{output_stem(study, result.attack)}_result.json",
                     json.dumps(summary, indent=2, default=str).encode(), kind="result")
    if reports:
        from p2p_desktop.export.report import write_reports

        write_reports(result, study, outs, reports, input_sha256=input_sha256, deidentified=deidentify)
    summary["outputs"] = [r for r in outs.records if r["kind"] != "result"]
    summary["result_file"] = next(r["path"] for r in outs.records if r["kind"] == "result")
    return summary


def audit_record(summary: dict, command: str, outputs, **extra) -> dict:
    """The audit-log entry of one run: inputs, settings, model hashes, every output and its hash."""
    from p2p_desktop.audit import outputs_summary

    clf = summary.get("classifier") or {}
    bb = summary.get("backbone") or {}
    return {
        "command": command,
        "input": summary["input"], "input_sha256": summary["input_sha256"], "frame": summary.get("frame", 0),
        "attack": summary["attack"], "config": summary["config"],
        "classifier": {"name": clf.get("name"), "sha256": clf.get("sha256")},
        "backbone": {"name": bb.get("name"), "sha256": bb.get("sha256")} if bb else None,
        "device": summary["device"], "seed": summary["seed"], "success": summary["success"],
        "outputs": outputs_summary(outputs),
        **extra,
    }


def print_run(summary: dict, result, args, *, warnings: list[str] = ()) -> None:
    """Human-readable lines (stdout) or the JSON object; warnings always go to stderr."""
    for w in warnings:
        print(f"p2p-desktop: warning: {w}", file=sys.stderr)
    if args.json:
        emit_json(summary)
        return
    verdict = "SUCCESS" if result.success else "failed"
    m = result.metrics
    print(f"{result.attack}: {verdict}: {result.original_label} -> {result.adversarial_label} "
          f"(SSIM {m['ssim']:.3f}, L∞ {m['linf']:.4f}, {result.seconds:.1f} s, {result.iterations} it)")
    for rec in summary["outputs"]:
        print(f"  {rec['kind']:<12} {rec['path']}")
    for note in result.notes:
        if note not in warnings:
            print(f"  note: {note}", file=sys.stderr)


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
    from p2p_desktop.audit import AuditLog
    from p2p_desktop.cancel import CancelToken
    from p2p_desktop.device import resolve_device
    from p2p_desktop.export.provenance import model_spec
    from p2p_desktop.hashing import sha256_file
    from p2p_desktop.io import load_study
    from p2p_desktop.io.encode import encode_png  # noqa: F401 - keeps the import error early
    from p2p_desktop.io.outputs import OutputSet, check_output_dir

    # 1. validate everything before any work
    spec(args.attack)
    check_output_dir(args.out, [args.input])
    reports = check_export_args(args)
    attack = build_attack(args.attack, preset=args.preset, target=args.target, eps=args.eps,
                          steps=args.steps, seed=args.seed, params=parse_params(args.param))
    device = resolve_device(args.device)
    study = load_study(Path(args.input), frame=args.frame)
    classifier = classifier_from_args(args, device)
    backbone = None
    if attack.requires_backbone or args.backbone:
        from p2p_desktop.models.backbone import load_backbone

        backbone = load_backbone(args.backbone or "demo", device=device, config_dir=args.backbone_config)
    audit = AuditLog(args.audit_log)
    audit.check()
    if args.deidentify:
        # output file names must not carry the source's (possibly identifying) file name
        study.output_name = f"deid-{sha256_file(args.input)[:16]}"

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

    # 3. outputs (all or nothing), then the audit record (a failed append rolls the outputs back)
    notes_before = list(result.notes)
    clf_spec = model_spec(args.classifier, arch=args.arch, classes=split_list(args.classes) or None,
                          input_size=args.input_size)
    bb_spec = model_spec(args.backbone or "demo", config_dir=args.backbone_config) if backbone is not None else None
    with OutputSet(args.out, [args.input], cancel=cancel) as outs:
        summary = write_run_outputs(result, study, outs, input_sha256=sha256_file(args.input),
                                    export_dicom=args.export_dicom, deidentify=args.deidentify, reports=reports,
                                    classifier_spec=clf_spec, backbone_spec=bb_spec, label=args.label)
        entry = audit.append("attack", audit_record(summary, "attack", outs.records,
                                                        deidentified=bool(args.deidentify)))
    summary["audit"] = {"log": str(audit.path), "seq": entry["seq"], "hash": entry["hash"]}
    warnings = [n for n in result.notes if n not in notes_before]
    print_run(summary, result, args, warnings=warnings)
    return 0
