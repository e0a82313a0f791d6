"""The export job: write one format of the export-format table from a finished run, and its
``export`` audit record, in one :class:`~p2p_desktop.io.outputs.OutputSet` block (all or nothing).
The GUI's export actions run it on a worker thread; it needs no widget::

    records = export(result, study, "dicom", folder, deidentify=True, pseudonym="deid-…")
"""

from __future__ import annotations

from typing import Any

from p2p_desktop.jobs.audit import GUI_EXPORT, audit_export
from p2p_desktop.jobs.formats import WriteContext, export_format

__all__ = ["export"]


def export(result, study, key: str, folder, *, value: Any = True, deidentify: bool = False,
           pseudonym: str | None = None, classifier_spec=None, backbone_spec=None, cancel=None,
           command: str = GUI_EXPORT, log=None) -> list[dict[str, str]]:
    """Write format ``key`` of ``result`` into ``folder`` and append its audit record; returns the
    written files' records (kind, path, sha256). De-identified: the files are named by
    ``pseudonym`` (a new random one when None) and the record names no input. A format that
    lists the run's outputs (the report) is written with the whole record, as ``attack`` does."""
    from p2p_desktop.io.outputs import OutputSet

    fmt = export_format(key)
    source = study
    if deidentify:
        from p2p_desktop.export.deidentify import deidentified_study

        study = deidentified_study(study, pseudonym)
    with OutputSet(folder, [source.path]) as outs:
        if fmt.whole_record:
            from p2p_desktop.hashing import sha256_file
            from p2p_desktop.jobs.attack import write_run_outputs

            write_run_outputs(result, study, outs, input_sha256=sha256_file(study.path), exports={key: value},
                              deidentify=deidentify, classifier_spec=classifier_spec, backbone_spec=backbone_spec,
                              audit_log=log)
        else:
            fmt.write(result, study, outs, value, WriteContext(deidentify=deidentify))
        if cancel is not None:
            cancel.check()
        audit_export(key, result, study, outs.records, deidentified=deidentify, command=command, log=log)
    return list(outs.records)
