"""Writing reports through an :class:`~p2p_desktop.io.outputs.OutputSet`: every format is
rendered first, so a rendering error writes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from p2p_desktop.export.report.content import (
    REPORT_FORMATS,
    BatchReport,
    RunReport,
    build_batch_report,
    build_run_report,
    parse_formats,
)
from p2p_desktop.export.report.html import render_html
from p2p_desktop.export.report.pdf import render_pdf

__all__ = ["write_reports", "write_batch_report"]

_KIND = {"html": "report-html", "pdf": "report-pdf"}
#: Each format's renderer.
_RENDER = {"html": render_html, "pdf": render_pdf}


def _write(report: RunReport | BatchReport, stem: str, outs, formats: Sequence[str]) -> list[Path]:
    paths = []
    rendered = {fmt: _RENDER[fmt](report) for fmt in formats}
    for fmt in formats:  # render everything first: a rendering error writes nothing
        paths.append(outs.write_bytes(f"{stem}_report.{fmt}", rendered[fmt], kind=_KIND[fmt]))
    return paths


def write_reports(result, study, outs, formats: Sequence[str] | str = REPORT_FORMATS, *,
                  input_sha256: str | None = None, deidentified: bool = False, audit_log=None,
                  given_label: str | None = None) -> list[Path]:
    """Write the run report(s) through ``outs`` (kinds ``report-html``/``report-pdf``).

    Call it last: the report lists every output already in ``outs`` with its SHA-256.
    """
    from p2p_desktop.export.images import output_stem

    formats = parse_formats(formats)
    report = build_run_report(result, study, list(outs.records), input_sha256=input_sha256,
                              deidentified=deidentified, audit_log=audit_log, given_label=given_label)
    return _write(report, output_stem(study, result.attack), outs, formats)


def write_batch_report(summary_rows: Sequence[dict[str, Any]], per_image_rows: Sequence[dict[str, Any]], outs,
                       formats: Sequence[str] | str = REPORT_FORMATS, *, title: str = "p2p-desktop evaluation report",
                       meta: dict[str, Any] | None = None, notes: Sequence[str] = (),
                       stem: str = "evaluation", audit_log=None,
                       extra_tables: Sequence[tuple[str, list[str], list[list[str]]]] = ()) -> list[Path]:
    """Write the report of a batch evaluation (``evaluate``) through ``outs``; returns the paths.

    Input shape (plain JSON-able dicts; columns are the union of the keys, in first-seen order):

    - ``summary_rows``: one dict per (attack, classifier) pair, e.g.
      ``{"attack": "pgd", "classifier": "demo-resnet34", "n": 30, "success_rate": 0.83,
      "ssim": 0.97, "psnr": 38.1, "linf": 0.031, "seconds": 1.2}``. When rows carry
      ``success_rate`` (0..1), a bar chart of it is drawn, labelled ``attack / classifier``.
    - ``per_image_rows``: one dict per attacked image, e.g. ``{"input": "benign/1.png",
      "attack": "pgd", "classifier": "demo-resnet34", "true_label": "benign",
      "original_label": "benign", "adversarial_label": "malignant", "success": true,
      "ssim": 0.98, "linf": 0.031, "seconds": 0.9}``.
    - ``meta``: key/value facts about the run (dataset, seed, device, versions ...).
    - ``extra_tables``: further ``(heading, columns, rows)`` tables (e.g. the transfer matrix).
      When summary rows carry ``valid_success_rate``, its chart is drawn next to the success
      rate's (a success that redraws the finding is not an adversarial example).

    Floats print with 4 significant digits, booleans as yes/no, None as "—". The report lists
    every output already in ``outs`` (write it last).
    """
    formats = parse_formats(formats)
    report = build_batch_report(summary_rows, per_image_rows, list(outs.records), title=title, meta=meta,
                                notes=notes, audit_log=audit_log, extra_tables=extra_tables)
    return _write(report, stem, outs, formats)
