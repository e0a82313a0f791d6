"""The tables of a batch evaluation: one summary row per classifier × attack, as ``summary.md``,
``summary.csv`` and ``summary.json``, plus the validity columns and the transfer matrix
(:mod:`p2p_desktop.jobs.evaluate.validity`) and the batch report.

Metric columns, labels, formats and directions come from the metric table
(:data:`p2p_desktop.metrics.METRICS`): the paper's metrics (LPIPS, SSIM) and FID first, then the
other per-image metrics (PSNR, L2, L∞) in the table's order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from p2p_desktop.attacks.procedure import FID_TEXT, METRIC_PROTOCOL_TEXT
from p2p_desktop.cancel import CancelToken
from p2p_desktop.errors import Cancelled
from p2p_desktop.jobs.evaluate.log import cell, csv_line
from p2p_desktop.jobs.evaluate.validity import VALIDITY_COLUMNS, VALIDITY_HELP
from p2p_desktop.metrics import METRICS, image_metrics

__all__ = ["SUMMARY_COLUMNS", "COLUMN_HELP", "PAPER_KEYS", "summarise", "summary_markdown", "summary_csv",
           "attack_cell"]

#: the per-image metrics the paper reports; also given in its averaging convention (``*_paper``) and
#: recomputed under its protocol (``--metrics paper``)
PAPER_KEYS = ("lpips", "ssim")
FID = "fid"  # the set-level metric, computed from the written images (:mod:`.fid`)
#: the other per-image metrics, in the metric table's order
OTHER_KEYS = tuple(m.key for m in image_metrics() if m.key not in PAPER_KEYS)
#: the summary's metric columns, in file order
METRIC_COLUMNS = (*PAPER_KEYS, FID, f"{FID}_samples", *OTHER_KEYS)

SUMMARY_COLUMNS = ("classifier", "attack", "images", "correct", "skipped_misclassified", "skipped_unknown_label",
                   "errors", "successes", "success_rate", *METRIC_COLUMNS, "seconds_mean", "iterations_mean",
                   *(f"{k}_paper" for k in PAPER_KEYS)) + VALIDITY_COLUMNS
# issue 12: the summary also names the procedure and the metric protocol
PROCEDURE_COLUMNS = ("procedure", "preset", "resolution", "output", "precision", "metrics", "control")
SUMMARY_COLUMNS = SUMMARY_COLUMNS + PROCEDURE_COLUMNS


def _metric_help(key: str) -> str:
    m = METRICS[key]
    unit = f" ({m.unit})" if m.unit else ""
    note = " (null when it is unavailable)" if m.available is not None else ""
    return f"mean {m.label}{unit} over successful examples: {m.description}{note}"


COLUMN_HELP = {
    "images": "images of the dataset (after --limit)",
    "correct": "images the clean classifier classifies correctly (these are attacked)",
    "skipped_misclassified": "images the clean classifier gets wrong (not attacked)",
    "skipped_unknown_label": "images whose class folder is not one of the classifier's classes (not attacked)",
    "errors": "attacks (or image loads) that ended in an error; counted as not successful",
    "successes": "attacked images whose written adversarial image is misclassified",
    "success_rate": "successes / correct",
    **{k: _metric_help(k) for k in PAPER_KEYS},
    FID: f"{METRICS[FID].label} between originals and adversarials of the successful examples "
         "(null when unavailable)",
    f"{FID}_samples": f"number of image pairs {METRICS[FID].label} was computed on",
    **{k: _metric_help(k) for k in OTHER_KEYS},
    "seconds_mean": "mean attack time per attacked image (s)",
    "iterations_mean": "mean attack iterations per attacked image",
    **{f"{k}_paper": f"paper's convention: sum of {METRICS[k].label} over successes / correct" for k in PAPER_KEYS},
    **VALIDITY_HELP,
    "procedure": "the procedure that produced the row: attack[preset (and changed settings), working resolution, "
                 "output mode, precision]",
    "preset": "the attack preset (default: the attack's defaults)",
    "resolution": "working resolution in pixels of a diffusion attack (null: the source's own pixels)",
    "output": "what was written: decoded (the decoded image resized), residual (source + upsampled change), "
              "direct (a pixel attack)",
    "precision": "numeric precision of the diffusion backbone",
    "control": "true for a control (random-prompt, p2p-lr0, rerender): a baseline that shows how much of an "
               "attack's effect its optimisation does, not an attack of its own",
    "metrics": f"metric protocol of {', '.join(METRICS[k].label for k in (*PAPER_KEYS, FID))}: paper or native "
               "(see the notes)",
}


# -- statistics --------------------------------------------------------------------------------------
def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def _mean_all(values: Sequence[float | None]) -> float | None:
    """Mean, or None when any value is missing (a mean over a subset would mislead)."""
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def _paper(values: Sequence[float | None], denominator: int) -> float | None:
    """Sum over successes / all attacked images; None when the metric is missing for any success."""
    if denominator == 0 or any(v is None for v in values):
        return None
    return sum(values) / denominator


def summarise(rows: Sequence[Mapping[str, Any]], classifiers: Sequence[str], attacks: Sequence[str],
              n_images: int, skipped: Mapping[str, int] | None = None,
              skipped_label: Mapping[str, int] | None = None,
              fid: Mapping[tuple[str, str], tuple[float | None, int]] | None = None,
              unavailable: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One summary row per classifier × attack (see ``COLUMN_HELP`` for each column).

    The paper's metrics are None when any success lacks them (a mean over a subset would
    mislead); the others (PSNR, which is infinite for identical images, L2, L∞) average the
    values there are. ``unavailable`` names per-image metrics that could not be computed at all
    (e.g. ``lpips`` without its weights): they are None in both conventions, never 0.
    """
    skipped, skipped_label, fid = skipped or {}, skipped_label or {}, fid or {}
    unavailable = set(unavailable)
    out = []
    for c in classifiers:
        for a in attacks:
            rs = [r for r in rows if r["classifier"] == c and r["attack"] == a]
            attacked = [r for r in rs if r.get("clean_pred") and r["clean_pred"] == r["label"]]
            wins = [r for r in attacked if r.get("success") is True]
            correct = len(attacked)
            fid_value, fid_n = fid.get((c, a), (None, 0))
            row = {
                "classifier": c, "attack": a, "images": n_images, "correct": correct,
                "skipped_misclassified": int(skipped.get(c, 0)), "skipped_unknown_label": int(skipped_label.get(c, 0)),
                "errors": sum(1 for r in rs if r.get("error")), "successes": len(wins),
                "success_rate": len(wins) / correct if correct else None,
                **{k: _mean_all([r[k] for r in wins]) for k in PAPER_KEYS},
                FID: fid_value, f"{FID}_samples": fid_n,
                **{k: _mean(r[k] for r in wins) for k in OTHER_KEYS},
                "seconds_mean": _mean(r["seconds"] for r in attacked if not r.get("error")),
                "iterations_mean": _mean(float(r["iterations"]) for r in attacked
                                         if r.get("iterations") is not None and not r.get("error")),
                **{f"{k}_paper": _paper([r[k] for r in wins], correct) for k in PAPER_KEYS},
            }
            for metric in unavailable:
                row[metric] = None
                if f"{metric}_paper" in row:
                    row[f"{metric}_paper"] = None
            out.append(row)
    return out


def label_summary(summary: list[dict[str, Any]], procedures: Mapping[str, dict], metrics: str) -> None:
    """Add the procedure columns (issue 12) to every summary row."""
    for r in summary:
        p = procedures[r["attack"]]
        r.update(procedure=p["label"], preset=p["preset"], resolution=p["resolution"], output=p["output"],
                 precision=p["precision"], metrics=metrics, control=bool(p.get("control", False)))


def attack_cell(r: Mapping[str, Any]) -> str:
    """How a table names the procedure of a summary row: its label, with "(control)" for a control."""
    return str(r.get("procedure", r["attack"])) + (" (control)" if r.get("control") else "")


# -- tables ----------------------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _m(key: str, v: Any) -> str:
    """A metric's value in a Markdown cell, in the metric table's format (the unit is in the heading)."""
    return "n/a" if v is None else METRICS[key].fmt.format(v)


def summary_markdown(summary: Sequence[Mapping[str, Any]], notes: Sequence[str], header: Mapping[str, Any]) -> str:
    """The paper-style table (+ the paper's averaging convention, counts and notes) in Markdown."""
    head = [*PAPER_KEYS, FID]
    lines = ["# Batch evaluation", ""]
    for w in header.get("warnings") or ():
        lines += [f"**Warning:** {w}", ""]
    if header.get("metrics"):
        lines += [f"Metric protocol: **{header['metrics']}** ({METRIC_PROTOCOL_TEXT[header['metrics']]}).", "",
                  f"{FID_TEXT[header['metrics']]}.", ""]
    lines.append(f"Dataset `{header.get('dataset', '')}`: {header.get('images', 0)} image(s)"
                 f"{' (limit ' + str(header['limit']) + ')' if header.get('limit') else ''}; "
                 f"seed {header.get('seed', 0)}; device {header.get('device', '')}.")
    lines += ["", "## Attack results (mean over successful examples)", "",
              "| Classifier | Attack | Success rate | Valid success rate | "
              + " | ".join(METRICS[k].heading for k in head) + " |",
              "|---|---|---|---|" + "---|" * len(head)]
    for r in summary:
        rate = f"{_fmt(r['success_rate'], 2)} ({r['successes']}/{r['correct']})"
        valid = (f"{_fmt(r.get('valid_success_rate'), 2)} ({r['valid_successes']}/{r['correct']})"
                 if r.get("valid_successes") is not None else "n/a")
        lines.append(f"| {r['classifier']} | {attack_cell(r)} | {rate} | {valid} | "
                     + " | ".join(_m(k, r[k]) for k in head) + " |")
    lines += ["", "Success rate = successes / images the clean classifier classifies correctly. LPIPS (AlexNet), "
              "SSIM and FID (InceptionV3 pool3) are computed on the successful examples only; n/a = not "
              "computable (see the notes). Valid success rate = successes whose true label is kept (phantom "
              "label-preservation oracle; n/a on data without a generator record) / correct. Rows marked "
              "'(control)' are controls (random-prompt, p2p-lr0, rerender): what P2P's pipeline does without its "
              "optimisation, or what a re-acquisition of the phantom does at the same similarity.", "",
              "## The paper's averaging convention", "",
              "The P2P authors' script sums each metric over the successful examples and divides by *all* "
              "attacked images (its captions say \"on successful examples\"). Same data, that convention:", "",
              "| Classifier | Attack | Success rate | "
              + " | ".join(f"{METRICS[k].label} (sum/attacked)" for k in PAPER_KEYS) + " |",
              "|---|---|---|" + "---|" * len(PAPER_KEYS)]
    for r in summary:
        lines.append(f"| {r['classifier']} | {attack_cell(r)} | {_fmt(r['success_rate'], 2)} | "
                     + " | ".join(_m(k, r[f"{k}_paper"]) for k in PAPER_KEYS) + " |")
    lines += ["", "## Counts and other measures", "",
              "| Classifier | Attack | Images | Correct (attacked) | Skipped: misclassified | Errors | Successes | "
              + " | ".join(METRICS[k].heading for k in OTHER_KEYS) + " | s / image |",
              "|---|---|---|---|---|---|---|" + "---|" * len(OTHER_KEYS) + "---|"]
    for r in summary:
        skipped = str(r["skipped_misclassified"]) + (
            f" (+{r['skipped_unknown_label']} unknown class)" if r["skipped_unknown_label"] else "")
        lines.append(f"| {r['classifier']} | {attack_cell(r)} | {r['images']} | {r['correct']} | "
                     f"{skipped} | {r['errors']} | {r['successes']} | "
                     + " | ".join(_m(k, r[k]) for k in OTHER_KEYS) + f" | {_fmt(r['seconds_mean'], 2)} |")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def summary_csv(summary: Sequence[Mapping[str, Any]]) -> str:
    """``summary.csv``: ``SUMMARY_COLUMNS``, one line per summary row."""
    return csv_line(SUMMARY_COLUMNS) + "".join(csv_line(cell(r.get(c)) for c in SUMMARY_COLUMNS) for r in summary)


# -- validity, transfer, the batch report ----------------------------------------------------------------
def validity_and_transfer(summary, rows, root: Path, out: Path, loaded, attack_names, cancel: CancelToken,
                          total: int, per_image_path: Path, backbone=None, procedures=None) -> dict[str, Any]:
    """Valid success (phantom oracle) into ``summary`` and the transfer matrix.

    See :mod:`p2p_desktop.jobs.evaluate.validity`.
    """
    from p2p_desktop.jobs.evaluate import validity
    from p2p_desktop.phantoms.oracle import CROSS_CLASS_NOTE, cross_class_backbone

    try:
        honest = validity.apply(summary, rows, root, out, loaded, attack_names, cancel.check, procedures)
    except Cancelled:
        raise Cancelled(f"evaluation cancelled while judging the adversarial images; all {total} result(s) are kept "
                        f"in {per_image_path} — run the same command again to write the tables") from None
    if backbone is not None and cross_class_backbone(backbone.identity()):
        honest["notes"].append(f"{backbone.name}: {CROSS_CLASS_NOTE}")
    kinds = {validity.ORACLE_FILE: "oracle-csv", validity.TRANSFER_FILE: "transfer-csv"}
    honest["outputs"] = [(kinds[name], data) for name, data in honest["files"].items()]
    honest["paths"] = {kinds[name]: name for name in honest["files"]}
    honest["transfer_table"] = validity.transfer_table(honest["transfer"])
    return honest


def write_batch_report(out: Path, root: Path, summary, rows, outputs, notes, formats, meta,
                       extra_tables=()) -> list[dict[str, str]]:
    """HTML/PDF batch report (``p2p_desktop.export.report``), replacing an earlier one of this folder."""
    from p2p_desktop.export.report import write_batch_report as write
    from p2p_desktop.io.outputs import OutputSet

    for fmt in formats:  # a finished run that is called again rewrites its report
        old = out / f"evaluation_report.{fmt}"
        if old.is_file():
            old.unlink()
    outs = OutputSet(out, [root])
    outs.records.extend(outputs)  # listed in the report with their hashes; never rolled back here
    first = len(outs.records)
    try:
        write(summary, rows, outs, formats, title="p2p-desktop batch evaluation", meta=meta,
              notes=notes, stem="evaluation", extra_tables=extra_tables)
    except BaseException:
        for rec in outs.records[first:]:
            Path(rec["path"]).unlink(missing_ok=True)
        raise
    return list(outs.records[first:])
