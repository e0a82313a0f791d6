"""The content of a report, independent of its format: the run and batch report models, their
rows (verdict, input, metrics, configuration, models, attack details, audit chain head) and the
readable forms of values (probabilities, learned-prompt words, numbers). :mod:`.html` and
:mod:`.pdf` lay the same content out; metric labels, units, formats and directions come from
the metric table (:data:`p2p_desktop.metrics.METRICS`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2p_desktop.errors import InputError
from p2p_desktop.export.report.figures import (
    DELTA_UNITS,
    _bar_chart_png,
    _image_png,
    amplified_perturbation_png,
    history_chart_png,
    perturbation_heatmap_png,
    probability_chart_png,
)
from p2p_desktop.metrics.table import METRICS

__all__ = ["REPORT_FORMATS", "RunReport", "BatchReport", "parse_formats", "build_run_report", "build_batch_report",
           "SUCCESS_COLOUR", "FAILURE_COLOUR", "DELTA_UNITS", "readable_word", "nearest_word_lines",
           "probabilities_text", "format_value", "metric_rows", "true_label_source", "verdict_rows",
           "attack_detail_rows"]

REPORT_FORMATS = ("html", "pdf")
#: Verdict colours, the same in the GUI (results header) and in the reports: the attack
#: succeeded (the classifier was fooled) / it failed.
SUCCESS_COLOUR = "#1b5e20"
FAILURE_COLOUR = "#8a1c1c"
_SUCCESS_BACKGROUND = "#e3f1e3"
_FAILURE_BACKGROUND = "#fde2e1"
# Header attributes shown in the report; the second group is left out when de-identified.
_SAFE_ATTRIBUTES = ("modality", "sop_class_uid", "manufacturer", "transfer_syntax", "burned_in_annotation")
_IDENTIFYING_ATTRIBUTES = ("patient_name", "patient_id", "study_date", "study_description", "study_uid",
                           "series_uid", "series_description", "sop_instance_uid")


def parse_formats(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"html,pdf"`` -> ``("html", "pdf")``; unknown formats raise :class:`InputError`."""
    if text is None:
        return ()
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t]
    bad = [t for t in items if t not in REPORT_FORMATS]
    if bad:
        raise InputError(f"--report {','.join(bad)}: unknown report format (choose from html, pdf)")
    if not items:
        raise InputError("--report needs at least one format (html, pdf)")
    return tuple(dict.fromkeys(items))


# -- readable values ----------------------------------------------------------------------
def _byte_decoder() -> dict[str, int]:
    """Inverse of the byte-level BPE alphabet (GPT-2/CLIP ``bytes_to_unicode``)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


_BYTES = _byte_decoder()


def readable_word(token: str) -> str | None:
    """A byte-level BPE vocabulary token as the word it spells ("Ġcat" -> "cat", "cat</w>" ->
    "cat"), or None when it is no word (a lone byte such as "Ĩ", punctuation, a fragment of a
    multi-byte character)."""
    text = str(token).replace("</w>", "")
    try:
        text = bytes(_BYTES[c] for c in text).decode("utf-8")
    except KeyError:  # not a byte-level BPE token: shown as it is
        pass
    except UnicodeDecodeError:  # part of a multi-byte character: no word
        return None
    text = text.strip()
    if not text or not text.isprintable() or not any(ch.isalpha() for ch in text):
        return None
    return text


def nearest_word_lines(words) -> list[str]:
    """The learned prompt's nearest vocabulary words, one line per prompt token, words only:
    ``token → word (0.93), word (0.88)``. P2P reports ``[{"token", "nearest": [[word, cos]]}]``;
    other shapes (plugins) are shown as text."""
    if words is None:
        return []
    if isinstance(words, str):
        return [words]
    if isinstance(words, dict):
        return [f"{k} → {', '.join(nearest_word_lines(v))}" for k, v in words.items()]
    lines = []
    for w in words if isinstance(words, (list, tuple)) else [words]:
        if isinstance(w, dict) and "token" in w:
            near = []
            for n in w.get("nearest", ()):
                if isinstance(n, (list, tuple)) and len(n) == 2 and isinstance(n[1], (int, float)):
                    word = readable_word(n[0])
                    if word is not None:
                        near.append(f"{word} ({n[1]:.2f})")
                else:
                    word = readable_word(str(n))
                    if word is not None:
                        near.append(word)
            token = readable_word(w["token"]) or str(w["token"])
            lines.append(f"{token} → {', '.join(near) if near else '(no whole word nearby)'}")
        elif isinstance(w, (list, tuple)):
            lines.append(", ".join(readable_word(str(x)) or str(x) for x in w))
        else:
            lines.append(str(w))
    return lines


def probabilities_text(probs: dict[str, float]) -> str:
    """``benign 0.912 · malignant 0.071 · normal 0.017``."""
    return " · ".join(f"{c} {float(p):.3f}" for c, p in probs.items())


# -- the report model ---------------------------------------------------------------------
@dataclass
class RunReport:
    """Everything a run report shows, independent of the format."""

    title: str
    verdict: str
    success: bool
    sections: list[tuple[str, list[tuple[str, str]]]]  # (heading, [(key, value)])
    images: list[tuple[str, bytes]]  # (caption, PNG)
    charts: list[tuple[str, bytes]]
    notes: list[str]
    outputs: list[dict[str, str]]
    created: str = ""
    warnings: list[str] = field(default_factory=list)  # shown under the verdict (input checks)


@dataclass
class BatchReport:
    """Everything a batch (evaluation) report shows, independent of the format."""

    title: str
    meta: list[tuple[str, str]]
    tables: list[tuple[str, list[str], list[list[str]]]]  # (heading, columns, rows)
    charts: list[tuple[str, bytes]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outputs: list[dict[str, str]] = field(default_factory=list)
    created: str = ""


def format_value(value: Any) -> str:
    """A value as a report shows it: ``—`` for None/NaN/inf, yes/no, 4 significant digits, JSON for
    containers (a dict of numbers as ``key value · key value``)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return "—"
        return f"{value:.4g}"
    if isinstance(value, dict):
        if value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
            return " · ".join(f"{k} {format_value(float(v))}" for k, v in value.items())
        return json.dumps(value, default=str, sort_keys=True, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """A run's metrics as (heading, value) rows: label, unit and better direction from the metric
    table (``PSNR (dB) ↑``), the value in the table's format; keys not in the table as they are."""
    rows = []
    for key, value in metrics.items():
        m = METRICS.get(key)
        rows.append((m.heading, _metric_text(m, value)) if m is not None else (key, format_value(value)))
    return rows


def _metric_text(m, value: Any) -> str:
    """``value`` in ``m``'s format, without the unit (the heading carries it); ``—`` when missing."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return format_value(value)
    return m.fmt.format(value)


def _column_heading(key: str) -> str:
    m = METRICS.get(key)
    return m.heading if m is not None else key


def _cell(key: str, value: Any) -> str:
    m = METRICS.get(key)
    return _metric_text(m, value) if m is not None else format_value(value)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _audit_rows(audit_log=None) -> list[tuple[str, str]]:
    """The audit chain head when the report is written (this run's record links to it): a log
    later found without this hash was cut off (``p2p-desktop audit verify --head HASH``)."""
    from p2p_desktop.audit import chain_head

    head = chain_head(audit_log)
    if head is None:
        return [("audit chain head", "none yet (empty log): this run's record starts the chain")]
    return [("audit chain head", f"seq {head['seq']}, {head['hash']}"),
            ("check", "p2p-desktop audit verify --head " + head["hash"])]


def build_run_report(result, study, outputs: Iterable[dict[str, str]] = (), *, input_sha256: str | None = None,
                     deidentified: bool = False, audit_log=None, given_label: str | None = None) -> RunReport:
    """Collect the content of a run report (no file is written)."""
    from p2p_desktop.hashing import sha256_file

    path = Path(study.path)
    if input_sha256 is None and path.is_file() and not deidentified:
        input_sha256 = sha256_file(path)
    # the run's outcome in the window's one wording (AttackResult.outcome), capitalised as a heading
    verdict = (f"{result.outcome[:1].upper()}{result.outcome[1:]}: {result.original_label} → "
               f"{result.adversarial_label}" + (f" (target {result.target})" if result.target else ""))
    meta = study.metadata.as_dict() if study.metadata is not None else {}
    inp: list[tuple[str, str]] = [
        ("file", "(withheld: de-identified export)" if deidentified else str(path)),
        ("sha256", "(withheld: de-identified export)" if deidentified else input_sha256 or "—"),
        ("kind", study.kind),
        ("size", f"{study.width} × {study.height} × {study.channels}, {study.bits_stored}-bit"),
        ("photometric", study.photometric),
        ("frame", f"{study.frame_index} of {study.n_frames}"),
    ]
    if study.kind == "dicom":
        keys = _SAFE_ATTRIBUTES + (() if deidentified else _IDENTIFYING_ATTRIBUTES)
        inp += [(k.replace("_", " "), meta.get(k) or "—") for k in keys]
        if deidentified:
            inp.append(("identifying attributes", "left out (de-identified export)"))
    m = result.metrics or {}
    metrics = metric_rows(m)
    outcome = verdict_rows(result, study, given_label)
    oracle = (result.info or {}).get("label_oracle") if isinstance(result.info, dict) else None
    if oracle:  # phantom label-preservation oracle (p2p_desktop/phantoms/oracle.py)
        kept = oracle.get("verdict") or "not judged"
        valid = {True: "; valid success", False: "; not a valid success", None: ""}[oracle.get("valid_success")]
        outcome.append(("label kept? (phantom oracle)", f"{kept}{valid} — {oracle.get('reason', '')}"))
    run = [("attack", result.attack),
           ("procedure", (getattr(result, "procedure", None) or {}).get("label", result.attack)),
           ("metric protocol", "native (the images as written)"), ("seed", str(result.seed)), ("device", result.device),
           ("time", f"{result.seconds:.3f} s"), ("iterations", str(result.iterations))]
    config = [(k, format_value(v)) for k, v in sorted(result.config.items())]
    clf = result.classifier or {}
    models = [(f"classifier {k}", format_value(v)) for k, v in clf.items()]
    if result.backbone:
        models += [(f"backbone {k}", format_value(v)) for k, v in result.backbone.items()]
    else:
        models.append(("backbone", "none"))
    info = attack_detail_rows({k: v for k, v in (result.info or {}).items() if k != "label_oracle"})
    versions = [(k, str(v)) for k, v in (result.versions or {}).items()]
    sections = [("Verdict", outcome), ("Input", inp), ("Run", run), ("Metrics", metrics),
                ("Attack configuration", config), ("Models", models)]
    if info:
        sections.append(("Attack details", info))
    sections.append(("Software versions", versions))
    sections.append(("Audit log", _audit_rows(audit_log)))

    heat = perturbation_heatmap_png(result.perturbation)
    amplified, k = amplified_perturbation_png(result.perturbation)
    images = [("original", _image_png(result.original)), ("adversarial", _image_png(result.adversarial)),
              ("perturbation δ (heatmap, 0 = white)", heat), (f"perturbation amplified ×{k:.0f}", amplified)]
    charts = [("class probabilities: original vs adversarial",
               probability_chart_png(result.classes, result.original_probs, result.adversarial_probs,
                                     result.true_label, result.target))]
    hist = history_chart_png(result.history, result.classes)
    if hist is not None:
        charts.append(("loss and class probabilities per iteration", hist))
    outs = [{"kind": r["kind"], "path": Path(r["path"]).name, "sha256": r["sha256"]} for r in outputs]
    from p2p_desktop.attacks.procedure import RESOLUTION_WARNING_PREFIX
    from p2p_desktop.input_check import WARNING_PREFIX
    from p2p_desktop.phantoms.oracle import CROSS_CLASS_NOTE, cross_class_backbone

    warnings = [n for n in result.notes if n.startswith((WARNING_PREFIX, RESOLUTION_WARNING_PREFIX))]
    notes = [n for n in result.notes if n not in warnings]
    if cross_class_backbone(result.backbone):
        notes.append(CROSS_CLASS_NOTE[0].upper() + CROSS_CLASS_NOTE[1:] + ".")
    return RunReport(title=f"p2p-desktop attack report — {result.attack}", verdict=verdict, success=result.success,
                     sections=sections, images=images, charts=charts, notes=notes, outputs=outs, created=_now(),
                     warnings=warnings)


def _probs(probs: dict[str, float]) -> str:
    return probabilities_text(probs)


def true_label_source(result, study, given: str | None = None) -> str:
    """Where the run's true label came from: given by the user, the dataset's class folder,
    or (neither) the classifier's prediction on the clean image."""
    if given:
        return "given"
    if getattr(study, "label", None) and study.label == result.true_label:
        return "class folder"
    return "clean prediction"


def verdict_rows(result, study, given_label: str | None = None) -> list[tuple[str, str]]:
    """The verdict, judged on the image as written (resampled to the source and quantised):
    the numbers every other part of the report uses. The attack's internal candidate (before
    writing) is shown once, labelled as such."""
    rows = [
        ("verdict", f"{result.outcome} (judged on the image as written)"),
        ("true label", f"{result.true_label} ({true_label_source(result, study, given_label)})"),
        ("original image", f"{result.original_label} · {_probs(result.original_probs)}"),
        ("adversarial image as written", f"{result.adversarial_label} · {_probs(result.adversarial_probs)}"),
    ]
    internal = dict(getattr(result, "internal_probs", None) or {})
    if internal:
        same = result.internal_label == result.adversarial_label and result.success_internal == result.success
        rows.append(("attack's internal candidate (before resampling and quantisation; not the verdict)",
                     f"{result.internal_label} · {_probs(internal)} · "
                     f"{'success' if result.success_internal else 'failure'}"
                     + ("" if same else " — differs from the written image; the written verdict counts")))
    return rows


#: Attack-detail keys that describe the attack's own candidate image, with their labels.
_CANDIDATE_KEYS = {"probs": "candidate probabilities (internal; not the verdict)",
                   "predicted": "candidate prediction (internal; not the verdict)",
                   "success": "candidate success (internal; not the verdict)"}


def attack_detail_rows(info: dict) -> list[tuple[str, str]]:
    """The attack's own details, readable: probabilities as ``class p``, the learned prompt's
    nearest words as words, and the attack's candidate values labelled as internal."""
    rows = []
    for key, value in info.items():
        if key == "nearest_words":
            rows.append(("learned prompt: nearest words (cosine)", "; ".join(nearest_word_lines(value)) or "—"))
        elif key in _CANDIDATE_KEYS:
            rows.append((_CANDIDATE_KEYS[key], format_value(value)))
        else:
            rows.append((key.replace("_", " "), format_value(value)))
    return rows


def build_batch_report(summary_rows: Sequence[dict[str, Any]], per_image_rows: Sequence[dict[str, Any]],
                       outputs: Iterable[dict[str, str]] = (), *, title: str = "p2p-desktop evaluation report",
                       meta: dict[str, Any] | None = None, notes: Sequence[str] = (), audit_log=None,
                       extra_tables: Sequence[tuple[str, list[str], list[list[str]]]] = ()) -> BatchReport:
    """Collect the content of a batch report (no file is written); see
    :func:`~p2p_desktop.export.report.write_batch_report` for the input shape. Columns named by
    the metric table show its heading (label, unit, better direction) and format."""
    tables = []
    for heading, rows in (("Summary", summary_rows), ("Per image", per_image_rows)):
        columns: list[str] = []
        for row in rows:
            for key in row:
                if key not in columns:
                    columns.append(str(key))
        tables.append((heading, [_column_heading(c) for c in columns],
                       [[_cell(c, row.get(c)) for c in columns] for row in rows]))
    tables[1:1] = [(h, list(c), [list(r) for r in rs]) for h, c, rs in extra_tables]
    charts = []
    rated = [r for r in summary_rows if isinstance(r.get("success_rate"), (int, float))]
    if rated:
        labels = [" / ".join(str(r[k]) for k in ("attack", "classifier") if k in r) or str(i)
                  for i, r in enumerate(rated)]
        charts.append(("success rate per attack and classifier",
                       _bar_chart_png(labels, [float(r["success_rate"]) for r in rated], "success rate")))
        valid = [r.get("valid_success_rate") for r in rated]
        if all(isinstance(v, (int, float)) for v in valid):
            charts.append(("valid success rate (fooled and the label kept) per attack and classifier",
                           _bar_chart_png(labels, [float(v) for v in valid], "valid success rate")))
    meta_rows = [(str(k), format_value(v)) for k, v in (meta or {}).items()]
    meta_rows.append(("images", str(len(per_image_rows))))
    meta_rows += _audit_rows(audit_log)
    outs = [{"kind": r["kind"], "path": Path(r["path"]).name, "sha256": r["sha256"]} for r in outputs]
    return BatchReport(title=title, meta=meta_rows, tables=tables, charts=charts, notes=list(notes),
                       outputs=outs, created=_now())

