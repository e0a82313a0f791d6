"""``reader-study score``: unblind the answers with the key and measure what readers saw.

Per attack (and for the originals), over every reader's answers pooled:

* ``accuracy`` -- readers telling altered from original: in a single-image study the share of
  the attack's adversarial images and of their originals answered correctly; in a pair study
  the share of pairs whose altered image was picked. Wilson 95 % interval (statsmodels).
* ``auc`` -- ROC AUC of the confidence-signed answers (yes with confidence c -> +c, no -> -c;
  in pairs, A -> +c, B -> -c) against the truth (scikit-learn); 0.5 = imperceptible. 95 %
  interval: percentile bootstrap of the Mann-Whitney AUC, altered and original answers
  resampled separately (SciPy, 2000 resamples, fixed seed).
* ``finding_change_rate`` -- single design: the share of (reader, source) pairs where the
  reader's finding on the adversarial image differs from their finding on its original
  (Wilson interval); ``finding_error_rate`` -- findings that differ from the truth.
* inter-reader agreement on "altered?" and on the finding: Cohen's kappa (two readers,
  scikit-learn) and Fleiss' kappa (two or more, statsmodels), over the cases every reader
  answered; time per case (answers read in the app).

The intervals treat answers as independent (readers and cases are not modelled as random
effects): with few readers they are optimistic.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from p2p_desktop.errors import InputError
from p2p_desktop.readerstudy.answers import FINDINGS, load_answers
from p2p_desktop.readerstudy.make import load_study

__all__ = ["load_key", "score_study", "ORIGINALS"]

ORIGINALS = "(originals)"
_RESAMPLES = 2000


def load_key(path: str | os.PathLike, study: dict[str, Any]) -> dict[str, Any]:
    """The key, checked against the study (same study id, every case present)."""
    try:
        key = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the key ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise InputError(f"{path}: the key is not valid JSON ({exc})") from None
    if not isinstance(key, dict) or "cases" not in key:
        raise InputError(f"{path}: not a reader-study key (no cases)")
    if key.get("study_id") != study.get("study_id"):
        raise InputError(f"{path}: this key belongs to another study (study id {key.get('study_id')}, "
                         f"the study's is {study.get('study_id')})")
    missing = {c["case"] for c in study["cases"]} - {c["case"] for c in key["cases"]}
    if missing:
        raise InputError(f"{path}: the key lacks {len(missing)} case(s) of the study, e.g. {sorted(missing)[0]}")
    return key


def _wilson(successes: int, n: int) -> list[float] | None:
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return None
    lo, hi = proportion_confint(successes, n, alpha=0.05, method="wilson")
    return [float(lo), float(hi)]


def _rate(flags: list[bool]) -> tuple[float | None, list[float] | None, int]:
    n = len(flags)
    k = int(sum(flags))
    return (k / n if n else None), _wilson(k, n), n


def _auc_stat(pos, neg, axis=-1):
    from scipy.stats import mannwhitneyu

    return mannwhitneyu(pos, neg, axis=axis).statistic / (pos.shape[axis] * neg.shape[axis])


def _auc(labels: list[int], scores: list[float]) -> tuple[float | None, list[float] | None]:
    from scipy.stats import bootstrap
    from sklearn.metrics import roc_auc_score

    y, s = np.asarray(labels), np.asarray(scores, dtype=float)
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None, None
    auc = float(roc_auc_score(y, s))
    if len(pos) < 2 or len(neg) < 2 or np.all(s == s[0]):
        return auc, None
    res = bootstrap((pos, neg), _auc_stat, n_resamples=_RESAMPLES, method="percentile", vectorized=True,
                    confidence_level=0.95, rng=np.random.default_rng(0))
    lo, hi = res.confidence_interval
    return auc, [float(lo), float(hi)]


def _signed(ans, design: str) -> float:
    if design == "pair":
        return float(ans.confidence if ans.altered == "A" else -ans.confidence)
    return float(ans.confidence if ans.altered else -ans.confidence)


def _kappas(answers: dict[str, dict[str, Any]], field: str) -> dict[str, Any]:
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    readers = sorted(answers)
    common = sorted(set.intersection(*(set(a) for a in answers.values()))) if readers else []
    out: dict[str, Any] = {"readers": len(readers), "cases": len(common), "cohen": None, "fleiss": None}
    if len(readers) < 2 or len(common) < 2:
        return out
    table = [[str(getattr(answers[r][c], field)) for r in readers] for c in common]
    if len(readers) == 2:
        k = cohen_kappa_score([row[0] for row in table], [row[1] for row in table])
        out["cohen"] = None if np.isnan(k) else float(k)
    cats = sorted({v for row in table for v in row})
    codes = np.array([[cats.index(v) for v in row] for row in table])
    counts, _ = aggregate_raters(codes, n_cat=len(cats))
    with np.errstate(divide="ignore", invalid="ignore"):
        k = fleiss_kappa(counts, method="fleiss")
    out["fleiss"] = None if np.isnan(k) else float(k)
    return out


def score_study(study: str | os.PathLike, key_path: str | os.PathLike) -> dict[str, Any]:
    """Every score of the study (see the module docstring) as one JSON-ready dict."""
    meta = load_study(study)
    key = load_key(key_path, meta)
    design = meta["design"]
    truth = {c["case"]: c for c in key["cases"]}
    answers = load_answers(study)
    if not answers:
        raise InputError(f"{study}: no answers yet (read it in the app or `reader-study import`)")
    unknown = sorted({c for a in answers.values() for c in a} - set(truth))
    if unknown:
        raise InputError(f"{study}: answers to unknown case(s), e.g. {unknown[0]}")

    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    # single design: reader's finding per (reader, source) on the original, per attack on the adversarial
    orig_finding: dict[tuple[str, str], str] = {}
    adv_finding: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    sources_of: dict[str, set[str]] = defaultdict(set)
    for c in key["cases"]:
        if c["altered"] and c.get("attack"):
            sources_of[c["attack"]].add(c["source"])
    for reader, given in answers.items():
        for case, ans in given.items():
            k = truth[case]
            name = k["attack"] if (design == "pair" or k["altered"]) else ORIGINALS
            if design == "pair":
                correct, label = ans.altered == k["altered_side"], int(k["altered_side"] == "A")
            else:
                correct, label = bool(ans.altered) == bool(k["altered"]), int(bool(k["altered"]))
            targets = [name]
            if design == "single" and name == ORIGINALS:  # an original counts for every attack made from it
                targets += [a for a, srcs in sources_of.items() if k["source"] in srcs]
            for t in targets:
                g = groups[t]
                g["correct"].append(correct)
                g["label"].append(label)
                g["score"].append(_signed(ans, design))
            g = groups[name]
            if k.get("truth") in FINDINGS:
                g["finding_error"].append(ans.finding != k["truth"])
            if ans.seconds is not None:
                g["seconds"].append(float(ans.seconds))
            if design == "single":
                if k["altered"]:
                    adv_finding[k["attack"]].append((reader, k["source"], ans.finding))
                else:
                    orig_finding[(reader, k["source"])] = ans.finding
    rows = []
    for name in sorted(groups, key=lambda n: (n != ORIGINALS, n)):
        g = groups[name]
        only_orig = design == "single" and name == ORIGINALS
        if only_orig:
            acc, acc_ci, n = _rate(g["correct"])
            auc, auc_ci = None, None
        else:
            acc, acc_ci, n = _rate(g["correct"])
            auc, auc_ci = _auc(g["label"], g["score"])
        change = [f != orig_finding[(r, s)] for r, s, f in adv_finding.get(name, []) if (r, s) in orig_finding]
        fcr, fcr_ci, n_change = _rate(change) if (design == "single" and not only_orig) else (None, None, 0)
        fer, fer_ci, n_err = _rate(g["finding_error"])
        secs = g["seconds"]
        rows.append({"attack": name, "answers": n, "accuracy": acc, "accuracy_ci95": acc_ci,
                     "auc": auc, "auc_ci95": auc_ci,
                     "finding_change_rate": fcr, "finding_change_rate_ci95": fcr_ci, "finding_pairs": n_change,
                     "finding_error_rate": fer, "finding_error_rate_ci95": fer_ci,
                     "seconds_mean": float(np.mean(secs)) if secs else None,
                     "seconds_median": float(np.median(secs)) if secs else None})
    per_reader = {r: {"answered": len(a), "of": len(meta["cases"])} for r, a in answers.items()}
    secs_all = [a.seconds for given in answers.values() for a in given.values() if a.seconds is not None]
    return {"study_id": meta["study_id"], "design": design, "cases": len(meta["cases"]), "readers": per_reader,
            "attacks": rows,
            "agreement": {"altered": _kappas(answers, "altered"), "finding": _kappas(answers, "finding")},
            "time_per_case": {"answers": len(secs_all), "mean": float(np.mean(secs_all)) if secs_all else None,
                              "median": float(np.median(secs_all)) if secs_all else None},
            "notes": ["accuracy 0.5 and AUC 0.5 = readers cannot tell altered from original",
                      "95 % intervals treat answers as independent (readers and cases not modelled)"]}


def _fmt(v, ci=None, pct=False) -> str:
    if v is None:
        return "-"
    s = f"{v:.2f}"
    if ci:
        s += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return s


def score_table(scores: dict[str, Any]) -> str:
    """The scores as a Markdown table (the README's and the terminal's)."""
    lines = ["| attack | answers | accuracy [95 % CI] | AUC [95 % CI] | finding change [95 % CI] | "
             "finding vs truth wrong | s/case |", "|---|---:|---|---|---|---|---:|"]
    for r in scores["attacks"]:
        lines.append(f"| {r['attack']} | {r['answers']} | {_fmt(r['accuracy'], r['accuracy_ci95'])} | "
                     f"{_fmt(r['auc'], r['auc_ci95'])} | "
                     f"{_fmt(r['finding_change_rate'], r['finding_change_rate_ci95'])} | "
                     f"{_fmt(r['finding_error_rate'], r['finding_error_rate_ci95'])} | "
                     f"{_fmt(r['seconds_mean'])} |")
    ag = scores["agreement"]
    lines.append("")
    lines.append(f"Agreement (\"altered?\"): Cohen's kappa {_fmt(ag['altered']['cohen'])}, "
                 f"Fleiss' kappa {_fmt(ag['altered']['fleiss'])}; finding: Cohen's {_fmt(ag['finding']['cohen'])}, "
                 f"Fleiss' {_fmt(ag['finding']['fleiss'])} ({ag['altered']['readers']} readers, "
                 f"{ag['altered']['cases']} cases read by all)")
    return "\n".join(lines)
