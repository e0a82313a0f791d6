"""``p2p-desktop rerun PROVENANCE.json --out DIR [--device D] [--json]``

Reproduce a recorded run: the input and model weights are checked against the hashes in the
record first (exit 2 naming what changed), then the same attack runs with the same config,
seed, true label and export options. The JSON output adds ``"reproduced"``: whether the new
adversarial PNG is byte-identical to the recorded one (expected on CPU with the same library
versions; GPU kernels are not bit-reproducible).
"""

from __future__ import annotations

from pathlib import Path

from p2p_desktop.cli.common import progress_bar

__all__ = ["add_parser", "run", "rerun"]


def add_parser(sub) -> None:
    p = sub.add_parser("rerun", help="reproduce a run from its provenance record")
    p.add_argument("provenance", metavar="PROVENANCE.json", help="provenance record written by `attack`")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (outside the input's folder)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"],
                   help="compute device (default: the recorded one; byte-identical results need the same)")
    p.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"],
                   help="precision of the diffusion backbone (default: the recorded one)")
    p.add_argument("--audit-log", metavar="FILE",
                   help="audit log to append to (default: $P2P_DESKTOP_AUDIT_LOG or the user data folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run)


def _load_classifier(spec: dict, device: str):
    from p2p_desktop.models.classifier import load_classifier

    classes = spec.get("classes")
    return load_classifier(spec["spec"], arch=spec.get("arch"), classes=list(classes) if classes else None,
                           input_size=spec.get("input_size"), device=device)


def rerun(record: dict, out_dir: str | Path, *, device: str | None = None, audit_log: str | None = None,
          on_step=None, cancel=None, dtype: str | None = None):
    """Reproduce the run described by ``record`` into ``out_dir``: ``(summary, result)``.

    ``summary`` is the ``attack`` JSON contract plus ``reproduced`` (new PNG bytes equal to the
    recorded ones) and ``recorded_png_sha256``. Raises :class:`InputError` when the input is
    missing or changed, :class:`ModelError` when a model's weights differ from the record.
    """
    from p2p_desktop.attacks.registry import get
    from p2p_desktop.attacks.runner import run_attack
    from p2p_desktop.audit import AuditLog
    from p2p_desktop.cancel import CancelToken
    from p2p_desktop.export.run_outputs import audit_record, write_run_outputs
    from p2p_desktop.device import resolve_device
    from p2p_desktop.errors import InputError
    from p2p_desktop.export.provenance import verify_input, verify_model_hash
    from p2p_desktop.io import load_study
    from p2p_desktop.io.outputs import OutputSet, check_output_dir

    # 1. the recorded input, unchanged, and an output folder outside its folder
    input_path = verify_input(record)
    check_output_dir(out_dir, [input_path])
    info = record["input"]
    options = record.get("options") or {}
    cls = get(record["attack"]["name"])
    recorded_plugin = record["attack"].get("plugin")
    if isinstance(recorded_plugin, dict):  # the same plugin code, or no re-run
        from p2p_desktop import plugins

        now = plugins.loaded(record["attack"]["name"]) or {}
        if now.get("sha256") != recorded_plugin.get("sha256"):
            raise InputError(f"attack plugin {record['attack']['name']!r} differs from the recorded run: SHA-256 "
                             f"{str(now.get('sha256'))[:16]}… but the record says "
                             f"{str(recorded_plugin.get('sha256'))[:16]}…")
    attack = cls(cls.Config.from_dict(dict(record["attack"].get("config") or {})))
    recorded_device = str(record.get("device") or "cpu")
    dev = resolve_device(device or ("cuda" if recorded_device.startswith("cuda") else recorded_device))
    from p2p_desktop.cli.common import apply_dtype

    attack = apply_dtype(attack, dtype, dev)
    study = load_study(input_path, frame=info.get("frame"))

    # 2. the same models, checked against the recorded weight hashes
    notes = []
    clf_spec = record["classifier"]
    if not clf_spec.get("spec"):
        raise InputError("the provenance record does not say which classifier was used")
    classifier = _load_classifier(clf_spec, dev)
    note = verify_model_hash("classifier", clf_spec.get("weights_sha256"), classifier.identity())
    if note:
        notes.append(note)
    backbone = None
    bb_spec = record.get("backbone")
    if bb_spec:
        from p2p_desktop.models.backbone import load_backbone

        from p2p_desktop.attacks.procedure import backbone_dtype

        backbone = load_backbone(bb_spec["spec"], device=dev, config_dir=bb_spec.get("config_dir"),
                                 dtype=backbone_dtype([attack]))
        note = verify_model_hash("backbone", bb_spec.get("weights_sha256"), backbone.identity())
        if note:
            notes.append(note)
    audit = AuditLog(audit_log)
    audit.check()

    # 3. the attack again
    cancel = cancel or CancelToken()
    result = run_attack(study, classifier, attack, backbone=backbone, on_step=on_step, cancel=cancel,
                        true_label=info.get("true_label"))
    result.notes.extend(notes)
    reports = tuple(options.get("report") or ())
    with OutputSet(out_dir, [input_path], cancel=cancel) as outs:
        summary = write_run_outputs(
            result, study, outs, input_sha256=info.get("sha256") or "", export_dicom=bool(options.get("export_dicom")),
            deidentify=bool(options.get("deidentify")), reports=reports,
            classifier_spec={k: v for k, v in clf_spec.items() if k not in ("weights_sha256", "identity")},
            backbone_spec={k: v for k, v in bb_spec.items() if k not in ("weights_sha256", "identity")}
            if bb_spec else None,
            label=info.get("true_label"), audit_log=audit.path)
        recorded_png = next((o["sha256"] for o in record.get("outputs", []) if o.get("kind") == "png"), None)
        new_png = next((o["sha256"] for o in outs.records if o["kind"] == "png"), None)
        reproduced = bool(recorded_png) and recorded_png == new_png
        entry = audit.append("rerun", audit_record(summary, "rerun", outs.records, reproduced=reproduced,
                                                   recorded_png_sha256=recorded_png))
    summary["reproduced"] = reproduced
    summary["recorded_png_sha256"] = recorded_png
    summary["audit"] = {"log": str(audit.path), "seq": entry["seq"], "hash": entry["hash"]}
    if not reproduced:
        why = ("the record has no PNG hash" if not recorded_png else
               f"device {dev} vs recorded {recorded_device}" if dev != recorded_device else
               "same device; library versions may differ: compare `versions` in the record")
        result.notes.append(f"the adversarial PNG differs from the recorded one ({why})")
        summary["notes"] = list(result.notes)
    return summary, result


def run(args) -> int:
    from p2p_desktop.cli.cmd_attack import print_run
    from p2p_desktop.export.provenance import load_provenance

    record = load_provenance(args.provenance)
    with progress_bar(1, f"rerun {record['attack']['name']}", unit="it") as bar:
        def on_step(ev):
            bar.total = max(bar.total or 0, ev.total)
            bar.update(1)

        summary, result = rerun(record, args.out, device=args.device, audit_log=args.audit_log, on_step=on_step,
                                dtype=args.dtype)
    warnings = [n for n in result.notes if n.startswith(("de-identification", "classifier:", "backbone:"))
                or "differs from the recorded" in n]
    print_run(summary, result, args, warnings=warnings)
    if not args.json:
        state = "byte-identical to" if summary["reproduced"] else "NOT identical to"
        print(f"  adversarial PNG {state} the recorded run")
    return 0
