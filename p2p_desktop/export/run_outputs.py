"""All outputs of one attack run, written in a fixed order through one OutputSet, and its
audit-log record. Shared by the CLI (``attack``, ``rerun``) and the GUI's export actions."""

from __future__ import annotations

import json
import secrets

from p2p_desktop.jsonsafe import finite_json

__all__ = ["pseudonym", "deidentified_study", "record_pseudonym", "check_pseudonym_map", "write_run_outputs",
           "run_summary", "audit_record", "audit_run", "audit_unfinished_run",
           "audit_evaluation", "audit_unfinished_evaluation"]


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
                     backbone_spec=backbone_spec, label=label, options=options, deidentified=deidentify)
    summary = {**run_summary(result, study, input_sha256, deidentified=deidentify), "outputs": list(outs.records)}
    outs.write_bytes(f"{output_stem(study, result.attack)}_result.json",
                     json.dumps(finite_json(summary), indent=2, default=str, allow_nan=False).encode(),
                     kind="result")
    if reports:
        from p2p_desktop.export.report import write_reports

        write_reports(result, study, outs, reports, input_sha256=input_sha256, deidentified=deidentify,
                      audit_log=audit_log, given_label=label)
    summary["outputs"] = [r for r in outs.records if r["kind"] != "result"]
    summary["result_file"] = next(r["path"] for r in outs.records if r["kind"] == "result")
    return summary


def run_summary(result, study, input_sha256: str, *, deidentified: bool = False) -> dict:
    """The JSON summary of one run: its input (path and SHA-256) and the result's summary.
    De-identified: no input path or hash (only the pseudonym the outputs are named by)."""
    if deidentified:
        return {"input": None, "input_sha256": None, "deidentified": True, "pseudonym": study.output_name,
                **result.summary()}
    return {"input": str(study.path), "input_sha256": input_sha256, **result.summary()}


# -- pseudonyms of de-identified outputs ------------------------------------------------------------
def pseudonym() -> str:
    """A fresh random name stem for de-identified outputs (not derived from the source)."""
    return f"deid-{secrets.token_hex(8)}"


def deidentified_study(study, name: str | None = None):
    """The study with a pseudonymous output name (a new random one unless ``name`` is given)."""
    import dataclasses

    return dataclasses.replace(study, output_name=name or pseudonym())


def check_pseudonym_map(path) -> None:
    """Refuse early (InputError) when the pseudonym map cannot be appended to."""
    import os
    from pathlib import Path

    from p2p_desktop.errors import InputError

    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"--pseudonym-map {p}: is a folder; give a file (e.g. pseudonyms.jsonl)")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"--pseudonym-map {p}: folder {folder} does not exist")
    if (p.exists() and not os.access(p, os.W_OK)) or not os.access(folder, os.W_OK):
        raise InputError(f"--pseudonym-map {p}: not writable")


def record_pseudonym(path, name: str, study, input_sha256: str) -> None:
    """Append ``{pseudonym, input, input_sha256, frame, created}`` as one JSON line to the local
    mapping file (created readable by its owner only). Only when the user asks for one."""
    import datetime as _dt
    import os
    from pathlib import Path

    from p2p_desktop.errors import OutputError

    p = Path(path).expanduser()
    line = json.dumps({"pseudonym": name, "input": str(Path(study.path).resolve()), "input_sha256": input_sha256,
                       "frame": int(getattr(study, "frame_index", 0)),
                       "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    try:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        raise OutputError(f"cannot append to the pseudonym map {p}: {exc.strerror or exc}") from None


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


def audit_run(result, study, command: str, outputs=(), *, log=None, **extra) -> dict:
    """Append the audit record of a finished run that wrote no files yet (the GUI's Run):
    the same record as ``p2p-desktop attack`` appends (:func:`audit_record`). Returns it."""
    from p2p_desktop.audit import append_event
    from p2p_desktop.hashing import sha256_file

    summary = run_summary(result, study, sha256_file(study.path))
    return append_event("attack", audit_record(summary, command, list(outputs), status="finished", **extra), log)


def audit_unfinished_run(study, attack, classifier: str, device: str, command: str, status: str, *,
                         reason: str = "", log=None) -> dict:
    """Append the audit record of a run that produced nothing (``status``: cancelled or failed):
    what was attempted on which input, with the same fields as :func:`audit_record` where known."""
    from p2p_desktop.audit import append_event
    from p2p_desktop.hashing import sha256_file

    cfg = attack.config.to_dict()
    data = {"command": command, "status": status, "input": str(study.path), "input_sha256": sha256_file(study.path),
            "frame": int(getattr(study, "frame_index", 0)), "attack": attack.name, "config": cfg,
            "classifier": {"name": classifier, "sha256": None}, "backbone": None, "device": device,
            "seed": cfg.get("seed"), "success": None, "outputs": []}
    if reason:
        data["reason"] = reason
    return append_event("attack", data, log)


def audit_evaluation(dataset, out_dir, config: dict, fingerprint: str, outputs, *, attacked: int = 0,
                     resumed: int = 0, command: str = "evaluate", log=None) -> dict:
    """Append the audit record of a finished evaluation (CLI ``evaluate`` and the GUI's Batch view
    both run :func:`p2p_desktop.evaluate.evaluate`, which calls this): the dataset, the settings
    and their fingerprint, how many jobs ran, and every output with its SHA-256."""
    from p2p_desktop.audit import append_event, outputs_summary

    data = {"command": command, "status": "finished", "dataset": str(dataset), "out": str(out_dir),
            "config": config, "fingerprint": fingerprint, "attacked": int(attacked), "resumed": int(resumed),
            "outputs": outputs_summary(outputs)}
    return append_event("evaluate", data, log)


def audit_unfinished_evaluation(dataset, out_dir, attacks, classifiers, status: str, *, reason: str = "",
                                command: str = "evaluate", log=None) -> dict:
    """Append the audit record of an evaluation that did not finish (``status``: cancelled)."""
    from p2p_desktop.audit import append_event

    data = {"command": command, "status": status, "dataset": str(dataset), "out": str(out_dir),
            "attacks": list(attacks), "classifiers": list(classifiers), "outputs": []}
    if reason:
        data["reason"] = reason
    return append_event("evaluate", data, log)
