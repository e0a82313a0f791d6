"""The audit records of runs and exports, from every surface (CLI, GUI), built by one function.

:func:`run_record` is the one builder: a run (``attack``, ``rerun``, the GUI's Run), a run that
produced nothing (cancelled or failed) and an export of an existing run (the GUI's export
actions) all describe the same things with the same fields::

    command, input, input_sha256, frame, attack, config, classifier {name, sha256},
    backbone {name, sha256} | null, device, seed, success, deidentified, outputs [{kind, path, sha256}]

De-identified records name no input: ``input`` and ``input_sha256`` are null and
``input_keyed_digest`` is :func:`p2p_desktop.audit.source_digest` of the source's SHA-256 (only a
holder of the installation's audit key and of the source can match it).

:func:`record` appends any record (the evaluate job calls it too); the chained, keyed log
itself is :mod:`p2p_desktop.audit`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from p2p_desktop.audit import AuditLog, outputs_summary, source_digest

__all__ = ["record", "run_record", "audit_run", "audit_unfinished_run", "audit_export",
           "GUI_RUN", "GUI_EXPORT"]

#: The ``command`` of the records of runs and exports started from the window.
GUI_RUN = "gui-run"
GUI_EXPORT = "gui-export"

LogPath = str | os.PathLike | None


def record(event: str, data: dict[str, Any], log: LogPath | AuditLog = None) -> dict[str, Any]:
    """Append one record (``event``, ``data``) to ``log`` (an :class:`AuditLog`, a path, or the
    default log) and return it with its ``seq``, ``hash`` and ``mac``."""
    audit = log if isinstance(log, AuditLog) else AuditLog(log)
    return audit.append(event, data)


def run_record(command: str, result: Any, study: Any, outputs: Iterable[dict[str, str]] = (), *,
               input_sha256: str | None = None, deidentified: bool = False, **extra: Any) -> dict[str, Any]:
    """The audit data of one run or export: inputs, settings, model hashes, every output and its
    hash (see the module docstring). ``result`` may lack fields (None then); ``extra`` is added."""
    clf = getattr(result, "classifier", None) or {}
    bb = getattr(result, "backbone", None) or {}
    frame = getattr(study, "frame_index", None)
    data = {
        "command": command,
        # de-identified: neither the input's path nor its SHA-256 (which would link the pseudonymous
        # outputs to the source); a keyed digest only a holder of the audit key and the source can match
        "input": None if deidentified else str(study.path),
        "input_sha256": None if deidentified else input_sha256,
        "frame": int(frame if frame is not None else getattr(result, "frame", 0) or 0),
        "attack": getattr(result, "attack", None),
        "config": getattr(result, "config", None),
        "classifier": {"name": clf.get("name"), "sha256": clf.get("sha256")},
        "backbone": {"name": bb.get("name"), "sha256": bb.get("sha256")} if bb else None,
        "device": getattr(result, "device", None),
        "seed": getattr(result, "seed", None),
        "success": getattr(result, "success", None),
        "deidentified": bool(deidentified),
        "outputs": outputs_summary(outputs),
    }
    if deidentified:
        data["input_keyed_digest"] = source_digest(input_sha256) if input_sha256 else None
    data.update(extra)
    return data


def _sha256(path) -> str | None:
    from p2p_desktop.hashing import sha256_file

    return sha256_file(path) if Path(path).is_file() else None


def audit_run(result, study, command: str, outputs=(), *, log: LogPath | AuditLog = None,
              **extra) -> dict[str, Any]:
    """Append the ``attack`` record of a finished run that wrote no files yet (the GUI's Run)."""
    data = run_record(command, result, study, list(outputs), input_sha256=_sha256(study.path), status="finished",
                      **extra)
    return record("attack", data, log)


def audit_unfinished_run(study, attack, classifier: str, device: str, command: str, status: str, *,
                         reason: str = "", log: LogPath | AuditLog = None) -> dict[str, Any]:
    """Append the ``attack`` record of a run that produced nothing (``status``: cancelled or
    failed): what was attempted on which input, the fields of :func:`run_record` where known
    (the classifier's hash read from its card or weights, as a finished run records it)."""
    from p2p_desktop.models.classifier import classifier_sha256

    cfg = attack.config.to_dict()
    attempt = SimpleNamespace(attack=attack.name, config=cfg,
                              classifier={"name": classifier, "sha256": classifier_sha256(classifier)},
                              backbone=None, device=device, seed=cfg.get("seed"), success=None)
    extra = {"reason": reason} if reason else {}
    return record("attack", run_record(command, attempt, study, [], input_sha256=_sha256(study.path),
                                       status=status, **extra), log)


def audit_export(what: str, result, study, outputs: Iterable[dict[str, str]], *, deidentified: bool = False,
                 command: str = GUI_EXPORT, log: LogPath | AuditLog = None) -> dict[str, Any]:
    """Append the ``export`` record of files written from an existing run (``what``: the format's
    key). Call it inside the ``OutputSet`` block, after the last write, so a failed append rolls
    the export back::

        with OutputSet(folder, [study.path]) as outs:
            export_dicom(result, study, outs, deidentify=True)
            audit_export("dicom", result, study, outs.records, deidentified=True)
    """
    data = run_record(command, result, study, outputs, input_sha256=_sha256(study.path),
                      deidentified=deidentified, what=what)
    return record("export", data, log)
