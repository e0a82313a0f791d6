"""The rerun job: reproduce a recorded run from its provenance record.

The input and model weights are checked against the hashes in the record first (InputError /
ModelError naming what changed), then the same attack runs with the same config, seed, true
label and export options, and its outputs and ``rerun`` audit record are written as
``attack`` writes them (:func:`p2p_desktop.jobs.attack.save_run`). The summary adds
``reproduced``: whether the new adversarial PNG is byte-identical to the recorded one (expected
on CPU with the same library versions; GPU kernels are not bit-reproducible).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["rerun", "load_recorded_classifier"]


def load_recorded_classifier(spec: dict, device: str):
    """The classifier a provenance record names (``spec``, ``arch``, ``classes``, ``input_size``)."""
    from p2p_desktop.models.classifier import load_classifier

    classes = spec.get("classes")
    return load_classifier(spec["spec"], arch=spec.get("arch"), classes=list(classes) if classes else None,
                           input_size=spec.get("input_size"), device=device)


def _check_plugin(record: dict) -> None:
    """The same attack plugin code as recorded, or no re-run."""
    from p2p_desktop.errors import InputError

    recorded_plugin = record["attack"].get("plugin")
    if not isinstance(recorded_plugin, dict):
        return
    from p2p_desktop import plugins

    now = plugins.loaded(record["attack"]["name"]) or {}
    if now.get("sha256") != recorded_plugin.get("sha256"):
        raise InputError(f"attack plugin {record['attack']['name']!r} differs from the recorded run: SHA-256 "
                         f"{str(now.get('sha256'))[:16]}… but the record says "
                         f"{str(recorded_plugin.get('sha256'))[:16]}…")


def rerun(record: dict, out_dir: str | Path, *, device: str | None = None, audit_log: str | None = None,
          on_step=None, cancel=None, dtype: str | None = None, on_complete=None):
    """Reproduce the run described by ``record`` into ``out_dir``: ``(summary, result)``.

    ``summary`` is the ``attack`` JSON contract plus ``reproduced`` (new PNG bytes equal to the
    recorded ones) and ``recorded_png_sha256``. Raises :class:`InputError` when the input is
    missing or changed, :class:`ModelError` when a model's weights differ from the record.
    """
    from p2p_desktop.attacks.procedure import apply_dtype
    from p2p_desktop.attacks.registry import get
    from p2p_desktop.audit import AuditLog
    from p2p_desktop.cancel import CancelToken
    from p2p_desktop.device import resolve_device
    from p2p_desktop.errors import InputError
    from p2p_desktop.export.provenance import verify_input, verify_model_hash
    from p2p_desktop.io import load_study
    from p2p_desktop.io.outputs import check_output_dir
    from p2p_desktop.jobs.attack import run, save_run
    from p2p_desktop.jobs.formats import cli_formats

    # 1. the recorded input, unchanged, and an output folder outside its folder
    input_path = verify_input(record)
    check_output_dir(out_dir, [input_path])
    info = record["input"]
    options = record.get("options") or {}
    cls = get(record["attack"]["name"])
    _check_plugin(record)
    attack = cls(cls.Config.from_dict(dict(record["attack"].get("config") or {})))
    recorded_device = str(record.get("device") or "cpu")
    dev = resolve_device(device or ("cuda" if recorded_device.startswith("cuda") else recorded_device))
    attack = apply_dtype(attack, dtype, dev)
    study = load_study(input_path, frame=info.get("frame"))
    if options.get("deidentify"):  # outputs named by a new random pseudonym, as `attack --deidentify` names them
        from p2p_desktop.jobs.pseudonyms import deidentified_study

        study = deidentified_study(study)

    # 2. the same models, checked against the recorded weight hashes
    notes = []
    clf_spec = record["classifier"]
    if not clf_spec.get("spec"):
        raise InputError("the provenance record does not say which classifier was used")
    classifier = load_recorded_classifier(clf_spec, dev)
    note = verify_model_hash("classifier", clf_spec.get("weights_sha256"), classifier.identity())
    if note:
        notes.append(note)
    backbone = None
    bb_spec = record.get("backbone")
    if bb_spec:
        from p2p_desktop.attacks.procedure import backbone_dtype
        from p2p_desktop.models.backbone import load_backbone

        backbone = load_backbone(bb_spec["spec"], device=dev, config_dir=bb_spec.get("config_dir"),
                                 dtype=backbone_dtype([attack]))
        note = verify_model_hash("backbone", bb_spec.get("weights_sha256"), backbone.identity())
        if note:
            notes.append(note)
    audit = AuditLog(audit_log)
    audit.check()

    # 3. the attack again, written with the recorded export options
    cancel = cancel or CancelToken()
    result = run(study, classifier, attack, backbone=backbone, on_step=on_step, cancel=cancel,
                 true_label=info.get("true_label"))
    result.notes.extend(notes)
    exports = {f.key: options.get(f.option) for f in cli_formats()}
    recorded_png = next((o["sha256"] for o in record.get("outputs", []) if o.get("kind") == "png"), None)

    outcome: dict = {}

    def reproduction(records: list[dict]) -> dict:  # the rerun record says whether the PNG is the same
        new_png = next((o["sha256"] for o in records if o["kind"] == "png"), None)
        outcome.update(reproduced=bool(recorded_png) and recorded_png == new_png, recorded_png_sha256=recorded_png)
        return dict(outcome)

    summary = save_run(
        result, study, out_dir, input_path=input_path, input_sha256=info.get("sha256") or "", audit=audit,
        command="rerun", exports=exports, deidentify=bool(options.get("deidentify")),
        classifier_spec={k: v for k, v in clf_spec.items() if k not in ("weights_sha256", "identity")},
        backbone_spec={k: v for k, v in bb_spec.items() if k not in ("weights_sha256", "identity")}
        if bb_spec else None,
        label=info.get("true_label"), cancel=cancel, audit_extra=reproduction, on_complete=on_complete)
    summary.update(outcome)
    if not outcome["reproduced"]:
        why = ("the record has no PNG hash" if not recorded_png else
               f"device {dev} vs recorded {recorded_device}" if dev != recorded_device else
               "same device; library versions may differ: compare `versions` in the record")
        result.notes.append(f"the adversarial PNG differs from the recorded one ({why})")
        summary["notes"] = list(result.notes)
    return summary, result
