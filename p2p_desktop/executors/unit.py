"""One (image, classifier, attack) job run where the models live (a worker), returning the row
exactly as the serial evaluate loop writes it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from p2p_desktop.errors import Cancelled, InputError
from p2p_desktop.executors import Unit, UnitResult

log = logging.getLogger(__name__)


def run_unit(unit: Unit, image_file: Path, classifier, attack, backbone, worker: str = "") -> UnitResult:
    """Load the image from ``image_file``, skip it when misclassified, attack it, build the row."""
    from p2p_desktop.io import load_study
    from p2p_desktop.io.encode import encode_png

    try:
        study = load_study(image_file, label=unit.label)
    except InputError as exc:
        row = {"image": unit.image_id, "label": unit.label or "", "classifier": unit.classifier,
               "attack": unit.attack, "error": f"cannot load the image: {exc}"}
        return UnitResult(unit, row, worker=worker)
    clean_pred, error = clean_verdict(classifier, study.image)
    if error is not None:
        return UnitResult(unit, {"image": unit.image_id, "label": unit.label, "classifier": unit.classifier,
                                 "attack": unit.attack, "procedure": unit.procedure, "error": error}, worker=worker)
    if clean_pred != unit.label:
        return UnitResult(unit, None, skipped="misclassified", worker=worker)
    row: dict[str, Any] = {"image": unit.image_id, "label": unit.label, "classifier": unit.classifier,
                           "attack": unit.attack, "clean_pred": clean_pred, "procedure": unit.procedure}
    png = None
    res = attack_into_row(row, study, classifier, attack, backbone, unit.label,
                          what=f"{unit.classifier} × {unit.attack}: {unit.image_id}")
    if res is not None and res.success:
        png = encode_png(res.adversarial, bits=study.bits_stored)
    return UnitResult(unit, row, png=png, attacked=True, worker=worker)


def clean_verdict(classifier, image) -> tuple[str | None, str | None]:
    """``(label, None)``: the classifier's verdict on the clean image; ``(None, error)`` when it
    cannot give one (non-finite logits): the job's row is an error, never a class."""
    try:
        return classifier.predict(image)[0], None
    except InputError as exc:
        return None, f"cannot classify the clean image: {' '.join(str(exc).split())[:300]}"


def attack_into_row(row: dict[str, Any], study, classifier, attack, backbone, true_label, *, what: str,
                    on_step=None, cancel=None, reference=None):
    """Run one job and fill its row (the verdict and metrics, or the error): the one place both the
    serial evaluate loop and a worker build a row. Returns the result, or None when the attack failed."""
    from p2p_desktop.attacks.runner import run_attack

    try:
        res = run_attack(study, classifier, attack, backbone=backbone, on_step=on_step, cancel=cancel,
                         true_label=true_label, reference=reference)
    except (Cancelled, KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - one image never stops the batch
        text = " ".join(str(exc).split())[:300]
        # bad input (a broken model, an image it cannot take) is its one line; a bug keeps its traceback
        log.warning("%s failed: %s", what, text, exc_info=not isinstance(exc, InputError))
        row["error"] = text if isinstance(exc, InputError) else f"{type(exc).__name__}: {text}"
        return None
    from p2p_desktop.metrics import image_metrics

    row.update(adv_pred=res.adversarial_label, success=bool(res.success),
               **{m.key: res.metrics.get(m.key) for m in image_metrics()},
               seconds=round(float(res.seconds), 4), iterations=int(res.iterations))
    return res
