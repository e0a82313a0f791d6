"""The scored reader study as HTML and PDF (written beside the key, never inside the study)."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["report_html", "report_pdf"]

_HEAD = ("attack", "answers", "accuracy [95% CI]", "AUC [95% CI]", "finding change [95% CI]",
         "finding wrong vs truth", "s/case")


def _f(v, ci=None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _rows(scores: dict[str, Any]) -> list[list[str]]:
    return [[r["attack"], str(r["answers"]), _f(r["accuracy"], r["accuracy_ci95"]), _f(r["auc"], r["auc_ci95"]),
             _f(r["finding_change_rate"], r["finding_change_rate_ci95"]),
             _f(r["finding_error_rate"], r["finding_error_rate_ci95"]), _f(r["seconds_mean"])]
            for r in scores["attacks"]]


def _agreement(scores: dict[str, Any]) -> list[str]:
    ag = scores["agreement"]
    return [f"Agreement on \"altered?\": Cohen's kappa {_f(ag['altered']['cohen'])}, "
            f"Fleiss' kappa {_f(ag['altered']['fleiss'])}",
            f"Agreement on the finding: Cohen's kappa {_f(ag['finding']['cohen'])}, "
            f"Fleiss' kappa {_f(ag['finding']['fleiss'])}",
            f"{ag['altered']['readers']} reader(s); {ag['altered']['cases']} case(s) read by all; "
            f"time per case: mean {_f(scores['time_per_case']['mean'])} s",
            *scores["notes"]]


def report_html(scores: dict[str, Any], title: str = "Reader study") -> str:
    """A self-contained HTML page of the scores."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in _HEAD)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in _rows(scores))
    notes = "".join(f"<li>{e(n)}</li>" for n in _agreement(scores))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
            "<style>body{font-family:sans-serif}td,th{border:1px solid #999;padding:4px 8px}"
            "table{border-collapse:collapse}</style></head><body>"
            f"<h1>{e(title)}</h1><p>Study {e(scores['study_id'])}, design {e(scores['design'])}, "
            f"{scores['cases']} cases. Research use only.</p>"
            f"<table><tr>{head}</tr>{body}</table><ul>{notes}</ul></body></html>\n")


def report_pdf(scores: dict[str, Any], title: str = "Reader study") -> bytes:
    """The same as a one-page PDF (fpdf2)."""
    from fpdf import FPDF

    pdf = FPDF(orientation="L")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    pdf.cell(0, 6, f"Study {scores['study_id']}, design {scores['design']}, {scores['cases']} cases. "
                   "Research use only.", new_x="LMARGIN", new_y="NEXT")
    with pdf.table(col_widths=(40, 18, 42, 42, 42, 40, 18)) as table:
        for row in [list(_HEAD), *_rows(scores)]:
            cells = table.row()
            for c in row:
                cells.cell(c)
    for line in _agreement(scores):
        pdf.multi_cell(0, 5, line.replace("\u2019", "'"), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
