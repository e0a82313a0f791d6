"""Batch evaluation: every attack × every classifier over a BUSI-layout dataset, as in the P2P paper.

::

    result = evaluate("BUSI/", ["fgsm", "pgd"], ["demo-resnet34"], "out/", seed=0,
                      on_progress=lambda done, total, what, eta: ..., cancel=token)
    result.summary   # one row per classifier × attack (success rate, LPIPS, SSIM, FID, ...)

What it does:

1. validates everything before any work (attacks and their parameters, classifiers, backbone,
   dataset, output folder); each classifier and the backbone are loaded once;
2. for each image (in dataset order, classes interleaved when ``limit`` is set), for each
   classifier: classify the clean image; a misclassified image is not attacked (counted as
   "skipped: misclassified"); otherwise run each attack on it
   (:func:`~p2p_desktop.attacks.runner.run_attack`, success judged on the written image);
3. appends one row per (image, classifier, attack) to ``per_image.csv`` — one ``write`` of a
   whole line, then ``fsync`` — and writes the adversarial image of each success under
   ``adversarial/<classifier>/<attack>/<image path>.png`` (a BUSI-layout folder of adversarials);
4. at the end, computes the summary (and FID from the saved images) and writes
   ``summary.md``, ``summary.csv`` and ``summary.json`` atomically (and, when asked, the
   batch report ``evaluation_report.html/.pdf`` via :mod:`p2p_desktop.export.report`).

Resuming: ``evaluation_state.json`` records a fingerprint of the settings (image list, attack
configs, classifier and backbone hashes, seed, device, limit). Calling again with the same
settings skips every (image, classifier, attack) already in ``per_image.csv``; different
settings are refused. A cancelled run (``Cancelled``; exit 3 in the CLI) deliberately keeps the
rows and images finished so far — that is what makes the batch resumable — but never a
half-written file: rows are whole lines and the tables are only written at the end.

Metrics follow the paper (see ``P2P_METHOD.md``): success rate = successes / images the clean
classifier gets right; LPIPS, SSIM (and PSNR, L2, L∞) are means over successful examples; FID
compares originals and adversarials of the successful examples. The paper's script instead sums
over successes and divides by all attacked images; those values are reported separately,
labelled ``*_paper``. An attack that ends in an error counts as not successful (and is counted
in ``errors``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from p2p_desktop.attacks.procedure import METRIC_PROTOCOL_TEXT
from p2p_desktop.cancel import CancelToken
from p2p_desktop.errors import Cancelled, InputError, OutputError
from p2p_desktop.metrics import METRIC_PROTOCOLS
from p2p_desktop.validity import VALIDITY_COLUMNS, VALIDITY_HELP

__all__ = [
    "PER_IMAGE_COLUMNS",
    "SUMMARY_COLUMNS",
    "COLUMN_HELP",
    "PER_IMAGE_FILE",
    "STATE_FILE",
    "SUMMARY_FILES",
    "ADVERSARIAL_DIR",
    "ProgressCallback",
    "EvaluationResult",
    "evaluate",
    "build_attacks",
    "select_items",
    "read_rows",
    "summarise",
    "summary_markdown",
    "adversarial_path",
]

log = logging.getLogger(__name__)

PER_IMAGE_COLUMNS = ("image", "label", "classifier", "attack", "clean_pred", "adv_pred", "success", "ssim",
                     "psnr", "l2", "linf", "lpips", "seconds", "iterations", "error")
SUMMARY_COLUMNS = ("classifier", "attack", "images", "correct", "skipped_misclassified", "skipped_unknown_label",
                   "errors", "successes", "success_rate", "lpips", "ssim", "fid", "fid_samples", "psnr", "l2",
                   "linf", "seconds_mean", "iterations_mean", "lpips_paper", "ssim_paper") + VALIDITY_COLUMNS
COLUMN_HELP = {
    "images": "images of the dataset (after --limit)",
    "correct": "images the clean classifier classifies correctly (these are attacked)",
    "skipped_misclassified": "images the clean classifier gets wrong (not attacked)",
    "skipped_unknown_label": "images whose class folder is not one of the classifier's classes (not attacked)",
    "errors": "attacks (or image loads) that ended in an error; counted as not successful",
    "successes": "attacked images whose written adversarial image is misclassified",
    "success_rate": "successes / correct",
    "lpips": "mean LPIPS (AlexNet) over successful examples (null when its weights are missing)",
    "ssim": "mean SSIM over successful examples",
    "fid": "FID between originals and adversarials of the successful examples (null when unavailable)",
    "fid_samples": "number of image pairs FID was computed on",
    "psnr": "mean PSNR (dB) over successful examples",
    "l2": "mean L2 norm of the perturbation over successful examples ([0,1] pixel units)",
    "linf": "mean L∞ norm of the perturbation over successful examples ([0,1] pixel units)",
    "seconds_mean": "mean attack time per attacked image (s)",
    "iterations_mean": "mean attack iterations per attacked image",
    "lpips_paper": "paper's convention: sum of LPIPS over successes / correct",
    "ssim_paper": "paper's convention: sum of SSIM over successes / correct",
    **VALIDITY_HELP,
}
# issue 12: every row names its procedure; the summary also names the metric protocol
PER_IMAGE_COLUMNS = PER_IMAGE_COLUMNS + ("procedure",)
PROCEDURE_COLUMNS = ("procedure", "preset", "resolution", "output", "precision", "metrics")
SUMMARY_COLUMNS = SUMMARY_COLUMNS + PROCEDURE_COLUMNS
COLUMN_HELP.update({
    "procedure": "the procedure that produced the row: attack[preset (and changed settings), working resolution, "
                 "output mode, precision]",
    "preset": "the attack preset (default: the attack's defaults)",
    "resolution": "working resolution in pixels of a diffusion attack (null: the source's own pixels)",
    "output": "what was written: decoded (the decoded image resized), residual (source + upsampled change), "
              "direct (a pixel attack)",
    "precision": "numeric precision of the diffusion backbone",
    "metrics": "metric protocol of lpips, ssim and fid: paper or native (see the notes)",
})
PER_IMAGE_FILE = "per_image.csv"
STATE_FILE = "evaluation_state.json"
SUMMARY_FILES = {"summary-md": "summary.md", "summary-csv": "summary.csv", "summary-json": "summary.json"}
ADVERSARIAL_DIR = "adversarial"
STATE_FORMAT = 2  # 2: per_image.csv has a procedure column

#: ``on_progress(done, total, description, eta_seconds)``; ``eta_seconds`` is None until estimable.
ProgressCallback = Callable[[int, int, str, "float | None"], None]


@dataclass
class EvaluationResult:
    """What :func:`evaluate` produced: summary rows, per-image rows, files written, notes."""

    out_dir: Path
    summary: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    outputs: list[dict[str, str]]
    notes: list[str]
    config: dict[str, Any]
    fingerprint: str
    attacked: int = 0  # attacks run by this call
    resumed: int = 0  # (image, classifier, attack) results found finished at the start
    seconds: float = 0.0
    adversarial_dir: Path | None = None
    warnings: list[str] | None = None  # plain warnings, shown first (e.g. the demo backbone off its phantoms)
    metrics: str = "native"

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` object."""
        return {"summary": self.summary, "outputs": self.outputs, "notes": self.notes, "metrics": self.metrics,
                "warnings": list(self.warnings or [])}


# -- settings ---------------------------------------------------------------------------------------
def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _split_params(params: Mapping[str, Any] | None, attack_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{attack: {key: value}} from ``{"pgd.steps": 20, "eps": 0.03, "p2p": {"lam": 1}}``.

    A key without an attack prefix applies to every attack whose config has that field.
    """
    from dataclasses import fields

    from p2p_desktop.attacks.registry import get

    by_norm = {_norm(a): a for a in attack_names}
    out: dict[str, dict[str, Any]] = {a: {} for a in attack_names}
    unscoped: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if isinstance(value, Mapping):
            if _norm(key) not in by_norm:
                raise InputError(f"--param for attack {key!r}, which is not in --attacks ({', '.join(attack_names)})")
            out[by_norm[_norm(key)]].update({_norm(k): v for k, v in value.items()})
            continue
        prefix, dot, rest = str(key).partition(".")
        if dot:
            if _norm(prefix) not in by_norm:
                raise InputError(f"--param {key}: attack {prefix!r} is not in --attacks ({', '.join(attack_names)})")
            out[by_norm[_norm(prefix)]][_norm(rest)] = value
        else:
            unscoped[_norm(key)] = value
    for key, value in unscoped.items():
        takers = [a for a in attack_names if key in {f.name for f in fields(get(a).Config)}]
        if not takers:
            raise InputError(f"--param {key}: none of the attacks ({', '.join(attack_names)}) has a parameter "
                             f"{key!r}; scope it as ATTACK.{key}")
        for a in takers:
            out[a].setdefault(key, value)
    return out


def _split_presets(preset: str | Mapping[str, str] | None, attack_names: Sequence[str]) -> dict[str, str | None]:
    """Preset per attack. A bare name applies to every attack that defines a preset of that name."""
    from p2p_desktop.attacks.registry import get

    out: dict[str, str | None] = {a: None for a in attack_names}
    if not preset:
        return out
    by_norm = {_norm(a): a for a in attack_names}
    if isinstance(preset, str) and "=" not in preset:
        takers = [a for a in attack_names if preset in get(a).presets]
        if not takers:
            raise InputError(f"--preset {preset}: none of the attacks ({', '.join(attack_names)}) has a preset "
                             f"of that name")
        return {**out, **{a: preset for a in takers}}
    items = preset.items() if isinstance(preset, Mapping) else (
        p.partition("=")[::2] for p in str(preset).split(",") if p.strip())
    for name, value in items:
        if _norm(name) not in by_norm:
            raise InputError(f"--preset {name}={value}: attack {name!r} is not in --attacks")
        out[by_norm[_norm(name)]] = str(value).strip()
    return out


def build_attacks(attacks: Sequence[str], *, seed: int = 0, params: Mapping[str, Any] | None = None,
                  preset: str | Mapping[str, str] | None = None) -> list:
    """Validated attack instances (one per name), or :class:`InputError` before any work."""
    from p2p_desktop.attacks.registry import spec
    from p2p_desktop.attacks.factory import build_attack

    names = [a.strip() for a in attacks if a and a.strip()]
    if not names:
        raise InputError("--attacks: give at least one attack (e.g. fgsm,pgd)")
    names = [spec(a).name for a in names]
    dupes = sorted({a for a in names if names.count(a) > 1})
    if dupes:
        raise InputError(f"--attacks: {', '.join(dupes)} given more than once")
    per_attack = _split_params(params, names)
    presets = _split_presets(preset, names)
    return [build_attack(a, preset=presets[a], seed=seed, params=per_attack[a]) for a in names]


def select_items(items: Sequence, limit: int | None) -> list:
    """The first ``limit`` items, taking classes in turn (so a small limit still covers every class)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    groups: dict[Any, list] = defaultdict(list)
    for it in items:
        groups[it.label].append(it)
    order = sorted(groups, key=lambda k: (k is None, str(k)))
    chosen, i = [], 0
    while len(chosen) < limit:
        for label in order:
            if i < len(groups[label]) and len(chosen) < limit:
                chosen.append(groups[label][i])
        i += 1
    keep = {id(it) for it in chosen}
    return [it for it in items if id(it) in keep]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def adversarial_path(out_dir: str | Path, classifier: str, attack: str, image: str) -> Path:
    """Where the adversarial of a successful (image, classifier, attack) is written."""
    rel = Path(image)
    name = rel.name if rel.suffix.lower() == ".png" else rel.name + ".png"
    return Path(out_dir) / ADVERSARIAL_DIR / _safe_name(classifier) / _safe_name(attack) / rel.parent / name


# -- files --------------------------------------------------------------------------------------------
def _replace_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, ``os.replace``: the file is either old or new, never half."""
    import errno

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"disk full while writing {path.name} in {path.parent}; nothing was written") from None
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _csv_line(values: Iterable[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


class _RowLog:
    """Append-only CSV: each row is one ``os.write`` of a whole line, then ``fsync``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if new:
            self._write(_csv_line(PER_IMAGE_COLUMNS))

    def _write(self, line: str) -> None:
        import errno

        try:
            os.write(self._fd, line.encode("utf-8"))
            os.fsync(self._fd)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise OutputError(f"disk full while appending to {self.path}") from None
            raise OutputError(f"cannot append to {self.path}: {exc.strerror or exc}") from None

    def append(self, row: Mapping[str, Any]) -> None:
        self._write(_csv_line(_cell(row.get(c)) for c in PER_IMAGE_COLUMNS))

    def close(self) -> None:
        os.close(self._fd)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)
    return str(v)


def _parse(col: str, text: str) -> Any:
    if text == "":
        return None if col not in ("error", "clean_pred", "adv_pred") else ""
    if col == "success":
        return text == "true"
    if col == "iterations":
        return int(text)
    if col in ("ssim", "psnr", "l2", "linf", "lpips", "seconds"):
        return float(text)
    return text


def _repair_tail(path: Path) -> None:
    """Drop a last line cut short by a crash (a row is only valid once its newline is written)."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(max(0, size - 1))
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        keep = data.rfind(b"\n") + 1
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    log.warning("dropped an incomplete last line from %s", path)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``per_image.csv`` with typed values (floats, bools, None for empty)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return []
        if tuple(header) != PER_IMAGE_COLUMNS:
            raise InputError(f"{path} does not have the columns of a p2p-desktop per-image table; "
                             "choose another --out folder")
        rows = []
        for values in reader:
            if len(values) != len(PER_IMAGE_COLUMNS):
                raise InputError(f"{path}: malformed row {len(rows) + 2}; choose another --out folder")
            rows.append({c: _parse(c, v) for c, v in zip(PER_IMAGE_COLUMNS, values)})
    return rows


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

    ``unavailable`` names per-image metrics that could not be computed at all (e.g. ``lpips``
    without its weights): they are None in both conventions, never 0.
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
            out.append({
                "classifier": c, "attack": a, "images": n_images, "correct": correct,
                "skipped_misclassified": int(skipped.get(c, 0)), "skipped_unknown_label": int(skipped_label.get(c, 0)),
                "errors": sum(1 for r in rs if r.get("error")), "successes": len(wins),
                "success_rate": len(wins) / correct if correct else None,
                "lpips": _mean_all([r["lpips"] for r in wins]), "ssim": _mean_all([r["ssim"] for r in wins]),
                "fid": fid_value, "fid_samples": fid_n,
                "psnr": _mean(r["psnr"] for r in wins), "l2": _mean(r["l2"] for r in wins),
                "linf": _mean(r["linf"] for r in wins),
                "seconds_mean": _mean(r["seconds"] for r in attacked if not r.get("error")),
                "iterations_mean": _mean(float(r["iterations"]) for r in attacked
                                         if r.get("iterations") is not None and not r.get("error")),
                "lpips_paper": _paper([r["lpips"] for r in wins], correct),
                "ssim_paper": _paper([r["ssim"] for r in wins], correct),
            })
            for metric in unavailable:
                out[-1][metric] = None
                if f"{metric}_paper" in out[-1]:
                    out[-1][f"{metric}_paper"] = None
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def summary_markdown(summary: Sequence[Mapping[str, Any]], notes: Sequence[str], header: Mapping[str, Any]) -> str:
    """The paper-style table (+ the paper's averaging convention, counts and notes) in Markdown."""
    lines = ["# Batch evaluation", ""]
    for w in header.get("warnings") or ():
        lines += [f"**Warning:** {w}", ""]
    if header.get("metrics"):
        lines += [f"Metric protocol: **{header['metrics']}** ({METRIC_PROTOCOL_TEXT[header['metrics']]}).", ""]
    lines.append(f"Dataset `{header.get('dataset', '')}`: {header.get('images', 0)} image(s)"
                 f"{' (limit ' + str(header['limit']) + ')' if header.get('limit') else ''}; "
                 f"seed {header.get('seed', 0)}; device {header.get('device', '')}.")
    lines += ["", "## Attack results (mean over successful examples)", "",
              "| Classifier | Attack | Success rate | Valid success rate | LPIPS ↓ | SSIM ↑ | FID ↓ |",
              "|---|---|---|---|---|---|---|"]
    for r in summary:
        rate = f"{_fmt(r['success_rate'], 2)} ({r['successes']}/{r['correct']})"
        valid = (f"{_fmt(r.get('valid_success_rate'), 2)} ({r['valid_successes']}/{r['correct']})"
                 if r.get("valid_successes") is not None else "n/a")
        lines.append(f"| {r['classifier']} | {r.get('procedure', r['attack'])} | {rate} | {valid} | {_fmt(r['lpips'])} | "
                     f"{_fmt(r['ssim'])} | {_fmt(r['fid'], 1)} |")
    lines += ["", "Success rate = successes / images the clean classifier classifies correctly. LPIPS (AlexNet), "
              "SSIM and FID (InceptionV3 pool3) are computed on the successful examples only; n/a = not "
              "computable (see the notes). Valid success rate = successes whose true label is kept (phantom "
              "label-preservation oracle; n/a on data without a generator record) / correct.", "",
              "## The paper's averaging convention", "",
              "The P2P authors' script sums each metric over the successful examples and divides by *all* "
              "attacked images (its captions say \"on successful examples\"). Same data, that convention:", "",
              "| Classifier | Attack | Success rate | LPIPS (sum/attacked) | SSIM (sum/attacked) |",
              "|---|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['classifier']} | {r.get('procedure', r['attack'])} | {_fmt(r['success_rate'], 2)} | "
                     f"{_fmt(r['lpips_paper'])} | {_fmt(r['ssim_paper'])} |")
    lines += ["", "## Counts and other measures", "",
              "| Classifier | Attack | Images | Correct (attacked) | Skipped: misclassified | Errors | Successes "
              "| PSNR dB | L2 | L∞ | s / image |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        skipped = str(r["skipped_misclassified"]) + (
            f" (+{r['skipped_unknown_label']} unknown class)" if r["skipped_unknown_label"] else "")
        lines.append(f"| {r['classifier']} | {r.get('procedure', r['attack'])} | {r['images']} | {r['correct']} | {skipped} | "
                     f"{r['errors']} | {r['successes']} | {_fmt(r['psnr'], 2)} | {_fmt(r['l2'])} | "
                     f"{_fmt(r['linf'], 4)} | {_fmt(r['seconds_mean'], 2)} |")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _summary_csv(summary: Sequence[Mapping[str, Any]]) -> str:
    return _csv_line(SUMMARY_COLUMNS) + "".join(_csv_line(_cell(r.get(c)) for c in SUMMARY_COLUMNS) for r in summary)


# -- FID -----------------------------------------------------------------------------------------------
def _compute_fid(rows, dataset_root: Path, out_dir: Path, classifiers, attacks, device: str, notes: list[str],
                 cancel: CancelToken, progress: Callable[[str], None]) -> dict[tuple[str, str], tuple]:
    """{(classifier, attack): (FID or None, pairs used)}; notes say why a value is missing."""
    import numpy as np

    from p2p_desktop.metrics import fid as fidlib
    from p2p_desktop.io import load_study

    result: dict[tuple[str, str], tuple[float | None, int]] = {}
    status = fidlib.fid_status()
    if not status.available:
        notes.append(status.note)
        return result
    if status.note:
        notes.append(status.note)
    extractor = fidlib.load_inception(device=device)
    original_features: dict[str, Any] = {}
    too_few = []
    for c in classifiers:
        for a in attacks:
            wins = [r for r in rows if r["classifier"] == c and r["attack"] == a and r.get("success") is True]
            if len(wins) < 2:
                if wins:
                    too_few.append(f"{c} × {a}")
                result[(c, a)] = (None, len(wins))
                continue
            cancel.check()
            progress(f"FID {c} × {a} ({len(wins)} pairs)")
            paths = [adversarial_path(out_dir, c, a, r["image"]) for r in wins]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                notes.append(f"FID {c} × {a} not computed: {len(missing)} adversarial image(s) are missing "
                             f"from {out_dir / ADVERSARIAL_DIR}, e.g. {missing[0]}")
                result[(c, a)] = (None, 0)
                continue
            new = [r["image"] for r in wins if r["image"] not in original_features]
            if new:
                feats = extractor([load_study(dataset_root / i, attach_mask=False).image for i in new])
                original_features.update(zip(new, feats))
            originals = np.stack([original_features[r["image"]] for r in wins])
            value = fidlib.fid_from_features(originals, extractor([load_study(p, attach_mask=False).image
                                                                   for p in paths]))
            result[(c, a)] = (value, len(wins))
    if too_few:
        notes.append(f"FID needs at least 2 successful examples; not computed for {', '.join(too_few)}")
    notes.append(fidlib.SMALL_SAMPLE_NOTE)
    return result


# -- the batch -----------------------------------------------------------------------------------------
def _fingerprint(config: Mapping[str, Any]) -> str:
    from p2p_desktop.hashing import sha256_bytes

    return sha256_bytes(json.dumps(config, sort_keys=True, default=str).encode())


def _check_state(out_dir: Path, config: dict, fingerprint: str) -> bool:
    """True when ``out_dir`` holds a compatible earlier run; raises when it holds another one."""
    state_path = out_dir / STATE_FILE
    per_image = out_dir / PER_IMAGE_FILE
    if not state_path.is_file():
        if per_image.exists():
            raise InputError(f"{out_dir} holds a {PER_IMAGE_FILE} but no {STATE_FILE}, so it cannot be resumed "
                             "safely; choose another --out folder")
        return False
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        old_config, old_fp = state["config"], state["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{state_path} is unreadable; choose another --out folder") from None
    if old_fp != fingerprint:
        differ = sorted(k for k in set(old_config) | set(config) if old_config.get(k) != config.get(k))
        raise InputError(
            f"{out_dir} holds an evaluation made with other settings (different: {', '.join(differ) or 'format'}); "
            "resume it with the same arguments, or choose another --out folder")
    return True


def evaluate(
    dataset_dir: str | Path,
    attacks: Sequence[str],
    classifiers: Sequence[str],
    out_dir: str | Path,
    *,
    backbone: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    params: Mapping[str, Any] | None = None,
    preset: str | Mapping[str, str] | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    on_step: Callable[[Any], None] | None = None,
    report: str | Sequence[str] | None = None,
    metrics: str = "native",
    dtype: str | None = None,
    dicom: Any = None,
    executor: Any = None,
) -> EvaluationResult:
    """Attack every correctly classified image of ``dataset_dir`` with each attack, per classifier.

    ``attacks``: registered attack names; ``classifiers``: registered names or model cards;
    ``params``: ``{"pgd.steps": 20, "eps": 0.03}`` (unscoped keys go to every attack that has
    them) or ``{"pgd": {"steps": 20}}``; ``preset``: a preset for every attack that has presets,
    or ``{"p2p": "fast"}``. ``on_progress(done, total, description, eta_seconds)`` is called
    before and after each job (image × classifier × attack); ``cancel`` is checked between
    jobs and inside attacks, raising :class:`Cancelled` with the finished rows kept (resumable).
    ``on_step`` receives every attack step (``StepEvent``). ``report`` (``"html,pdf"``) also
    writes the batch report (``evaluation_report.html/.pdf``) at the end. Bad settings raise
    :class:`InputError` before anything is written. ``metrics``: the metric protocol of the tables
    (``paper`` or ``native``, see :mod:`p2p_desktop.metrics`); ``dtype``: precision of the diffusion
    backbone (auto, fp32, fp16, bf16). P2P runs its ``paper`` preset unless ``preset`` names another.
    ``dicom``: a :class:`~p2p_desktop.export.batch_dicom.BatchDicomExport` that writes a derived
    DICOM of each success (``evaluate --export-dicom``).
    ``executor``: where the jobs run (``None``: here, one after another; a
    :class:`p2p_desktop.executors.ray_executor.RayExecutor`: on a Ray cluster); the rows are
    written here as they arrive either way.
    """
    from p2p_desktop.device import resolve_device
    from p2p_desktop.executors.unit import attack_into_row
    from p2p_desktop.hashing import sha256_bytes, sha256_file
    from p2p_desktop.io import load_dataset, load_study
    from p2p_desktop.io.encode import encode_png
    from p2p_desktop.io.outputs import check_output_dir
    from p2p_desktop.metrics import lpips_status
    from p2p_desktop.models.classifier import load_classifier

    t_start = time.perf_counter()
    cancel = cancel or CancelToken()
    notify = on_progress or (lambda done, total, what, eta: None)

    # 1. validate everything before any work
    if executor is not None and dicom is not None:
        raise InputError("--export-dicom runs with the serial executor only: the Ray workers return the "
                         "adversarial images, not the DICOM sources (run the export without --executor ray)")
    root = Path(dataset_dir)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist" if not root.exists() else f"{root} is not a folder")
    out = check_output_dir(out_dir, [root])
    if limit is not None and int(limit) < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    if int(seed) < 0:
        raise InputError(f"--seed must be ≥ 0, got {seed}")
    report_formats: tuple[str, ...] = ()
    if report:
        from p2p_desktop.export.report import parse_formats

        report_formats = parse_formats(report)
    if metrics not in METRIC_PROTOCOLS:
        raise InputError(f"--metrics {metrics!r}: choose one of {', '.join(METRIC_PROTOCOLS)}")
    preset = _default_presets(attacks, preset)
    attack_objs = build_attacks(attacks, seed=int(seed), params=params, preset=preset)
    clf_specs = [c.strip() for c in classifiers if c and str(c).strip()]
    if not clf_specs:
        raise InputError("--classifiers: give at least one classifier (a registered name or a model card)")
    dev = resolve_device(device)
    attack_objs = _apply_dtype(attack_objs, dtype, dev)
    items = select_items(load_dataset(root, cancel=cancel), limit)
    loaded = [load_classifier(c, device=dev) for c in clf_specs]
    names = [c.name for c in loaded]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"--classifiers: two classifiers are named {dupes[0]!r}; give each model card its own name")
    bb = None
    if backbone or any(a.requires_backbone for a in attack_objs):
        from p2p_desktop.models.backbone import load_backbone

        from p2p_desktop.attacks.procedure import backbone_dtype

        bb = load_backbone(backbone or "demo", device=dev, dtype=backbone_dtype(attack_objs))

    image_ids = [it.path.relative_to(root).as_posix() for it in items]
    procedures = _procedures(attack_objs, _split_presets(preset, [a.name for a in attack_objs]), bb)
    warnings = _demo_backbone_warnings(root, image_ids, attack_objs, bb)
    listing = "\n".join(f"{i}\t{it.label}\t{it.path.stat().st_size}" for i, it in zip(image_ids, items))
    config: dict[str, Any] = {
        "format": STATE_FORMAT,
        "images": {"count": len(items), "sha256": sha256_bytes(listing.encode())},
        "limit": limit, "seed": int(seed), "device": dev,
        "attacks": [{"name": a.name, "config": a.config.to_dict()} for a in attack_objs],
        "classifiers": [{"name": c.name, "architecture": c.card.architecture, "classes": list(c.classes),
                         "sha256": c.card.sha256 or sha256_file(c.card.weights_path)} for c in loaded],
        "backbone": None if bb is None else {k: v for k, v in bb.identity().items() if k != "path"},
    }
    if dicom is not None:  # derived DICOMs (export/batch_dicom.py): resumed only with the same export settings
        config["dicom_export"] = dicom.settings()
    config = json.loads(json.dumps(config, default=str))
    fingerprint = _fingerprint(config)
    resuming = _check_state(out, config, fingerprint)

    # 2. state: earlier rows, the fingerprint
    out.mkdir(parents=True, exist_ok=True)
    per_image_path = out / PER_IMAGE_FILE
    if not resuming:
        state = {"format": STATE_FORMAT, "fingerprint": fingerprint, "config": config, "dataset": str(root.resolve()),
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _replace_atomic(out / STATE_FILE, json.dumps(state, indent=2).encode())
    if per_image_path.exists():
        _repair_tail(per_image_path)
        earlier = read_rows(per_image_path)
    else:
        earlier = []
    done_keys = {(r["image"], r["classifier"], r["attack"]) for r in earlier}
    attack_names = [a.name for a in attack_objs]
    all_keys = {(i, c, a) for i in image_ids for c in names for a in attack_names}
    resumed = len(done_keys & all_keys)

    total = len(items) * len(loaded) * len(attack_objs)
    done = resumed
    processed = 0  # jobs handled in this call (for the ETA)
    attacked = 0
    skipped: dict[str, set[str]] = defaultdict(set)
    skipped_label: dict[str, set[str]] = defaultdict(set)
    rowlog = _RowLog(per_image_path)
    t_loop = time.perf_counter()

    def eta() -> float | None:
        if processed == 0:
            return None
        return (time.perf_counter() - t_loop) / processed * (total - done)

    def record(row: dict) -> None:
        nonlocal done, processed
        rowlog.append(row)
        done_keys.add((row["image"], row["classifier"], row["attack"]))
        done += 1
        processed += 1

    notify(done, total, "resuming" if resumed else "starting", None)
    try:
        if executor is not None:  # 3'. the jobs on another executor (Ray); rows written here as they arrive
            from p2p_desktop.executors import run_elsewhere

            for kind, res in run_elsewhere(executor, image_ids, items, loaded, attack_objs, procedures, done_keys,
                                           clf_specs, backbone, bb, dev, cancel):
                if kind == "skip_label":
                    skipped_label[res[0]].add(res[1])
                    done += 1
                    processed += 1
                    continue
                key = (res.unit.image_id, res.unit.classifier, res.unit.attack)
                if key in done_keys:  # a retried job that had already reported: never a row twice
                    continue
                if res.skipped:
                    skipped[res.unit.classifier].add(res.unit.image_id)
                    done += 1
                    processed += 1
                    continue
                attacked += int(res.attacked)
                if res.png is not None:
                    _replace_atomic(adversarial_path(out, res.unit.classifier, res.unit.attack, res.unit.image_id),
                                    res.png)
                record(res.row)
                notify(done, total, f"{res.unit.classifier} × {res.unit.attack}: {res.unit.image_id}", eta())
        # 3. the jobs: image × classifier × attack
        for image_id, item in ([] if executor is not None else zip(image_ids, items)):
            cancel.check()
            pending = {(c.name, a.name) for c in loaded for a in attack_objs
                       if (image_id, c.name, a.name) not in done_keys}
            if not pending:
                continue
            try:
                study = load_study(item.path, label=item.label)
            except InputError as exc:
                for c in loaded:
                    for a in attack_objs:
                        if (c.name, a.name) in pending:
                            record({"image": image_id, "label": item.label or "", "classifier": c.name,
                                    "attack": a.name, "error": f"cannot load the image: {exc}"})
                notify(done, total, f"{image_id}: cannot load", eta())
                continue
            for clf in loaded:
                todo = [a for a in attack_objs if (clf.name, a.name) in pending]
                if not todo:
                    continue
                if item.label not in clf.classes:
                    skipped_label[clf.name].add(image_id)
                    done += len(todo)
                    processed += len(todo)
                    continue
                clean_pred, _ = clf.predict(study.image)
                if clean_pred != item.label:
                    skipped[clf.name].add(image_id)
                    done += len(todo)
                    processed += len(todo)
                    notify(done, total, f"{clf.name}: {image_id} skipped (misclassified)", eta())
                    continue
                for attack in todo:
                    cancel.check()
                    what = f"{clf.name} × {attack.name}: {image_id}"
                    notify(done, total, what, eta())
                    row: dict[str, Any] = {"image": image_id, "label": item.label, "classifier": clf.name,
                                           "attack": attack.name, "clean_pred": clean_pred,
                                           "procedure": procedures[attack.name]["label"]}
                    attacked += 1
                    res = attack_into_row(row, study, clf, attack, bb, item.label, what=what, on_step=on_step,
                                          cancel=cancel)
                    if res is not None and res.success:
                        _replace_atomic(adversarial_path(out, clf.name, attack.name, image_id),
                                        encode_png(res.adversarial, bits=study.bits_stored))
                        if dicom is not None:
                            dicom.export(out, res, study, clf.name, attack.name, image_id, root)
                    record(row)
                    notify(done, total, what, eta())
    except (Cancelled, KeyboardInterrupt):
        kept = len(done_keys & all_keys)
        raise Cancelled(f"evaluation cancelled after {kept} of {total} result(s); they are kept in "
                        f"{per_image_path} — run the same command again to resume") from None
    finally:
        rowlog.close()

    # 4. summary, FID, tables (written atomically, only now)
    rows = [r for r in read_rows(per_image_path) if (r["image"], r["classifier"], r["attack"]) in all_keys]
    # keep the last row per key (a row is never written twice, but be robust)
    rows = list({(r["image"], r["classifier"], r["attack"]): r for r in rows}.values())
    notes: list[str] = []
    ok, lp_note = lpips_status()
    if not ok:
        notes.append(lp_note)
    try:
        fid = {} if metrics == "paper" else _compute_fid(rows, root, out, names, attack_names, dev, notes, cancel,
                                                         lambda what: notify(done, total, what, None))
    except Cancelled:
        raise Cancelled(f"evaluation cancelled while computing FID; all {total} result(s) are kept in "
                        f"{per_image_path} — run the same command again to write the tables") from None
    n_errors = sum(1 for r in rows if r.get("error"))
    if n_errors:
        notes.append(f"{n_errors} job(s) ended in an error (see the error column of {PER_IMAGE_FILE}); "
                     "they count as not successful")
    for c in names:
        if skipped_label.get(c):
            notes.append(f"{len(skipped_label[c])} image(s) have a class folder that {c} does not know "
                         f"({', '.join(_classes_of(loaded, c))}); they were not attacked")
    if any(r.get("success") and r.get("psnr") is None for r in rows):
        notes.append("PSNR is infinite for identical images; those are left out of the PSNR mean")
    if metrics == "paper":
        rows_for_summary, fid = _paper_protocol(rows, root, out, names, attack_names, items, image_ids, dev, notes,
                                                cancel, lambda what: notify(done, total, what, None))
    else:
        rows_for_summary = rows
    summary = summarise(rows_for_summary, names, attack_names, len(items),
                        {c: len(v) for c, v in skipped.items()}, {c: len(v) for c, v in skipped_label.items()}, fid,
                        unavailable=() if ok else ("lpips",))
    _label_summary(summary, procedures, metrics)
    notes[:0] = list(warnings) + [f"metrics: {METRIC_PROTOCOL_TEXT[metrics]}"]
    # images skipped in an earlier session are re-checked above, so these counts are complete
    honest = _validity_and_transfer(summary, rows, root, out, loaded, attack_names, cancel, total, per_image_path, bb)
    notes += honest["notes"]
    dicom_outputs = dicom.finish(out, rows, notes) if dicom is not None else []
    header = {"dataset": str(root), "images": len(items), "limit": limit, "seed": int(seed), "device": dev,
              "metrics": metrics, "warnings": warnings}
    seconds = time.perf_counter() - t_start
    summary_json = {"summary": summary, "columns": COLUMN_HELP, "notes": notes, "config": config,
                    "fingerprint": fingerprint, "dataset": str(root.resolve()), "per_image": PER_IMAGE_FILE,
                    "adversarial_dir": ADVERSARIAL_DIR, "seconds_this_run": round(seconds, 3),
                    "metrics": {"protocol": metrics, "description": METRIC_PROTOCOL_TEXT[metrics]},
                    "procedures": {a: p["label"] for a, p in procedures.items()}, "warnings": warnings,
                    "transfer": honest["transfer"]}
    outputs = [{"kind": "per-image-csv", "path": str(per_image_path), "sha256": sha256_file(per_image_path)}]
    outputs += dicom_outputs
    summary_json["outputs"] = list(outputs)  # the files written before it (per-image table, DICOMs)
    for kind, data in (("summary-md", (summary_markdown(summary, notes, header) + honest["markdown"]).encode()),
                       ("summary-csv", _summary_csv(summary).encode()),
                       ("summary-json", json.dumps(_finite(summary_json), indent=2, default=str,
                                                   allow_nan=False).encode()),
                       *honest["outputs"]):
        path = out / (SUMMARY_FILES.get(kind) or honest["paths"][kind])
        _replace_atomic(path, data)
        outputs.append({"kind": kind, "path": str(path), "sha256": sha256_bytes(data)})
    if report_formats:
        outputs += _write_batch_report(out, root, summary, rows, outputs, notes, report_formats, {
            **{k: v for k, v in header.items() if k != "warnings"},
            "metric protocol": METRIC_PROTOCOL_TEXT[metrics],
            "attacks": ", ".join(procedures[a]["label"] for a in attack_names), "classifiers": ", ".join(names),
            "backbone": (config["backbone"] or {}).get("name"), "fingerprint": fingerprint},
            extra_tables=[honest["transfer_table"]])
    from p2p_desktop.jobs.audit import audit_evaluation  # every run is audited (CLI and GUI)

    audit_evaluation(root, out, config, fingerprint, outputs, attacked=attacked, resumed=resumed)
    notify(total, total, "done", 0.0)
    adv_dir = out / ADVERSARIAL_DIR
    return EvaluationResult(out_dir=out, summary=summary, rows=rows, outputs=outputs, notes=notes, config=config,
                            fingerprint=fingerprint, attacked=attacked, resumed=resumed, seconds=seconds,
                            adversarial_dir=adv_dir if adv_dir.is_dir() else None, warnings=warnings,
                            metrics=metrics)


def _finite(obj):
    from p2p_desktop.jsonsafe import finite_json

    return finite_json(obj)


def _validity_and_transfer(summary, rows, root: Path, out: Path, loaded, attack_names, cancel: CancelToken, total: int,
                           per_image_path: Path, backbone=None) -> dict[str, Any]:
    """Valid success (phantom oracle) into ``summary`` and the transfer matrix (:mod:`p2p_desktop.validity`)."""
    from p2p_desktop import validity
    from p2p_desktop.phantoms.oracle import CROSS_CLASS_NOTE, cross_class_backbone

    try:
        honest = validity.apply(summary, rows, root, out, loaded, attack_names, cancel.check)
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


def _write_batch_report(out: Path, root: Path, summary, rows, outputs, notes, formats, meta,
                        extra_tables=()) -> list[dict[str, str]]:
    """HTML/PDF batch report (``p2p_desktop.export.report``), replacing an earlier one of this folder."""
    from p2p_desktop.export.report import write_batch_report
    from p2p_desktop.io.outputs import OutputSet

    for fmt in formats:  # a finished run that is called again rewrites its report
        old = out / f"evaluation_report.{fmt}"
        if old.is_file():
            old.unlink()
    outs = OutputSet(out, [root])
    outs.records.extend(outputs)  # listed in the report with their hashes; never rolled back here
    first = len(outs.records)
    try:
        write_batch_report(summary, rows, outs, formats, title="p2p-desktop batch evaluation", meta=meta,
                           notes=notes, stem="evaluation", extra_tables=extra_tables)
    except BaseException:
        for rec in outs.records[first:]:
            Path(rec["path"]).unlink(missing_ok=True)
        raise
    return list(outs.records[first:])


def _classes_of(loaded, name: str) -> tuple[str, ...]:
    return next(c.classes for c in loaded if c.name == name)


# -- issue 12: procedures, precision, the paper's metric protocol, the demo-backbone warning ----------
def _default_presets(attacks: Sequence[str], preset: str | Mapping[str, str] | None):
    """P2P runs its ``paper`` preset unless ``preset`` names another for it (validated as usual)."""
    from p2p_desktop.attacks.registry import spec

    try:
        names = [spec(a).name for a in attacks if a and str(a).strip()]
    except InputError:
        return preset  # build_attacks reports the unknown attack
    if "p2p" not in names or len(set(names)) != len(names):
        return preset
    split = _split_presets(preset, names)
    if split["p2p"] is None:
        split["p2p"] = "paper"
    return {a: v for a, v in split.items() if v}


def _apply_dtype(attack_objs: list, dtype: str | None, device: str) -> list:
    """``dtype`` applied to every diffusion attack (after checking the device can run it)."""
    from p2p_desktop.attacks.procedure import apply_dtype

    if dtype is not None and not any(a.requires_backbone for a in attack_objs) and dtype not in ("auto", "fp32"):
        raise InputError(f"--dtype {dtype} applies to the diffusion attacks (diff-pgd, p2p), none of which is in "
                         "--attacks")
    return [apply_dtype(a, dtype, device) if (a.requires_backbone or dtype is None) else a for a in attack_objs]


def _procedures(attack_objs: list, presets: Mapping[str, str | None], bb) -> dict[str, dict[str, Any]]:
    from p2p_desktop.attacks.procedure import describe

    return {a.name: describe(a, presets.get(a.name), bb) for a in attack_objs}


def _label_summary(summary: list[dict[str, Any]], procedures: Mapping[str, dict], metrics: str) -> None:
    for r in summary:
        p = procedures[r["attack"]]
        r.update(procedure=p["label"], preset=p["preset"], resolution=p["resolution"], output=p["output"],
                 precision=p["precision"], metrics=metrics)


def _phantom_listing(root: Path) -> set[str]:
    """Image paths (relative to ``root``) listed by the project's phantom manifests in ``root``."""
    listed: set[str] = set()
    for manifest in root.glob("phantoms_seed*_n*.json"):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("generator") == "p2p-desktop phantoms":
            listed.update(str(r.get("image", "")).replace(os.sep, "/") for r in data.get("phantoms") or ()
                          if isinstance(r, dict))
    return listed


def _demo_backbone_warnings(root: Path, image_ids: Sequence[str], attack_objs: list, bb) -> list[str]:
    """A plain warning when the demo backbone runs on images that are not the project's phantoms."""
    if bb is None or bb.name != "demo" or not any(a.requires_backbone for a in attack_objs):
        return []
    listed = _phantom_listing(root)
    foreign = [i for i in image_ids if i not in listed]
    if not foreign:
        return []
    names = ", ".join(a.name for a in attack_objs if a.requires_backbone)
    return [f"{len(foreign)} of {len(image_ids)} image(s) of this dataset are not the project's phantoms (no phantom "
            f"manifest lists them), but {names} ran with the DEMO backbone, which was trained only on those "
            "phantoms: its results on these images say nothing about a real diffusion model; use a Stable "
            "Diffusion backbone (--backbone FOLDER) for real data"]


def _paper_protocol(rows, root: Path, out: Path, classifiers, attacks, items, image_ids, device: str,
                    notes: list[str], cancel: CancelToken, progress: Callable[[str], None]):
    """Rows with ``ssim``/``lpips`` replaced by the paper's protocol (from the written adversarial images
    and their originals), and FID per class averaged over classes."""
    from p2p_desktop.io import load_study
    from p2p_desktop.metrics import paper_metrics

    out_rows, lp_notes = [], set()
    for r in rows:
        r = dict(r)
        if r.get("success") is True:
            cancel.check()
            adv_file = adversarial_path(out, r["classifier"], r["attack"], r["image"])
            if adv_file.is_file():
                m, n = paper_metrics(load_study(root / r["image"], attach_mask=False).image,
                                     load_study(adv_file, attach_mask=False).image)
                r["ssim"], r["lpips"] = m["ssim"], m["lpips"]
                lp_notes.update(n)
            else:
                r["ssim"] = r["lpips"] = None
                notes.append(f"paper metrics of {r['image']} ({r['classifier']} × {r['attack']}) not computed: the "
                             f"adversarial image {adv_file} is missing")
        out_rows.append(r)
    fid = _fid_per_class(out_rows, root, out, classifiers, attacks, dict(zip(image_ids, (i.label for i in items))),
                         device, notes, cancel, progress)
    return out_rows, fid


def _fid_per_class(rows, root: Path, out: Path, classifiers, attacks, labels: Mapping[str, str], device: str,
                   notes: list[str], cancel: CancelToken, progress: Callable[[str], None]):
    """{(classifier, attack): (mean over classes of FID(all originals of the class, its adversarials), pairs)}."""
    import numpy as np

    from p2p_desktop.metrics import fid as fidlib
    from p2p_desktop.io import load_study

    status = fidlib.fid_status()
    if not status.available:
        notes.append(status.note)
        return {}
    extractor = fidlib.load_inception(device=device)
    by_class: dict[str, list[str]] = defaultdict(list)
    for image, label in labels.items():
        by_class[label].append(image)
    cache: dict[str, Any] = {}

    def features(images):
        new = [i for i in images if i not in cache]
        if new:
            cache.update(zip(new, extractor([load_study(root / i, attach_mask=False).image for i in new])))
        return np.stack([cache[i] for i in images])

    result, skipped = {}, []
    for c in classifiers:
        for a in attacks:
            values, pairs = [], 0
            for label, images in sorted(by_class.items()):
                wins = [r for r in rows if r["classifier"] == c and r["attack"] == a and r.get("success") is True
                        and labels.get(r["image"]) == label]
                if len(wins) < 2 or len(images) < 2:
                    if wins:
                        skipped.append(f"{c} × {a} × {label}")
                    continue
                cancel.check()
                progress(f"FID {c} × {a} × {label}")
                adv = extractor([load_study(adversarial_path(out, c, a, r["image"]), attach_mask=False).image
                                 for r in wins])
                values.append(fidlib.fid_from_features(features(images), adv))
                pairs += len(wins)
            result[(c, a)] = (float(np.mean(values)) if values else None, pairs)
    if skipped:
        notes.append("FID per class needs at least 2 successful examples of the class; left out: " + ", ".join(skipped))
    notes.append(fidlib.SMALL_SAMPLE_NOTE)
    return result
