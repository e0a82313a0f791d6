"""Audit reports of a run (and of a batch): one self-contained HTML file and one PDF each.

A run report shows the input (file, SHA-256, key attributes — the identifying ones left out
when de-identified), the original and adversarial images, the perturbation as a heatmap
(diverging colormap centred on 0) and amplified, the probability shift, the per-iteration
loss and class probabilities (from ``result.history``), metrics, the full config, model
identities and hashes, software versions, device, seed, timings, the verdict, notes, and
every output written before it with its SHA-256 (reports are written last).

Charts are drawn with matplotlib's Agg canvas (no pyplot, no display, thread-safe); the PDF
is laid out with fpdf2 in DejaVu Sans (bundled with matplotlib) so Greek letters and arrows
print. HTML images are inlined as base64 PNG.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from p2p_desktop.errors import InputError

__all__ = ["REPORT_FORMATS", "RunReport", "BatchReport", "parse_formats", "build_run_report",
           "render_html", "render_pdf", "write_reports", "write_batch_report", "figure_png",
           "perturbation_colours", "perturbation_heatmap_png", "amplified_perturbation_png", "probability_chart_png",
           "history_chart_png", "SUCCESS_COLOUR", "FAILURE_COLOUR", "readable_word", "nearest_word_lines",
           "probabilities_text", "DELTA_UNITS"]

REPORT_FORMATS = ("html", "pdf")
#: Verdict colours, the same in the GUI (results header) and in the reports: the attack
#: succeeded (the classifier was fooled) / it failed.
SUCCESS_COLOUR = "#1b5e20"
FAILURE_COLOUR = "#8a1c1c"
_SUCCESS_BACKGROUND = "#e3f1e3"
_FAILURE_BACKGROUND = "#fde2e1"
#: What δ is measured in, wherever it is shown.
DELTA_UNITS = "[0,1] pixel units"
_KIND = {"html": "report-html", "pdf": "report-pdf"}
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


# -- figures ------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _image_png(image: np.ndarray, max_side: int = 640) -> bytes:
    """(H, W, C) float [0,1] -> 8-bit PNG, downscaled so the longer side is at most ``max_side``."""
    from PIL import Image

    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    pil = Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8))
    if max(pil.size) > max_side:
        scale = max_side / max(pil.size)
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def _signed(perturbation: np.ndarray) -> np.ndarray:
    d = np.asarray(perturbation, dtype=np.float64)
    return d.mean(axis=2) if d.ndim == 3 else d


def _heat_scale(perturbation: np.ndarray):
    """The diverging colormap and the norm centred on 0 (symmetric: ±max|δ|)."""
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm

    d = _signed(perturbation)
    m = float(np.abs(d).max()) or 1.0 / 255.0
    return d, colormaps["RdBu_r"], TwoSlopeNorm(vcenter=0.0, vmin=-m, vmax=m)


def perturbation_colours(perturbation: np.ndarray) -> np.ndarray:
    """Signed perturbation (channel mean) -> (H, W, 3) RGB in [0,1]: 0 is white, + red, − blue."""
    d, cmap, norm = _heat_scale(perturbation)
    return np.asarray(cmap(norm(d)))[..., :3]


def perturbation_heatmap_png(perturbation: np.ndarray) -> bytes:
    """:func:`perturbation_colours` as a figure with a colour bar (δ in [0,1] pixel units)."""
    from matplotlib.cm import ScalarMappable

    d, cmap, norm = _heat_scale(perturbation)
    h, w = d.shape
    fig = _figure(3.2, 2.9 * h / max(w, 1) + 0.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(perturbation_colours(perturbation), interpolation="nearest")
    ax.set_axis_off()
    cb = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.046, pad=0.03)
    cb.set_label(f"δ ({DELTA_UNITS})", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    return figure_png(fig)


def amplified_perturbation_png(perturbation: np.ndarray) -> tuple[bytes, float]:
    """0.5 + k·δ with k chosen so the largest |δ| reaches 0 or 1; returns (PNG, k)."""
    d = np.asarray(perturbation, dtype=np.float64)
    m = float(np.abs(d).max())
    k = 0.5 / m if m > 0 else 1.0
    return _image_png(np.clip(0.5 + k * d, 0.0, 1.0)), k


def probability_chart_png(classes: Sequence[str], before: dict[str, float], after: dict[str, float],
                          true_label: str | None = None, target: str | None = None) -> bytes:
    """Grouped bars: class probabilities of the original and the adversarial image."""
    fig = _figure(5.6, 0.5 + 0.55 * len(classes))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(classes))
    ax.barh(y - 0.2, [before.get(c, 0.0) for c in classes], height=0.38, color="#4c72b0", label="original")
    ax.barh(y + 0.2, [after.get(c, 0.0) for c in classes], height=0.38, color="#dd8452", label="adversarial")
    labels = []
    for c in classes:
        tag = " (true)" if c == true_label else ""
        tag += " (target)" if c == target else ""
        labels.append(c + tag)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return figure_png(fig)


def history_chart_png(history: Sequence[Any], classes: Sequence[str]) -> bytes | None:
    """Loss and class probabilities per iteration (None when the history is empty)."""
    if not history:
        return None
    steps = [ev.step for ev in history]
    fig = _figure(6.4, 4.2)
    ax1 = fig.add_subplot(2, 1, 1)
    ax1.plot(steps, [ev.loss for ev in history], marker="o" if len(steps) < 30 else None, color="#222222")
    ax1.set_ylabel("loss")
    ax1.grid(alpha=0.3)
    ax2 = fig.add_subplot(2, 1, 2, sharex=ax1)
    for c in classes:
        ax2.plot(steps, [ev.probs.get(c, np.nan) for ev in history], marker="o" if len(steps) < 30 else None,
                 label=c)
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_ylabel("probability")
    ax2.set_xlabel("iteration")
    from matplotlib.ticker import MaxNLocator

    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="best")
    return figure_png(fig)


def _bar_chart_png(labels: Sequence[str], values: Sequence[float], xlabel: str) -> bytes:
    fig = _figure(6.0, 0.6 + 0.35 * len(labels))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(labels))
    ax.barh(y, values, color="#4c72b0")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.0, max(values, default=1.0)))
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return figure_png(fig)


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
    title: str
    meta: list[tuple[str, str]]
    tables: list[tuple[str, list[str], list[list[str]]]]  # (heading, columns, rows)
    charts: list[tuple[str, bytes]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outputs: list[dict[str, str]] = field(default_factory=list)
    created: str = ""


def _fmt(value: Any) -> str:
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
            return " · ".join(f"{k} {_fmt(float(v))}" for k, v in value.items())
        return json.dumps(value, default=str, sort_keys=True, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


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
    verdict = (f"{'SUCCESS' if result.success else 'FAILED'}: {result.original_label} → "
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
    metrics = [(k, _fmt(v)) for k, v in m.items()]
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
    config = [(k, _fmt(v)) for k, v in sorted(result.config.items())]
    clf = result.classifier or {}
    models = [(f"classifier {k}", _fmt(v)) for k, v in clf.items()]
    if result.backbone:
        models += [(f"backbone {k}", _fmt(v)) for k, v in result.backbone.items()]
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
    from p2p_desktop.input_check import WARNING_PREFIX
    from p2p_desktop.phantoms.oracle import CROSS_CLASS_NOTE, cross_class_backbone

    warnings = [n for n in result.notes if n.startswith(WARNING_PREFIX)]
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
        ("verdict", f"{'SUCCESS' if result.success else 'FAILED'} (judged on the image as written)"),
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
            rows.append((_CANDIDATE_KEYS[key], _fmt(value)))
        else:
            rows.append((key.replace("_", " "), _fmt(value)))
    return rows


# -- HTML ---------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI','DejaVu Sans',sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:1.6em}
.verdict{font-size:1.2em;font-weight:bold;padding:.5em .8em;border-radius:4px;display:inline-block}
.ok{background:SUCCESS_BG;color:SUCCESS_FG}.no{background:FAILURE_BG;color:FAILURE_FG}
table{border-collapse:collapse;width:100%;font-size:.9em}td,th{border:1px solid #ddd;padding:.3em .5em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.k{width:28%;color:#555}
td.mono,span.mono{font-family:'DejaVu Sans Mono',monospace;word-break:break-all}
.grid{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;flex:1 1 22%;min-width:200px}
figure img{width:100%;image-rendering:pixelated;border:1px solid #ddd}figcaption{font-size:.85em;color:#555}
.chart img{max-width:100%}.notes li{margin:.2em 0}.muted{color:#777;font-size:.85em}
.warn{background:#fff4e0;color:#7a4a00;border-left:4px solid #e08a00;padding:.4em .7em}
""".replace("SUCCESS_BG", _SUCCESS_BACKGROUND).replace("SUCCESS_FG", SUCCESS_COLOUR) \
    .replace("FAILURE_BG", _FAILURE_BACKGROUND).replace("FAILURE_FG", FAILURE_COLOUR)


def _img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f'<tr><td class="k">{html.escape(k)}</td><td class="mono">{html.escape(v)}</td></tr>'
                   for k, v in rows)
    return f"<table>{body}</table>"


def _grid_table(columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _outputs_html(outputs: list[dict[str, str]]) -> str:
    if not outputs:
        return "<p class='muted'>no other outputs</p>"
    return _grid_table(["kind", "file", "sha256"], [[o["kind"], o["path"], o["sha256"]] for o in outputs])


def render_html(report: RunReport | BatchReport) -> bytes:
    """One self-contained HTML document (images inlined as base64 PNG)."""
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(report.title)}</h1>",
             f"<p class='muted'>generated {html.escape(report.created)} by p2p-desktop — research use only, "
             "not for diagnosis</p>"]
    if isinstance(report, RunReport):
        cls = "ok" if report.success else "no"
        parts.append(f"<p class='verdict {cls}'>{html.escape(report.verdict)}</p>")
        for w in report.warnings:
            parts.append(f"<p class='warn'>⚠ Warning: {html.escape(w)}</p>")
        parts.append("<h2>Images</h2><div class='grid'>")
        for caption, png in report.images:
            parts.append(f"<figure>{_img_tag(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</div>")
        for caption, png in report.charts:
            parts.append(f"<h2>{html.escape(caption[:1].upper() + caption[1:])}</h2>"
                         f"<div class='chart'>{_img_tag(png, caption)}</div>")
        for heading, rows in report.sections:
            parts.append(f"<h2>{html.escape(heading)}</h2>{_kv_table(rows)}")
    else:
        parts.append(f"<h2>Run</h2>{_kv_table(report.meta)}")
        for caption, png in report.charts:
            parts.append(f"<h2>{html.escape(caption[:1].upper() + caption[1:])}</h2>"
                         f"<div class='chart'>{_img_tag(png, caption)}</div>")
        for heading, columns, rows in report.tables:
            parts.append(f"<h2>{html.escape(heading)}</h2>{_grid_table(columns, rows)}")
    if report.notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
        parts.append(f"<h2>Notes</h2><ul class='notes'>{items}</ul>")
    parts.append(f"<h2>Output files</h2>{_outputs_html(report.outputs)}")
    parts.append("</body></html>\n")
    return "".join(parts).encode("utf-8")


# -- PDF ----------------------------------------------------------------------------------
def _fonts_dir() -> Path | None:
    try:
        import matplotlib

        d = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        return d if (d / "DejaVuSans.ttf").is_file() else None
    except Exception:  # noqa: BLE001 - fall back to the core font
        return None


class _Pdf:
    """fpdf2 with DejaVu Sans (Unicode) when available, else Helvetica (Latin-1 only)."""

    def __init__(self, title: str) -> None:
        from fpdf import FPDF

        self.pdf = FPDF(orientation="P", unit="mm", format="A4")
        self.pdf.set_auto_page_break(auto=True, margin=14)
        self.pdf.set_margins(12, 12, 12)
        self.pdf.set_title(title)
        self.pdf.set_creator("p2p-desktop")
        fonts = _fonts_dir()
        if fonts is not None:
            self.pdf.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
            self.pdf.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
            self.family, self.unicode = "DejaVu", True
        else:  # pragma: no cover - matplotlib always ships DejaVu
            self.family, self.unicode = "Helvetica", False
        self.pdf.add_page()

    def text(self, s: str) -> str:
        return s if self.unicode else s.encode("latin-1", "replace").decode("latin-1")

    @property
    def width(self) -> float:
        return self.pdf.w - self.pdf.l_margin - self.pdf.r_margin

    def heading(self, s: str, size: float = 12) -> None:
        self.pdf.set_font(self.family, "B", size)
        self.pdf.ln(2)
        self.pdf.multi_cell(0, size * 0.5, self.text(s), new_x="LMARGIN", new_y="NEXT")
        self.pdf.ln(1)

    def para(self, s: str, size: float = 9, color: tuple[int, int, int] = (0, 0, 0)) -> None:
        self.pdf.set_font(self.family, "", size)
        self.pdf.set_text_color(*color)
        self.pdf.multi_cell(0, size * 0.5, self.text(s), new_x="LMARGIN", new_y="NEXT")
        self.pdf.set_text_color(0, 0, 0)

    def kv(self, rows: list[tuple[str, str]]) -> None:
        self.table(["", ""], [[k, v] for k, v in rows], widths=(0.3, 0.7), headings=False)

    def table(self, columns: list[str], rows: list[list[str]], widths: Sequence[float] | None = None,
              headings: bool = True, size: float = 7.5) -> None:
        from fpdf.enums import WrapMode

        if not rows:
            return
        self.pdf.set_font(self.family, "", size)
        ncol = len(columns)
        widths = widths or [1.0 / ncol] * ncol
        with self.pdf.table(col_widths=[w * 100 for w in widths], width=self.width, text_align="LEFT",
                            first_row_as_headings=headings, wrapmode=WrapMode.CHAR, line_height=size * 0.5,
                            padding=0.8) as table:
            if headings:
                row = table.row()
                for c in columns:
                    row.cell(self.text(c))
            for values in rows:
                row = table.row()
                for v in values:
                    row.cell(self.text(str(v)))
        self.pdf.ln(2)

    def image(self, png: bytes, w: float, x: float | None = None, y: float | None = None) -> float:
        """Place a PNG ``w`` mm wide; returns its height in mm."""
        from PIL import Image

        with Image.open(io.BytesIO(png)) as im:
            h = w * im.height / max(im.width, 1)
        self.pdf.image(io.BytesIO(png), x=x, y=y, w=w, h=h)
        return h

    def ensure(self, height: float) -> None:
        if self.pdf.get_y() + height > self.pdf.h - self.pdf.b_margin:
            self.pdf.add_page()

    def output(self) -> bytes:
        return bytes(self.pdf.output())


def _rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def render_pdf(report: RunReport | BatchReport) -> bytes:
    """The report as a PDF (A4)."""
    doc = _Pdf(report.title)
    doc.heading(report.title, 15)
    doc.para(f"generated {report.created} by p2p-desktop — research use only, not for diagnosis", 8, (90, 90, 90))
    if isinstance(report, RunReport):
        colour = _rgb(SUCCESS_COLOUR if report.success else FAILURE_COLOUR)
        doc.pdf.ln(1)
        doc.para(report.verdict, 12, colour)
        for w in report.warnings:
            doc.para(f"Warning: {w}", 9, (150, 90, 0))
        # images in one row of four
        gap = 3.0
        w = (doc.width - gap * (len(report.images) - 1)) / max(len(report.images), 1)
        heights = []
        for _, png in report.images:
            from PIL import Image

            with Image.open(io.BytesIO(png)) as im:
                heights.append(w * im.height / max(im.width, 1))
        row_h = max(heights, default=0) + 6
        doc.ensure(row_h)
        y0 = doc.pdf.get_y() + 1
        for i, (caption, png) in enumerate(report.images):
            x = doc.pdf.l_margin + i * (w + gap)
            h = doc.image(png, w, x=x, y=y0)
            doc.pdf.set_xy(x, y0 + h + 0.5)
            doc.pdf.set_font(doc.family, "", 6.5)
            doc.pdf.multi_cell(w, 3, doc.text(caption), align="C")
        doc.pdf.set_xy(doc.pdf.l_margin, y0 + row_h)
        for caption, png in report.charts:
            doc.heading(caption[:1].upper() + caption[1:], 10)
            from PIL import Image

            with Image.open(io.BytesIO(png)) as im:
                ratio = im.height / max(im.width, 1)
            w = min(doc.width * 0.7, 125.0)
            doc.ensure(w * ratio + 2)
            x = doc.pdf.l_margin + (doc.width - w) / 2
            h = doc.image(png, w, x=x, y=doc.pdf.get_y())
            doc.pdf.set_y(doc.pdf.get_y() + h + 2)
        for heading, rows in report.sections:
            doc.ensure(20)
            doc.heading(heading, 10)
            doc.kv(rows)
    else:
        doc.heading("Run", 10)
        doc.kv(report.meta)
        for caption, png in report.charts:
            doc.heading(caption[:1].upper() + caption[1:], 10)
            w = min(doc.width * 0.8, 150.0)
            doc.ensure(40)
            h = doc.image(png, w, x=doc.pdf.l_margin, y=doc.pdf.get_y())
            doc.pdf.set_y(doc.pdf.get_y() + h + 2)
        for heading, columns, rows in report.tables:
            doc.ensure(20)
            doc.heading(heading, 10)
            doc.table(columns, rows, size=6.5 if len(columns) > 6 else 7.5)
    if report.notes:
        doc.heading("Notes", 10)
        for n in report.notes:
            doc.para(f"• {n}", 8)
    doc.ensure(20)
    doc.heading("Output files", 10)
    if report.outputs:
        doc.table(["kind", "file", "sha256"], [[o["kind"], o["path"], o["sha256"]] for o in report.outputs],
                  widths=(0.14, 0.36, 0.5))
    else:
        doc.para("no other outputs", 8)
    return doc.output()


# -- writing ------------------------------------------------------------------------------
def _write(report: RunReport | BatchReport, stem: str, outs, formats: Sequence[str]) -> list[Path]:
    paths = []
    rendered = {fmt: (render_html(report) if fmt == "html" else render_pdf(report)) for fmt in formats}
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
    tables = []
    for heading, rows in (("Summary", summary_rows), ("Per image", per_image_rows)):
        columns: list[str] = []
        for row in rows:
            for key in row:
                if key not in columns:
                    columns.append(str(key))
        tables.append((heading, columns, [[_fmt(row.get(c)) for c in columns] for row in rows]))
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
    meta_rows = [(str(k), _fmt(v)) for k, v in (meta or {}).items()]
    meta_rows.append(("images", str(len(per_image_rows))))
    meta_rows += _audit_rows(audit_log)
    outputs = [{"kind": r["kind"], "path": Path(r["path"]).name, "sha256": r["sha256"]} for r in outs.records]
    report = BatchReport(title=title, meta=meta_rows, tables=tables, charts=charts, notes=list(notes),
                         outputs=outputs, created=_now())
    return _write(report, stem, outs, formats)
