"""``p2p-desktop attack INPUT --attack NAME --classifier MODEL --out DIR [...]``"""

from __future__ import annotations

import sys
from pathlib import Path

from p2p_desktop.attacks.factory import build_attack, parse_params
from p2p_desktop.cli.cmd_classify import add_classifier_args, classifier_from_args
from p2p_desktop.cli.cmd_pacs import add_send_arg, send_outputs
from p2p_desktop.cli.common import (
    add_device_arg,
    add_dtype_arg,
    apply_dtype,
    emit_json,
    outputs_complete,
    progress_bar,
    seed_arg,
    split_list,
)

__all__ = ["add_parser", "run", "add_export_args", "check_export_args", "print_run"]


def add_parser(sub) -> None:
    """Register the ``attack`` sub-command and its options."""
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
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed, 0 to 2^63-1 (default 0)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other attack parameter (repeatable), e.g. --param alpha=0.005")
    p.add_argument("--label", help="true class of the image (default: the clean prediction)")
    p.add_argument("--frame", type=int, help="frame of a multi-frame (cine) DICOM (default 0)")
    add_device_arg(p)
    add_dtype_arg(p)
    add_export_args(p)
    add_send_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run)


def add_export_args(p) -> None:
    """The export-format table's options (``--export-dicom``, ``--report``, …), then ``--deidentify``,
    ``--audit-log`` and ``--pseudonym-map`` (shared with ``rerun``)."""
    from p2p_desktop.jobs.formats import cli_formats, deidentifiable

    for fmt in cli_formats():
        if fmt.cli_metavar:
            p.add_argument(fmt.cli_flag, metavar=fmt.cli_metavar, help=fmt.cli_help)
        else:
            p.add_argument(fmt.cli_flag, action="store_true", help=fmt.cli_help)
    p.add_argument("--deidentify", action="store_true",
                   help=f"de-identify the exports ({_and([f.cli_flag for f in deidentifiable()])}): PS3.15 Annex E "
                        "basic profile, no identifying attributes, files named by a random pseudonym")
    p.add_argument("--audit-log", metavar="FILE",
                   help="audit log to append to (default: $P2P_DESKTOP_AUDIT_LOG or the user data folder)")
    p.add_argument("--pseudonym-map", metavar="FILE",
                   help="with --deidentify: append the outputs' random pseudonym and the source path to this "
                        "local file (JSON lines); without it, nothing links them")


def _and(words: list[str]) -> str:
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 2 else words)


def check_export_args(args) -> dict:
    """Validate the export options before any work; returns the chosen formats as
    ``{key: value}`` (value True, or the parsed value of an option that takes one)."""
    from p2p_desktop.errors import InputError
    from p2p_desktop.jobs.formats import cli_formats, deidentifiable

    exports = {}
    for fmt in cli_formats():
        given = getattr(args, fmt.option, None)
        if fmt.cli_metavar and given is not None:
            exports[fmt.key] = fmt.parse(given) if fmt.parse else given
        elif given:
            exports[fmt.key] = True
    if args.deidentify and not any(exports.get(f.key) for f in deidentifiable()):
        raise InputError(f"--deidentify applies to {_and([f.cli_flag for f in deidentifiable()])}; "
                         "give at least one of them")
    if getattr(args, "pseudonym_map", None):
        if not args.deidentify:
            raise InputError("--pseudonym-map needs --deidentify")
        from p2p_desktop.jobs.pseudonyms import check_pseudonym_map

        check_pseudonym_map(args.pseudonym_map)
    return exports


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
    oracle = (result.info or {}).get("label_oracle") if isinstance(result.info, dict) else None
    if oracle is not None:
        if oracle.get("verdict") is None:
            print(f"  label oracle: not judged ({oracle.get('reason')})")
        else:
            valid = {True: "valid success", False: "not a valid success", None: ""}[oracle.get("valid_success")]
            print(f"  label oracle: {oracle['verdict']}{' -> ' + valid if valid else ''} ({oracle.get('reason')})")
    for rec in summary["outputs"]:
        print(f"  {rec['kind']:<12} {rec['path']}")
    for note in result.notes:
        if note not in warnings:
            print(f"  note: {note}", file=sys.stderr)
    from p2p_desktop.phantoms.oracle import CROSS_CLASS_NOTE, cross_class_backbone

    if cross_class_backbone(result.backbone):
        print(f"  note: {CROSS_CLASS_NOTE}", file=sys.stderr)


def run(args) -> int:
    """Attack one image and write the adversarial outputs (validated first); the exit code."""
    from p2p_desktop.attacks.registry import spec
    from p2p_desktop.audit import AuditLog
    from p2p_desktop.cancel import CancelToken
    from p2p_desktop.device import resolve_device
    from p2p_desktop.export.provenance import model_spec
    from p2p_desktop.hashing import sha256_file
    from p2p_desktop.io import load_study
    from p2p_desktop.io.encode import encode_png  # noqa: F401 - keeps the import error early
    from p2p_desktop.io.outputs import check_output_dir
    from p2p_desktop.jobs import attack as job

    # 1. validate everything before any work
    spec(args.attack)
    check_output_dir(args.out, [args.input])
    exports = check_export_args(args)
    from p2p_desktop.cli.cmd_pacs import check_send

    send_node = check_send(args)  # resolved and C-ECHOed: an unreachable node stops here, nothing written
    attack = build_attack(args.attack, preset=args.preset, target=args.target, eps=args.eps,
                          steps=args.steps, seed=args.seed, params=parse_params(args.param))
    device = resolve_device(args.device)
    attack = apply_dtype(attack, args.dtype, device)
    study = load_study(Path(args.input), frame=args.frame)
    classifier = classifier_from_args(args, device)
    backbone = None
    if attack.requires_backbone or args.backbone:
        from p2p_desktop.attacks.procedure import backbone_dtype
        from p2p_desktop.models.backbone import load_backbone

        backbone = load_backbone(args.backbone or "demo", device=device, config_dir=args.backbone_config,
                                 dtype=backbone_dtype([attack]))
    audit = AuditLog(args.audit_log)
    audit.check()
    if args.deidentify:
        # output names carry neither the source's file name nor anything derived from its bytes
        from p2p_desktop.export.deidentify import deidentified_study

        study = deidentified_study(study)

    # 2. the attack, with a progress bar on stderr
    cancel = CancelToken()
    total = attack.total_steps()
    with progress_bar(total, f"{attack.name}", unit="it") as bar:
        def on_step(ev):
            bar.total = max(bar.total or 0, ev.total)
            bar.update(1)
            bar.set_postfix(loss=f"{ev.loss:.3f}", refresh=False)

        result = job.run(study, classifier, attack, backbone=backbone, on_step=on_step, cancel=cancel,
                         true_label=args.label)

    # 3. outputs (all or nothing), then the audit record (a failed append rolls the outputs back)
    notes_before = list(result.notes)
    clf_spec = model_spec(args.classifier, arch=args.arch, classes=split_list(args.classes) or None,
                          input_size=args.input_size)
    bb_spec = model_spec(args.backbone or "demo", config_dir=args.backbone_config) if backbone is not None else None
    summary = job.save_run(result, study, args.out, input_path=args.input, input_sha256=sha256_file(args.input),
                           audit=audit, command="attack", exports=exports, deidentify=bool(args.deidentify),
                           classifier_spec=clf_spec, backbone_spec=bb_spec, label=args.label, cancel=cancel,
                           pseudonym_map=args.pseudonym_map if args.deidentify else None,
                           on_complete=outputs_complete)  # from here a SIGTERM keeps them: exit 0
    from p2p_desktop.input_check import WARNING_PREFIX

    if send_node is not None:
        summary["sent"] = send_outputs(send_node, summary["outputs"], args)
    from p2p_desktop.attacks.procedure import RESOLUTION_WARNING_PREFIX

    warnings = [n for n in result.notes
                if n not in notes_before or n.startswith((WARNING_PREFIX, RESOLUTION_WARNING_PREFIX))]
    print_run(summary, result, args, warnings=warnings)
    return 0
