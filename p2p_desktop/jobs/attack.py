"""The attack job: run an attack on a study, write every output of the run through one
:class:`~p2p_desktop.io.outputs.OutputSet` and append its audit record inside that block (a
failed append rolls the outputs back). ``p2p-desktop attack``, ``rerun`` and the GUI go through
here::

    result = run(study, classifier, attack, backbone=backbone, on_step=bar, cancel=token)
    summary = save_run(result, study, out_dir, input_path=path, exports={"dicom": True},
                       audit=AuditLog(log), command="attack")

Which outputs can be written, in which order and by which writer is the export-format table
(:mod:`p2p_desktop.jobs.formats`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from p2p_desktop.jobs.audit import audit_run, audit_unfinished_run, record, run_record
from p2p_desktop.jobs.formats import FORMATS, WriteContext, cli_formats
from p2p_desktop.jsonsafe import finite_json

__all__ = ["run", "audited_run", "write_run_outputs", "run_summary", "save_run"]


def run(study, classifier, attack, *, backbone=None, on_step=None, cancel=None, true_label: str | None = None):
    """Run ``attack`` on ``study`` (:func:`p2p_desktop.attacks.runner.run_attack`); the result."""
    from p2p_desktop.attacks.runner import run_attack

    return run_attack(study, classifier, attack, backbone=backbone, on_step=on_step, cancel=cancel,
                      true_label=true_label)


def audited_run(study, attack, classifier: str, device: str, command: str, attempt: Callable[[], Any], *,
                describe: Callable[[BaseException], str] = str, log=None):
    """``attempt()`` (load the models, then :func:`run`), audited whatever happens: a finished run
    appends its record (a failing append becomes a note on the result), a cancelled or failed
    one a record of what was attempted (then the error is raised again). For runs that write no
    files yet (the GUI's Run); the CLI audits its runs with their outputs (:func:`save_run`)."""
    from p2p_desktop.errors import Cancelled, P2PError

    try:
        result = attempt()
    except Cancelled:
        _audit_unfinished(study, attack, classifier, device, command, "cancelled", log=log)
        raise
    except BaseException as exc:  # noqa: BLE001 - recorded, then raised again
        _audit_unfinished(study, attack, classifier, device, command, "failed", describe(exc), log=log)
        raise
    try:
        audit_run(result, study, command, log=log)
    except (P2PError, OSError) as exc:
        result.notes.append(f"this run could not be recorded in the audit log: {exc}")
    return result


def _audit_unfinished(study, attack, classifier, device, command, status, reason="", *, log=None) -> None:
    import logging

    try:
        audit_unfinished_run(study, attack, classifier, device, command, status, reason=reason, log=log)
    except Exception as exc:  # noqa: BLE001 - never hide the run's own outcome
        logging.getLogger("p2p_desktop").warning("the %s run could not be recorded in the audit log: %s",
                                                 status, exc)


def write_run_outputs(result, study, outs, *, input_sha256: str, exports: Mapping[str, Any] | None = None,
                      deidentify: bool = False, classifier_spec=None, backbone_spec=None, label: str | None = None,
                      audit_log=None) -> dict:
    """Every output of one run, in order: PNG and perturbation, the chosen formats of the table,
    provenance, the result JSON, then the formats that list the others (the reports).
    ``exports`` maps a format's key to its value (True, or e.g. the report formats); the PNG is
    always written. Returns the JSON summary."""
    from p2p_desktop.export.images import output_stem
    from p2p_desktop.export.provenance import write_provenance

    exports = {k: v for k, v in (exports or {}).items() if v}
    unknown = sorted(set(exports) - set(FORMATS))
    if unknown:
        raise KeyError(f"unknown export format(s): {', '.join(unknown)}")
    ctx = WriteContext(input_sha256=input_sha256, deidentify=bool(deidentify), audit_log=audit_log, label=label)
    first = [f for f in FORMATS.values() if not f.whole_record and (f.key == "png" or f.key in exports)]
    last = [f for f in FORMATS.values() if f.whole_record and f.key in exports]
    for fmt in first:
        fmt.write(result, study, outs, exports.get(fmt.key, True), ctx)
    options = {f.option: f.recorded(exports.get(f.key)) for f in cli_formats()}
    options["deidentify"] = bool(deidentify)
    write_provenance(result, study, outs, input_sha256=input_sha256, classifier_spec=classifier_spec,
                     backbone_spec=backbone_spec, label=label, options=options, deidentified=deidentify)
    summary = {**run_summary(result, study, input_sha256, deidentified=deidentify), "outputs": list(outs.records)}
    outs.write_bytes(f"{output_stem(study, result.attack)}_result.json",
                     json.dumps(finite_json(summary), indent=2, default=str, allow_nan=False).encode(),
                     kind="result")
    for fmt in last:
        fmt.write(result, study, outs, exports[fmt.key], ctx)
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


def save_run(result, study, out_dir, *, input_path, input_sha256: str, audit, command: str,
             exports: Mapping[str, Any] | None = None, deidentify: bool = False, classifier_spec=None,
             backbone_spec=None, label: str | None = None, cancel=None, pseudonym_map=None,
             audit_extra: Callable[[list[dict]], dict] | None = None,
             on_complete: Callable[[], None] | None = None) -> dict:
    """Write the run's outputs (:func:`write_run_outputs`) into ``out_dir`` and append its
    ``command`` record to ``audit`` (an :class:`~p2p_desktop.audit.AuditLog`) in one
    :class:`~p2p_desktop.io.outputs.OutputSet` block: all of it or nothing. ``study`` is already
    named by its pseudonym when ``deidentify``; ``pseudonym_map`` (only then) gets the one line
    that links the pseudonym to the source. ``audit_extra(records)`` adds fields to the record.
    ``on_complete()`` is called once all of it is written and audited, before a Ctrl-C or SIGTERM
    that arrived from the audit record on is acted on (they wait until then: a cancel can never
    roll back outputs that the audit log already records). Returns the summary, with ``audit``
    (log, seq, hash)."""
    from p2p_desktop.io.outputs import OutputSet, deferred_signals

    held = deferred_signals()
    try:
        with OutputSet(out_dir, [input_path], cancel=cancel) as outs:
            summary = write_run_outputs(result, study, outs, input_sha256=input_sha256, exports=exports,
                                        deidentify=deidentify, classifier_spec=classifier_spec,
                                        backbone_spec=backbone_spec, label=label, audit_log=audit.path)
            extra = audit_extra(list(outs.records)) if audit_extra else {}
            data = run_record(command, result, study, outs.records, input_sha256=input_sha256,
                              deidentified=bool(deidentify), **extra)
            held.__enter__()  # from the audit record to the end: all of it, or (rolled back) none
            entry = record(command, data, audit)
            if deidentify and pseudonym_map:  # only when asked: the one link to the source
                from p2p_desktop.jobs.pseudonyms import record_pseudonym

                record_pseudonym(pseudonym_map, study.output_name, study, input_sha256)
        summary["audit"] = {"log": str(audit.path), "seq": entry["seq"], "hash": entry["hash"]}
        if on_complete is not None:
            on_complete()
    finally:
        held.__exit__(None, None, None)
    return summary
