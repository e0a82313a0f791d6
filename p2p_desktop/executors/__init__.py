"""Where the jobs of ``evaluate`` run: in this process (serial) or on a Ray cluster.

A job is one (image, classifier, attack) unit. An executor takes the units still to do and yields
each finished one as it arrives; the driver (:func:`p2p_desktop.jobs.evaluate.evaluate`) writes its
row to ``per_image.csv`` at once, so a study resumes across executors and across a crash of the
driver. The serial executor is the evaluate loop itself (``executor=None``); :class:`RayExecutor`
(in :mod:`p2p_desktop.executors.ray_executor`, imported only when asked for) runs the units on
actors that load the backbone and classifiers once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from p2p_desktop.errors import InputError

__all__ = ["Unit", "UnitResult", "Executor", "ModelSpec", "make_executor", "EXECUTORS"]

EXECUTORS = ("serial", "ray")


@dataclass(frozen=True)
class Unit:
    """One job: attack ``image`` (a file of the dataset) on ``classifier`` with ``attack``."""

    image_id: str  # path relative to the dataset root (the row's key)
    path: str  # the file on the driver's disk
    label: str | None
    classifier: str
    attack: str
    procedure: str  # the procedure label written in the row


@dataclass
class UnitResult:
    """What one finished unit gives back: its CSV row, the adversarial PNG, or why it was skipped."""

    unit: Unit
    row: dict[str, Any] | None  # None when the image was skipped (misclassified)
    png: bytes | None = None  # the adversarial image when the attack succeeded
    skipped: str | None = None  # "misclassified"
    attacked: bool = False
    worker: str = ""  # which worker produced it (for logs and the fault tests)


@dataclass(frozen=True)
class ModelSpec:
    """What every worker loads once, with the SHA-256 the driver computed for each model."""

    classifiers: tuple[tuple[str, str], ...]  # (spec given by the user, sha256 of its weights)
    backbone: str | None  # backbone spec (None: no diffusion attack)
    backbone_sha256: str | None
    backbone_dtype: Any
    attacks: tuple[Any, ...]  # the attack objects (configs resolved by the driver)
    device: str


class Executor(Protocol):
    """Where units run: takes the units still to do and yields each result as it finishes."""

    name: str

    def run(self, spec: ModelSpec, units: Sequence[Unit], cancel) -> Iterator[UnitResult]:
        """Yield a :class:`UnitResult` per unit as they finish (any order); stop cleanly when closed."""


def make_executor(name: str | None, *, address: str | None = None, workers: int | None = None,
                  gpus_per_worker: float | None = None) -> Executor | None:
    """The executor named on the command line (``None`` for serial); bad settings raise InputError."""
    name = (name or "serial").strip().lower()
    if name not in EXECUTORS:
        raise InputError(f"--executor {name!r}: choose one of {', '.join(EXECUTORS)}")
    if workers is not None and int(workers) < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    if gpus_per_worker is not None and not (0 <= float(gpus_per_worker) <= 64):
        raise InputError(f"--gpus-per-worker must be between 0 and 64, got {gpus_per_worker}")
    if name == "serial":
        extra = [f for f, v in (("--ray-address", address), ("--workers", workers),
                                ("--gpus-per-worker", gpus_per_worker)) if v is not None]
        if extra:
            raise InputError(f"{', '.join(extra)} only apply to --executor ray")
        return None
    if getattr(sys, "frozen", False):
        raise InputError("--executor ray is not available in the offline bundle (Ray is not part of it); "
                         "use --executor serial, or run evaluate from a source install with the 'cluster' extra")
    from p2p_desktop.executors.ray_executor import RayExecutor

    return RayExecutor(address=address, workers=workers, gpus_per_worker=float(gpus_per_worker or 0.0))


def run_elsewhere(executor: Executor, image_ids, items, loaded, attack_objs, procedures, done_keys, clf_specs,
                  backbone_spec, bb, device: str, cancel) -> Iterator[tuple[str, Any]]:
    """The driver's side of evaluate on another executor: the units not yet in ``per_image.csv``,
    dispatched; yields ``("skip_label", (classifier, image))`` for images whose label the classifier
    does not know, then ``("result", UnitResult)`` per finished unit, each key at most once."""
    from p2p_desktop.attacks.procedure import backbone_dtype
    from p2p_desktop.hashing import sha256_file

    units: list[Unit] = []
    for image_id, item in zip(image_ids, items):
        for clf in loaded:
            todo = [a for a in attack_objs if (image_id, clf.name, a.name) not in done_keys]
            if not todo:
                continue
            if item.label not in clf.classes:
                for _ in todo:
                    yield "skip_label", (clf.name, image_id)
                continue
            units += [Unit(image_id, str(item.path), item.label, clf.name, a.name, procedures[a.name]["label"])
                      for a in todo]
    spec = ModelSpec(
        classifiers=tuple((given, c.card.sha256 or sha256_file(c.card.weights_path))
                          for given, c in zip(clf_specs, loaded)),
        backbone=None if bb is None else (backbone_spec or "demo"),
        backbone_sha256=None if bb is None else bb.weights_sha256(),
        backbone_dtype=None if bb is None else backbone_dtype(attack_objs),
        attacks=tuple(attack_objs), device=device)
    seen: set[tuple[str, str, str]] = set()
    for res in executor.run(spec, units, cancel):
        key = (res.unit.image_id, res.unit.classifier, res.unit.attack)
        if key in seen:
            continue
        seen.add(key)
        yield "result", res
