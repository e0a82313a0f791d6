"""Valid success and transferability for a batch evaluation (:mod:`p2p_desktop.jobs.evaluate`).

**Valid success.** An adversarial example must keep its true label. On phantoms the
label-preservation oracle (:mod:`p2p_desktop.phantoms.oracle`) decides, for each successful
adversarial image, whether the finding was kept or redrawn as another class. Per classifier ×
attack:

- ``success_rate``         = successes / correct (images the clean classifier gets right);
- ``valid_success_rate``   = successes whose label the oracle says is kept / correct;
- ``semantic_change_rate`` = successes the oracle says changed the finding / correct.

So ``success_rate = valid_success_rate + semantic_change_rate`` when every success is judged.
Where a successful example has no generator record (not a phantom dataset) both rates are
``null`` and ``oracle_note`` says why.

**Transfer.** For the adversarial images crafted against each classifier (the successful ones,
as written under ``adversarial/``), every classifier of the run classifies them again. Per
attack, source classifier and target classifier: ``evaluated`` = those adversarials whose
clean image the target classifies correctly, ``fool_rate`` = share of them the target
misclassifies, ``valid_fool_rate`` = share it misclassifies *and* the oracle says the label is
kept (phantoms; else null). The diagonal (target = source) is 1 by construction and kept as
the reference.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["VALIDITY_COLUMNS", "VALIDITY_HELP", "TRANSFER_COLUMNS", "ORACLE_FILE", "TRANSFER_FILE",
           "judge_successes", "add_validity", "transfer_matrix", "validity_markdown", "transfer_csv",
           "oracle_csv", "transfer_table", "apply"]

VALIDITY_COLUMNS = ("valid_successes", "semantic_changes", "valid_success_rate", "semantic_change_rate",
                    "oracle_note")
VALIDITY_HELP = {
    "valid_successes": "successes whose true label the phantom oracle says is kept (null: not judged)",
    "semantic_changes": "successes the phantom oracle says redrew the finding as another class (null: not judged)",
    "valid_success_rate": "valid successes / correct: fooled AND label kept (phantoms only; null with oracle_note "
                          "elsewhere)",
    "semantic_change_rate": "semantic changes / correct: fooled by changing the finding (phantoms only)",
    "oracle_note": "why valid_success_rate / semantic_change_rate are null, when they are",
}
TRANSFER_COLUMNS = ("attack", "procedure", "control", "source", "target", "adversarials", "evaluated", "fooled",
                    "fool_rate", "valid_fooled", "valid_fool_rate")
ORACLE_FILE = "oracle.csv"
TRANSFER_FILE = "transfer.csv"
_ORACLE_COLUMNS = ("image", "label", "classifier", "attack", "verdict", "reason", "progress", "rewrite",
                   "mask_energy_share", "mask_area_share")


def _key(r: Mapping[str, Any]) -> tuple[str, str, str]:
    return r["image"], r["classifier"], r["attack"]


def judge_successes(rows: Sequence[Mapping[str, Any]], dataset_root: Path, out_dir: Path,
                    check: Callable[[], None] = lambda: None) -> dict:
    """{(image, classifier, attack): Verdict} for every successful row (its written adversarial)."""
    import numpy as np

    from p2p_desktop.io import load_study
    from p2p_desktop.jobs.evaluate.files import adversarial_path
    from p2p_desktop.phantoms.oracle import NO_RECORD, Verdict, judge, phantom_record

    verdicts: dict = {}
    sources: dict[str, Any] = {}
    for r in rows:
        if r.get("success") is not True:
            continue
        check()
        image = r["image"]
        if image not in sources:
            path = dataset_root / image
            record = phantom_record(path)
            sources[image] = (record, load_study(path, attach_mask=False).image if record else None)
        record, x = sources[image]
        if record is None:
            verdicts[_key(r)] = Verdict(None, NO_RECORD)
            continue
        adv_file = adversarial_path(out_dir, r["classifier"], r["attack"], image)
        if not adv_file.is_file():
            verdicts[_key(r)] = Verdict(None, f"adversarial image {adv_file.name} is missing")
            continue
        a = load_study(adv_file, attach_mask=False).image
        verdicts[_key(r)] = judge(record, np.asarray(x), np.asarray(a))
    return verdicts


def add_validity(summary: list[dict[str, Any]], rows: Sequence[Mapping[str, Any]], verdicts: Mapping,
                 no_record: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Add :data:`VALIDITY_COLUMNS` to each summary row (in place); returns notes. ``no_record``:
    images without a generator record (their cell is null even when none of them was fooled)."""
    from p2p_desktop.phantoms.oracle import NO_RECORD

    notes: list[str] = []
    for s in summary:
        attacked = [r for r in rows if r["classifier"] == s["classifier"] and r["attack"] == s["attack"]
                    and r.get("clean_pred") and r.get("clean_pred") == r.get("label")]
        wins = [r for r in attacked if r.get("success") is True]
        vs = [verdicts.get(_key(r)) for r in wins]
        undecided = [v for v in vs if v is None or v.verdict is None]
        correct = s.get("correct") or 0
        unrecorded = sorted({r["image"] for r in attacked} & set(no_record))
        if unrecorded and not undecided:
            s.update(valid_successes=None, semantic_changes=None, valid_success_rate=None, semantic_change_rate=None,
                     oracle_note=f"{len(unrecorded)} of {len(attacked)} attacked image(s) not judged: {NO_RECORD}")
            continue
        if undecided:
            reason = (undecided[0].reason if undecided[0] is not None else "not judged")
            s.update(valid_successes=None, semantic_changes=None, valid_success_rate=None, semantic_change_rate=None,
                     oracle_note=f"{len(undecided)} of {len(wins)} successful example(s) not judged: {reason}")
            continue
        kept = sum(1 for v in vs if v.label_kept)
        changed = len(vs) - kept
        s.update(valid_successes=kept, semantic_changes=changed,
                 valid_success_rate=kept / correct if correct else None,
                 semantic_change_rate=changed / correct if correct else None,
                 oracle_note="" if correct else "no correctly classified image was attacked")
    if any(s.get("valid_success_rate") is not None for s in summary):
        notes.append("valid success = fooled AND the phantom label-preservation oracle says the finding is kept "
                     f"(p2p_desktop.phantoms.oracle; per example in {ORACLE_FILE}); semantic change = fooled by "
                     "redrawing the finding as another class, which is not an adversarial example")
    elif summary and all(s.get("valid_success_rate") is None for s in summary):
        notes.append("valid_success_rate and semantic_change_rate are null: the label-preservation oracle needs "
                     "phantoms with their generator record (p2p-desktop phantoms writes them)")
    return notes


def transfer_matrix(rows: Sequence[Mapping[str, Any]], classifiers: Sequence, attacks: Sequence[str], out_dir: Path,
                    verdicts: Mapping, check: Callable[[], None] = lambda: None,
                    procedures: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The transfer entries (see the module docstring); ``classifiers`` are loaded classifiers;
    ``procedures`` (attack -> :func:`~p2p_desktop.attacks.procedure.describe`) label each entry."""
    procedures = procedures or {}
    from p2p_desktop.io import load_study
    from p2p_desktop.jobs.evaluate.files import adversarial_path

    correct = {(r["image"], r["classifier"]) for r in rows if r.get("clean_pred") and r["clean_pred"] == r["label"]}
    preds: dict[tuple[str, str, str], dict[str, str]] = {}
    entries = []
    for a in attacks:
        for src in classifiers:
            wins = [r for r in rows if r["classifier"] == src.name and r["attack"] == a and r.get("success") is True]
            for r in wins:
                path = adversarial_path(out_dir, src.name, a, r["image"])
                if not path.is_file():
                    continue
                check()
                image = load_study(path, attach_mask=False).image
                preds[_key(r)] = {t.name: (t.predict(image)[0] if (r["image"], t.name) in correct else "")
                                  for t in classifiers}  # only targets that judge it (a broken one never does)
            for tgt in classifiers:
                judged = [r for r in wins if _key(r) in preds and (r["image"], tgt.name) in correct]
                fooled = [r for r in judged if preds[_key(r)][tgt.name] != r["label"]]
                vs = [verdicts.get(_key(r)) for r in fooled]
                known = all(v is not None and v.verdict is not None for v in vs)
                valid = sum(1 for v in vs if v is not None and v.label_kept) if known else None
                entries.append({"attack": a, "procedure": (procedures.get(a) or {}).get("label", a),
                                "control": bool((procedures.get(a) or {}).get("control", False)),
                                "source": src.name, "target": tgt.name, "adversarials": len(wins),
                                "evaluated": len(judged), "fooled": len(fooled),
                                "fool_rate": len(fooled) / len(judged) if judged else None,
                                "valid_fooled": valid,
                                "valid_fool_rate": (valid / len(judged) if judged and valid is not None else None)})
    return {"description": "adversarial images crafted against `source` (its successes, as written), classified "
                           "by `target`; evaluated = those whose clean image the target classifies correctly; "
                           "fool_rate = fooled / evaluated; valid_fool_rate = fooled with the label kept (phantom "
                           "oracle) / evaluated, null without a generator record",
            "entries": entries}


def _label(r: Mapping[str, Any]) -> str:
    """The procedure label of a summary row or transfer entry, as the main tables name it."""
    return str(r.get("procedure") or r["attack"]) + (" (control)" if r.get("control") else "")


def _f(v: Any, digits: int = 2) -> str:
    return "n/a" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def validity_markdown(summary: Sequence[Mapping[str, Any]], transfer: Mapping[str, Any]) -> str:
    """Markdown sections: valid success per classifier × attack, and the transfer matrices."""
    lines = ["", "## Valid success (label-preservation oracle)", "",
             "An adversarial example must keep its true label. On phantoms the oracle renders the same breast "
             "under every class and says whether the adversarial image moved toward another class's rendering "
             "(semantic change) or kept the finding (valid).", "",
             "| Classifier | Attack | Success rate | Valid success rate | Semantic change rate | SSIM ↑ | Note |",
             "|---|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['classifier']} | {_label(r)} | {_f(r.get('success_rate'))} | "
                     f"{_f(r.get('valid_success_rate'))} | {_f(r.get('semantic_change_rate'))} | "
                     f"{_f(r.get('ssim'), 3)} | {r.get('oracle_note') or ''} |")
    entries = list(transfer.get("entries", []))
    if entries:
        names = list(dict.fromkeys(e["source"] for e in entries))
        lines += ["", "## Transfer (fool rate; valid fool rate in brackets)", "",
                  "Rows: the classifier the adversarial images were crafted against; columns: the classifier "
                  "that classifies them (only images it classifies correctly when clean; n = that count).", ""]
        for a in dict.fromkeys(e["attack"] for e in entries):
            first = next(e for e in entries if e["attack"] == a)
            lines += [f"**{_label(first)}**", "", "| crafted against \\ classified by | " + " | ".join(names) + " |",
                      "|---|" + "---|" * len(names)]
            for src in names:
                cells = []
                for tgt in names:
                    e = next(x for x in entries if x["attack"] == a and x["source"] == src and x["target"] == tgt)
                    cells.append(f"{_f(e['fool_rate'])} ({_f(e['valid_fool_rate'])}), n={e['evaluated']}")
                lines.append(f"| {src} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def _csv(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    from p2p_desktop.jobs.evaluate.log import cell as _cell

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def transfer_csv(transfer: Mapping[str, Any]) -> str:
    """The transfer entries as CSV."""
    return _csv(TRANSFER_COLUMNS, transfer.get("entries", []))


def transfer_table(transfer: Mapping[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """(heading, columns, rows) of the transfer entries for the HTML/PDF report."""
    rows = [[_f(e.get(c), 3) for c in TRANSFER_COLUMNS] for e in transfer.get("entries", [])]
    return "Transfer: adversarials crafted against source, classified by target", list(TRANSFER_COLUMNS), rows


def oracle_csv(rows: Sequence[Mapping[str, Any]], verdicts: Mapping) -> str:
    """The oracle's verdict for each row that has one, as CSV."""
    out = []
    for r in rows:
        v = verdicts.get(_key(r))
        if v is None:
            continue
        fig = v.figures
        out.append({"image": r["image"], "label": r["label"], "classifier": r["classifier"], "attack": r["attack"],
                    "verdict": v.verdict or "", "reason": v.reason,
                    "progress": "; ".join(f"{k} {x:.3f}" for k, x in (fig.get("progress") or {}).items()),
                    "rewrite": fig.get("rewrite"), "mask_energy_share": fig.get("mask_energy_share"),
                    "mask_area_share": fig.get("mask_area_share")})
    return _csv(_ORACLE_COLUMNS, out)


def apply(summary: list[dict[str, Any]], rows: Sequence[Mapping[str, Any]], dataset_root: Path, out_dir: Path,
          classifiers: Sequence, attacks: Sequence[str], check: Callable[[], None] = lambda: None,
          procedures: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Everything :func:`~p2p_desktop.jobs.evaluate.evaluate` adds: validity columns (in ``summary``),
    ``transfer``, notes, and the bytes of ``oracle.csv`` / ``transfer.csv``."""
    from p2p_desktop.phantoms.oracle import phantom_record

    verdicts = judge_successes(rows, dataset_root, out_dir, check)
    no_record = {i for i in {r["image"] for r in rows} if phantom_record(dataset_root / i) is None}
    notes = add_validity(summary, rows, verdicts, no_record)
    transfer = transfer_matrix(rows, classifiers, attacks, out_dir, verdicts, check, procedures)
    return {"notes": notes, "transfer": transfer, "verdicts": verdicts,
            "files": {ORACLE_FILE: oracle_csv(rows, verdicts).encode(),
                      TRANSFER_FILE: transfer_csv(transfer).encode()},
            "markdown": validity_markdown(summary, transfer)}
