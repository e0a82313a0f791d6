"""The batch evaluation: every attack × every classifier over a BUSI-layout dataset, as in the P2P paper.

::

    result = evaluate("BUSI/", ["fgsm", "pgd"], ["demo-resnet34"], "out/", seed=0,
                      on_progress=lambda ev: ..., cancel=token)   # ev: p2p_desktop.progress.Progress
    result.summary   # one row per classifier × attack (success rate, LPIPS, SSIM, FID, ...)

The steps (the same numbers mark them in the code):

1. **plan** — validate everything before any work (attacks and their parameters, classifiers,
   backbone, dataset, output folder) and load each classifier and the backbone once
   (:func:`~p2p_desktop.jobs.evaluate.params.plan`);
2. **state** — check the folder's ``evaluation_state.json`` (same settings resume, others are
   refused), read the finished rows of ``per_image.csv`` and open it for appending
   (:mod:`~p2p_desktop.jobs.evaluate.log`);
3. **jobs** — for each image (in dataset order, classes interleaved when ``limit`` is set), for
   each classifier: classify the clean image; a misclassified image is not attacked (counted as
   "skipped: misclassified"); otherwise run each attack on it
   (:func:`~p2p_desktop.attacks.runner.run_attack`, success judged on the written image); append
   its row at once and write the adversarial image of each success under
   ``adversarial/<classifier>/<attack>/<image path>.png``. (3'. On another executor, a Ray
   cluster, the jobs run there and their rows are written here as they arrive.)
4. **tables** — read the rows back, compute FID (and the paper's protocol when asked), the
   summary, valid success and transfer, and write ``summary.md``, ``summary.csv`` and
   ``summary.json`` whole (and, when asked, the batch report ``evaluation_report.html/.pdf``)
   (:mod:`~p2p_desktop.jobs.evaluate.summary`, :mod:`~p2p_desktop.jobs.evaluate.fid`);
5. **audit** — append one ``evaluate`` record with the settings, counts and every output's
   SHA-256 (:func:`~p2p_desktop.jobs.evaluate.audit.record_evaluation`); a run cancelled or failed
   after step 1 is recorded too, with its state.

Resuming: the fingerprint covers the image list, attack configs, classifier and backbone hashes,
seed, device and limit. Calling again with the same settings skips every (image, classifier,
attack) already in ``per_image.csv``. A cancelled run (``Cancelled``; exit 3 in the CLI)
deliberately keeps the rows and images finished so far — that is what makes the batch resumable —
but never a half-written file: rows are whole lines and the tables are only written at the end.

Metrics follow the paper (see ``P2P_METHOD.md``): success rate = successes / images the clean
classifier gets right; LPIPS, SSIM (and PSNR, L2, L∞) are means over successful examples; FID
compares originals and adversarials of the successful examples. The paper's script instead sums
over successes and divides by all attacked images; those values are reported separately,
labelled ``*_paper``. An attack that ends in an error counts as not successful (and is counted
in ``errors``).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p_desktop.attacks.procedure import FID_TEXT, METRIC_PROTOCOL_TEXT, metric_protocol
from p2p_desktop.cancel import CancelToken
from p2p_desktop.errors import Cancelled, InputError
from p2p_desktop.io.outputs import FolderLock
from p2p_desktop.jobs.evaluate import fid as fid_glue
from p2p_desktop.jobs.evaluate.audit import record_evaluation
from p2p_desktop.jobs.evaluate.files import (
    ADVERSARIAL_DIR,
    PER_IMAGE_FILE,
    SUMMARY_FILES,
    adversarial_path,
    replace_file,
)
from p2p_desktop.jobs.evaluate.log import RowLog, check_state, read_rows, repair_tail, write_state
from p2p_desktop.jobs.evaluate.params import Plan, plan
from p2p_desktop.jobs.evaluate.summary import (
    COLUMN_HELP,
    label_summary,
    summarise,
    summary_csv,
    summary_markdown,
    validity_and_transfer,
    write_batch_report,
)
from p2p_desktop.progress import Progress

__all__ = ["EvaluationResult", "ProgressCallback", "evaluate"]

log = logging.getLogger(__name__)

#: ``on_progress(event)``: ``event.step`` of ``event.total`` jobs done, ``event.message`` says which;
#: ``event.eta`` is derived from the pace of this call (resumed jobs, ``event.start``, do not count).
ProgressCallback = Callable[[Progress], None]


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


class _Tally:
    """Where the jobs stand: the row log, the finished keys, the counts and the progress events."""

    def __init__(self, p: Plan, done_keys: set, notify: ProgressCallback) -> None:
        self.per_image = p.out / PER_IMAGE_FILE
        self.rowlog = RowLog(self.per_image)
        self.done_keys = done_keys
        self.total = p.total
        self.resumed = self.done = len(done_keys & p.keys)
        self.attacked = 0  # attacks run by this call
        self.skipped: dict[str, set[str]] = defaultdict(set)  # classifier -> misclassified images
        self.skipped_label: dict[str, set[str]] = defaultdict(set)  # classifier -> images of unknown class
        self._notify = notify
        self._t0 = time.perf_counter()

    def report(self, message: str) -> None:
        self._notify(Progress(step=self.done, total=self.total, message=message,
                              elapsed=time.perf_counter() - self._t0, start=self.resumed))

    def record(self, row: dict[str, Any]) -> None:
        """Append a finished job's row (one whole line, fsynced)."""
        self.rowlog.append(row)
        self.done_keys.add((row["image"], row["classifier"], row["attack"]))
        self.done += 1

    def skip(self, n: int = 1) -> None:
        self.done += n

    def counts(self) -> dict[str, int]:
        return {"attacked": self.attacked, "resumed": self.resumed, "done": self.done, "total": self.total}


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
    command: str = "evaluate",
) -> EvaluationResult:
    """Attack every correctly classified image of ``dataset_dir`` with each attack, per classifier.

    ``attacks``: registered attack names; ``classifiers``: registered names or model cards;
    ``params``: ``{"pgd.steps": 20, "eps": 0.03}`` (unscoped keys go to every attack that has
    them) or ``{"pgd": {"steps": 20}}``; ``preset``: a preset for every attack that has presets,
    or ``{"p2p": "fast"}``. ``on_progress(event)`` receives a :class:`~p2p_desktop.progress.Progress`
    before and after each job (image × classifier × attack); ``cancel`` is checked between
    jobs and inside attacks, raising :class:`Cancelled` with the finished rows kept (resumable).
    ``on_step`` receives every attack step. ``report`` (``"html,pdf"``) also writes the batch
    report (``evaluation_report.html/.pdf``) at the end. Bad settings raise :class:`InputError`
    before anything is written. ``metrics``: the metric protocol of the tables (``paper`` or
    ``native``, see :mod:`p2p_desktop.metrics`); ``dtype``: precision of the diffusion backbone
    (auto, fp32, fp16, bf16). P2P runs its ``paper`` preset unless ``preset`` names another.
    ``dicom``: a :class:`~p2p_desktop.export.batch_dicom.BatchDicomExport` that writes a derived
    DICOM of each success (``evaluate --export-dicom``). ``executor``: where the jobs run
    (``None``: here, one after another; a :class:`p2p_desktop.executors.ray_executor.RayExecutor`:
    on a Ray cluster); the rows are written here as they arrive either way. ``command``: the
    surface named in the audit record (``evaluate``, ``gui-evaluate``).
    """
    t_start = time.perf_counter()
    cancel = cancel or CancelToken()
    notify = on_progress or (lambda event: None)

    # 1. plan: every setting checked, every model loaded once
    p = plan(dataset_dir, attacks, classifiers, out_dir, backbone=backbone, limit=limit, seed=seed, device=device,
             params=params, preset=preset, report=report, metrics=metrics, dtype=dtype, dicom=dicom,
             executor=executor, cancel=cancel)
    # 2. state: one run at a time in the folder; the same settings resume, others are refused
    with FolderLock(p.out):
        tally = _open_state(p, notify)
        try:
            # 3. the jobs: image × classifier × attack
            tally.report("resuming" if tally.resumed else "starting")
            try:
                if p.executor is not None:
                    _run_elsewhere(p, tally, cancel)
                else:
                    _run_here(p, tally, cancel, on_step)
            except (Cancelled, KeyboardInterrupt):
                kept = len(tally.done_keys & p.keys)
                raise Cancelled(f"evaluation cancelled after {kept} of {p.total} result(s); they are kept in "
                                f"{tally.per_image} — run the same command again to resume") from None
            finally:
                tally.rowlog.close()
            # 4. the tables (written whole, only now)
            result = _tables(p, tally, cancel, t_start)
        except BaseException as exc:
            _record_unfinished(p, tally, exc, command)
            raise
        # 5. the audit record
        record_evaluation(p, result.outputs, counts=tally.counts(), command=command)
    tally.done = tally.total
    tally.report("done")
    return result


# -- 2. state ------------------------------------------------------------------------------------------
def _open_state(p: Plan, notify: ProgressCallback) -> _Tally:
    """Refuse another run's folder; write the state of a new run; the keys finished earlier."""
    resuming = check_state(p.out, p.config, p.fingerprint)  # the folder exists: its lock is in it
    if not resuming:
        write_state(p.out, p.config, p.fingerprint, p.root)
    per_image = p.out / PER_IMAGE_FILE
    earlier = []
    if per_image.exists():
        repair_tail(per_image)
        earlier = read_rows(per_image)
    return _Tally(p, {(r["image"], r["classifier"], r["attack"]) for r in earlier}, notify)


# -- 3. the jobs -----------------------------------------------------------------------------------------
def _run_here(p: Plan, tally: _Tally, cancel: CancelToken, on_step) -> None:
    """3. Each image once, each classifier on it, each attack still to do."""
    from p2p_desktop.io import load_study

    for image_id, item in zip(p.image_ids, p.items):
        cancel.check()
        pending = {(c.name, a.name) for c in p.classifiers for a in p.attacks
                   if (image_id, c.name, a.name) not in tally.done_keys}
        if not pending:
            continue
        try:
            study = load_study(item.path, label=item.label)
        except InputError as exc:
            for c in p.classifier_names:
                for a in p.attack_names:
                    if (c, a) in pending:
                        tally.record({"image": image_id, "label": item.label or "", "classifier": c, "attack": a,
                                      "error": f"cannot load the image: {exc}"})
            tally.report(f"{image_id}: cannot load")
            continue
        for clf in p.classifiers:
            todo = [a for a in p.attacks if (clf.name, a.name) in pending]
            if todo:
                _attack_image(p, tally, cancel, on_step, image_id, item, study, clf, todo)


def _attack_image(p: Plan, tally: _Tally, cancel: CancelToken, on_step, image_id: str, item, study, clf,
                  todo: list) -> None:
    """3a. Classify the clean image; skip it (unknown class, misclassified) or run each attack."""
    if item.label not in clf.classes:
        tally.skipped_label[clf.name].add(image_id)
        tally.skip(len(todo))
        return
    from p2p_desktop.executors.unit import clean_verdict

    clean_pred, error = clean_verdict(clf, study.image)
    if error is not None:  # an error row per job: never counted as a class nor as misclassified
        for attack in todo:
            tally.record({"image": image_id, "label": item.label, "classifier": clf.name, "attack": attack.name,
                          "procedure": p.procedures[attack.name]["label"], "error": error})
        tally.report(f"{clf.name}: {image_id}: {error}")
        return
    if clean_pred != item.label:
        tally.skipped[clf.name].add(image_id)
        tally.skip(len(todo))
        tally.report(f"{clf.name}: {image_id} skipped (misclassified)")
        return
    # a control runs after the attack it stands against and is given what that found on this image
    # (random-prompt: P2P's learned-change norm and iterations; rerender: the SSIM of P2P's success)
    found: dict[str, dict] = {}
    for attack in sorted(todo, key=lambda a: bool(getattr(a, "control_for", None))):
        cancel.check()
        res = _one_job(p, tally, cancel, on_step, image_id, item, study, clf, attack, clean_pred,
                       found.get(getattr(attack, "control_for", None) or ""))
        if res is not None:
            found[attack.name] = {**res.info, "iterations": res.iterations, "success": bool(res.success),
                                  "ssim": res.metrics.get("ssim")}


def _one_job(p: Plan, tally: _Tally, cancel: CancelToken, on_step, image_id: str, item, study, clf, attack,
             clean_pred: str, reference: dict | None = None):
    """3b. One attack: its row, the adversarial image of a success (and its DICOM), the row appended;
    the result (None when the attack failed). ``reference``: for a control, what the attack it stands
    against found on this image in this session."""
    from p2p_desktop.executors.unit import attack_into_row
    from p2p_desktop.io.encode import encode_png

    what = f"{clf.name} × {attack.name}: {image_id}"
    tally.report(what)
    row: dict[str, Any] = {"image": image_id, "label": item.label, "classifier": clf.name, "attack": attack.name,
                           "clean_pred": clean_pred, "procedure": p.procedures[attack.name]["label"]}
    tally.attacked += 1
    res = attack_into_row(row, study, clf, attack, p.backbone, item.label, what=what, on_step=on_step, cancel=cancel,
                          reference=reference)
    if res is not None and res.success:
        replace_file(adversarial_path(p.out, clf.name, attack.name, image_id),
                     encode_png(res.adversarial, bits=study.bits_stored))
        if p.dicom is not None:
            p.dicom.export(p.out, res, study, clf.name, attack.name, image_id, p.root)
    tally.record(row)
    tally.report(what)
    return res


def _run_elsewhere(p: Plan, tally: _Tally, cancel: CancelToken) -> None:
    """3'. The jobs on another executor (Ray); each row written here as it arrives."""
    from p2p_desktop.executors import run_elsewhere

    for kind, res in run_elsewhere(p.executor, p.image_ids, p.items, p.classifiers, p.attacks, p.procedures,
                                   tally.done_keys, p.clf_specs, p.backbone_spec, p.backbone, p.device, cancel):
        if kind == "skip_label":
            tally.skipped_label[res[0]].add(res[1])
            tally.skip()
            continue
        unit = res.unit
        if (unit.image_id, unit.classifier, unit.attack) in tally.done_keys:
            continue  # a retried job that had already reported: never a row twice
        if res.skipped:
            tally.skipped[unit.classifier].add(unit.image_id)
            tally.skip()
            continue
        tally.attacked += int(res.attacked)
        if res.png is not None:
            replace_file(adversarial_path(p.out, unit.classifier, unit.attack, unit.image_id), res.png)
        tally.record(res.row)
        tally.report(f"{unit.classifier} × {unit.attack}: {unit.image_id}")


# -- 4. the tables ----------------------------------------------------------------------------------------
def _tables(p: Plan, tally: _Tally, cancel: CancelToken, t_start: float) -> EvaluationResult:
    """4. Rows read back, FID, the summary with its notes, validity and transfer; the files written."""
    from p2p_desktop.metrics import lpips_status

    # 4a. this evaluation's rows (the last per key: a row is never written twice, but be robust)
    keys = p.keys
    rows = [r for r in read_rows(tally.per_image) if (r["image"], r["classifier"], r["attack"]) in keys]
    rows = list({(r["image"], r["classifier"], r["attack"]): r for r in rows}.values())
    notes: list[str] = []
    ok, lp_note = lpips_status()
    if not ok:
        notes.append(lp_note)
    # 4b. FID (native protocol) from the written images
    fid = _fid(p, tally, rows, notes, cancel)
    notes += _row_notes(p, tally, rows)
    # 4c. the summary (under the paper's protocol: SSIM, LPIPS and FID recomputed)
    if p.metrics == "paper":
        rows_for_summary, fid = fid_glue.paper_protocol(rows, p.root, p.out, p.classifier_names, p.attack_names,
                                                        p.items, p.image_ids, p.device, notes, cancel, tally.report)
    else:
        rows_for_summary = rows
    summary = summarise(rows_for_summary, p.classifier_names, p.attack_names, len(p.items),
                        {c: len(v) for c, v in tally.skipped.items()},
                        {c: len(v) for c, v in tally.skipped_label.items()}, fid,
                        unavailable=() if ok else ("lpips",))
    label_summary(summary, p.procedures, p.metrics)
    notes[:0] = list(p.warnings) + [f"metrics: {METRIC_PROTOCOL_TEXT[p.metrics]}"]
    notes += [a.control_note for a in p.attacks if getattr(a, "control", False) and getattr(a, "control_note", "")]
    # 4d. valid success and transfer (images skipped in an earlier session are re-checked there), DICOMs
    honest = validity_and_transfer(summary, rows, p.root, p.out, p.classifiers, p.attack_names, cancel, p.total,
                                   tally.per_image, p.backbone, p.procedures)
    notes += honest["notes"]
    dicom_outputs = p.dicom.finish(p.out, rows, notes) if p.dicom is not None else []
    # 4e. the files
    seconds = time.perf_counter() - t_start
    outputs = _write_tables(p, tally, summary, rows, notes, honest, dicom_outputs, seconds)
    adv_dir = p.out / ADVERSARIAL_DIR
    return EvaluationResult(out_dir=p.out, summary=summary, rows=rows, outputs=outputs, notes=notes, config=p.config,
                            fingerprint=p.fingerprint, attacked=tally.attacked, resumed=tally.resumed,
                            seconds=seconds, adversarial_dir=adv_dir if adv_dir.is_dir() else None,
                            warnings=p.warnings, metrics=p.metrics)


def _fid(p: Plan, tally: _Tally, rows, notes: list[str], cancel: CancelToken) -> dict:
    if p.metrics == "paper":
        return {}
    try:
        return fid_glue.compute_fid(rows, p.root, p.out, p.classifier_names, p.attack_names, p.device, notes,
                                    cancel, tally.report)
    except Cancelled:
        raise Cancelled(f"evaluation cancelled while computing FID; all {p.total} result(s) are kept in "
                        f"{tally.per_image} — run the same command again to write the tables") from None


def _row_notes(p: Plan, tally: _Tally, rows) -> list[str]:
    """Notes on errors, images of an unknown class and infinite PSNR."""
    notes = []
    n_errors = sum(1 for r in rows if r.get("error"))
    if n_errors:
        notes.append(f"{n_errors} job(s) ended in an error (see the error column of {PER_IMAGE_FILE}); "
                     "they count as not successful")
    for c in p.classifier_names:
        if tally.skipped_label.get(c):
            notes.append(f"{len(tally.skipped_label[c])} image(s) have a class folder that {c} does not know "
                         f"({', '.join(p.classes_of(c))}); they were not attacked")
    if any(r.get("success") and r.get("psnr") is None for r in rows):
        notes.append("PSNR is infinite for identical images; those are left out of the PSNR mean")
    return notes


def _write_tables(p: Plan, tally: _Tally, summary, rows, notes, honest, dicom_outputs, seconds: float) -> list:
    """4e. ``summary.md/.csv/.json``, the oracle and transfer tables and the report; their records."""
    from p2p_desktop.hashing import sha256_bytes, sha256_file
    from p2p_desktop.jsonsafe import finite_json

    header = {"dataset": str(p.root), "images": len(p.items), "limit": p.limit, "seed": p.seed, "device": p.device,
              "metrics": p.metrics, "warnings": p.warnings}
    summary_json = {"summary": summary, "columns": COLUMN_HELP, "notes": notes, "config": p.config,
                    "fingerprint": p.fingerprint, "dataset": str(p.root.resolve()), "per_image": PER_IMAGE_FILE,
                    "adversarial_dir": ADVERSARIAL_DIR, "seconds_this_run": round(seconds, 3),
                    "metrics": metric_protocol(p.metrics),
                    "procedures": {a: d["label"] for a, d in p.procedures.items()}, "warnings": p.warnings,
                    "transfer": honest["transfer"]}
    outputs = [{"kind": "per-image-csv", "path": str(tally.per_image), "sha256": sha256_file(tally.per_image)}]
    outputs += dicom_outputs
    summary_json["outputs"] = list(outputs)  # the files written before it (per-image table, DICOMs)
    for kind, data in (("summary-md", (summary_markdown(summary, notes, header) + honest["markdown"]).encode()),
                       ("summary-csv", summary_csv(summary).encode()),
                       ("summary-json", json.dumps(finite_json(summary_json), indent=2, default=str,
                                                   allow_nan=False).encode()),
                       *honest["outputs"]):
        path = replace_file(p.out / (SUMMARY_FILES.get(kind) or honest["paths"][kind]), data)
        outputs.append({"kind": kind, "path": str(path), "sha256": sha256_bytes(data)})
    if p.report_formats:
        outputs += write_batch_report(p.out, p.root, summary, rows, outputs, notes, p.report_formats, {
            **{k: v for k, v in header.items() if k != "warnings"},
            "metric protocol": METRIC_PROTOCOL_TEXT[p.metrics],
            "FID": FID_TEXT[p.metrics],
            "attacks": ", ".join(p.procedures[a]["label"] for a in p.attack_names),
            "classifiers": ", ".join(p.classifier_names),
            "backbone": (p.config["backbone"] or {}).get("name"), "fingerprint": p.fingerprint},
            extra_tables=[honest["transfer_table"]])
    return outputs


# -- 5. the audit record of a run that did not finish -----------------------------------------------------
def _record_unfinished(p: Plan, tally: _Tally, exc: BaseException, command: str) -> None:
    """5'. Record a cancelled or failed run with what it keeps (a failing append is only logged)."""
    from p2p_desktop.hashing import sha256_file

    status = "cancelled" if isinstance(exc, (Cancelled, KeyboardInterrupt)) else "failed"
    outputs = []
    if tally.per_image.is_file():  # the finished rows stay: a run of the same settings resumes from them
        outputs.append({"kind": "per-image-csv", "path": str(tally.per_image), "sha256": sha256_file(tally.per_image)})
    try:
        record_evaluation(p, outputs, status=status, counts=tally.counts(), command=command,
                          reason=" ".join(str(exc).split())[:300] or type(exc).__name__)
    except Exception as audit_exc:  # noqa: BLE001 - never hide the cancel or failure itself
        log.warning("the %s evaluation could not be audited: %s", status, audit_exc)
