"""All outputs of one attack run, written in a fixed order through one OutputSet, and its
audit-log record. Shared by the CLI (``attack``, ``rerun``) and the GUI's export actions."""

from __future__ import annotations

import json

from p2p_desktop.jsonsafe import finite_json

__all__ = ["write_run_outputs", "audit_record"]


def write_run_outputs(result, study, outs, *, input_sha256: str, export_dicom: bool = False,
                      deidentify: bool = False, reports: tuple[str, ...] = (), classifier_spec=None,
                      backbone_spec=None, label: str | None = None, audit_log=None) -> dict:
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
                     json.dumps(finite_json(summary), indent=2, default=str, allow_nan=False).encode(),
                     kind="result")
    if reports:
        from p2p_desktop.export.report import write_reports

        write_reports(result, study, outs, reports, input_sha256=input_sha256, deidentified=deidentify,
                      audit_log=audit_log)
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
