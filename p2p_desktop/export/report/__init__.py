"""Audit reports of a run (and of a batch): one self-contained HTML file and one PDF each.

A run report shows the input (file, SHA-256, key attributes — the identifying ones left out
when de-identified), the original and adversarial images, the perturbation as a heatmap
(diverging colormap centred on 0) and amplified, the probability shift, the per-iteration
loss and class probabilities (from ``result.history``), metrics, the full config, model
identities and hashes, software versions, device, seed, timings, the verdict, notes, and
every output written before it with its SHA-256 (reports are written last).

One content model, two layouts:

- :mod:`.content` — what a report says (:class:`RunReport`, :class:`BatchReport`, their rows;
  metric labels, units, formats and directions from :data:`p2p_desktop.metrics.METRICS`);
- :mod:`.figures` — its pictures (matplotlib's Agg canvas: no pyplot, no display, thread-safe);
- :mod:`.html` — one self-contained HTML file (images inlined as base64 PNG);
- :mod:`.pdf` — A4 with fpdf2 in DejaVu Sans (bundled with matplotlib), so Greek letters and
  arrows print;
- :mod:`.write` — rendering every format, then writing them through an ``OutputSet``.
"""

from p2p_desktop.export.report.content import (
    FAILURE_COLOUR,
    REPORT_FORMATS,
    SUCCESS_COLOUR,
    BatchReport,
    RunReport,
    attack_detail_rows,
    build_batch_report,
    build_run_report,
    format_value,
    metric_rows,
    nearest_word_lines,
    parse_formats,
    probabilities_text,
    readable_word,
    true_label_source,
    verdict_rows,
)
from p2p_desktop.export.report.figures import (
    DELTA_UNITS,
    amplified_perturbation_png,
    figure_png,
    history_chart_png,
    perturbation_colours,
    perturbation_heatmap_png,
    probability_chart_png,
)
from p2p_desktop.export.report.html import _CSS, render_html  # noqa: F401 - _CSS: the colour tests read it
from p2p_desktop.export.report.pdf import render_pdf
from p2p_desktop.export.report.write import write_batch_report, write_reports

__all__ = ["REPORT_FORMATS", "RunReport", "BatchReport", "parse_formats", "build_run_report", "build_batch_report",
           "render_html", "render_pdf", "write_reports", "write_batch_report", "figure_png",
           "perturbation_colours", "perturbation_heatmap_png", "amplified_perturbation_png", "probability_chart_png",
           "history_chart_png", "SUCCESS_COLOUR", "FAILURE_COLOUR", "readable_word", "nearest_word_lines",
           "probabilities_text", "DELTA_UNITS", "format_value", "metric_rows", "true_label_source", "verdict_rows",
           "attack_detail_rows"]
