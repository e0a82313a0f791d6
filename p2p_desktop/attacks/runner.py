"""Run one attack on one study and judge it on the image as it will be written.

The same function serves the CLI, the GUI worker, batch evaluation and re-runs::

    result = run_attack(study, classifier, attack, backbone=None, on_step=print, cancel=token)

Steps:
1. seed torch and a generator from ``config.seed`` (same seed + same device -> same output);
2. classify the clean image; the true label is the study's class folder when known, else the
   clean prediction;
3. ``attack.run`` on the image in the source's geometry;
4. map the output back to the source geometry (an attack working at another resolution
   contributes its perturbation, upsampled) and quantise it to the source's bit depth;
5. classify that written image again: ``success`` is judged there; the attack's internal
   verdict is kept as ``success_internal`` when they differ;
6. metrics (SSIM, PSNR, L2, L∞, LPIPS-or-why-not).
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from p2p_desktop.attacks._diffusion import to_source_geometry
from p2p_desktop.attacks.base import Attack, AttackContext, StepCallback, StepEvent
from p2p_desktop.attacks.procedure import describe, metric_protocol
from p2p_desktop.cancel import CancelToken
from p2p_desktop.errors import InputError, ModelError, OutOfMemory
from p2p_desktop.io.study import Study
from p2p_desktop.jsonsafe import jsonable
from p2p_desktop.metrics import compute_metrics
from p2p_desktop.models.classifier import Classifier, NonFiniteLogits, to_numpy, to_tensor

NON_FINITE_ATTACKED = ("the classifier returned non-finite probabilities (NaN or Inf) for the attacked image; "
                       "nothing was written")

__all__ = ["AttackResult", "run_attack", "software_versions", "is_out_of_memory"]


@dataclass
class AttackResult:
    """Config + outcome of one run; arrays are (H, W, C) float32 in [0,1] (perturbation signed)."""

    attack: str
    config: dict[str, Any]
    classes: tuple[str, ...]
    true_label: str
    original_label: str
    original_probs: dict[str, float]
    adversarial_label: str
    adversarial_probs: dict[str, float]
    success: bool
    internal_label: str
    internal_probs: dict[str, float]
    success_internal: bool
    original: np.ndarray
    adversarial: np.ndarray
    perturbation: np.ndarray
    metrics: dict[str, Any]
    notes: list[str]
    history: list[StepEvent]
    info: dict[str, Any]
    seconds: float
    iterations: int
    seed: int
    device: str
    classifier: dict[str, Any]
    backbone: dict[str, Any] | None = None
    study_path: str = ""
    frame: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    procedure: dict[str, Any] = field(default_factory=dict)  # preset, resolution, output mode, precision

    @property
    def target(self) -> str | None:
        return self.config.get("target")

    @property
    def outcome(self) -> str:
        """The run's outcome in words, the one wording every view of the window uses:
        ``success``, ``no success: class unchanged`` or ``no success: not the target class``."""
        if self.success:
            return "success"
        if self.adversarial_label == self.original_label:
            return "no success: class unchanged"
        return "no success: not the target class" if self.target else "no success"

    def summary(self) -> dict[str, Any]:
        """JSON-ready description without the image arrays (per the CLI ``attack`` contract)."""
        return {
            "attack": self.attack,
            "procedure": self.procedure,
            "config": self.config,
            "classifier": self.classifier,
            "backbone": self.backbone,
            "true_label": self.true_label,
            "original": {"label": self.original_label, "probs": self.original_probs},
            "adversarial": {"label": self.adversarial_label, "probs": self.adversarial_probs},
            "success": self.success,
            "internal": {"label": self.internal_label, "probs": self.internal_probs,
                         "success": self.success_internal},
            "metrics": self.metrics,
            "timing": {"seconds": round(self.seconds, 4), "iterations": self.iterations},
            "seed": self.seed,
            "device": self.device,
            "info": jsonable(self.info),
            "notes": list(self.notes),
            "frame": self.frame,
            "versions": self.versions,
            "metric_protocol": metric_protocol("native"),
        }



def software_versions() -> dict[str, str]:
    """Versions of p2p-desktop, Python and the installed core libraries, as recorded with a run."""
    import importlib.metadata as md

    from p2p_desktop import __version__

    out = {"p2p-desktop": __version__, "python": platform.python_version()}
    for pkg in ("torch", "torchvision", "diffusers", "transformers", "pydicom", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/MPS out-of-memory errors and host MemoryError."""
    import torch

    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_attack(
    study: Study,
    classifier: Classifier,
    attack: Attack,
    *,
    backbone: Any = None,
    on_step: StepCallback | None = None,
    cancel: CancelToken | None = None,
    true_label: str | None = None,
    reference: dict[str, Any] | None = None,
) -> AttackResult:
    """Run ``attack`` on ``study``; raises ``Cancelled`` (nothing produced) when cancelled.

    ``reference``: for a control, what the attack it stands against found on this study (its
    output info; see :attr:`AttackContext.reference`)."""
    import torch

    cfg = attack.config
    cancel = cancel or CancelToken()
    if attack.requires_backbone and backbone is None:
        raise InputError(f"attack {attack.name!r} needs a diffusion backbone (--backbone demo or a folder)")
    device = str(classifier.device)
    classes = classifier.classes

    # 1. seeds
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)

    # 2. the clean verdict
    x = to_tensor(study.image).to(classifier.device)
    with torch.no_grad():
        p0 = classifier.probs(x)[0].float().cpu().numpy()
    orig_idx = int(p0.argmax())
    label_name = true_label or (study.label if study.label in classes else None) or classes[orig_idx]
    if label_name not in classes:
        raise InputError(f"true label {label_name!r} is not a class of {classifier.name} ({', '.join(classes)})")
    label_idx = classes.index(label_name)
    target_idx = None
    if cfg.target:
        target_idx = classifier.class_index(cfg.target)
        if target_idx == label_idx:
            raise InputError(f"target class {cfg.target!r} is the image's own class; choose another target")
    notes: list[str] = []
    from p2p_desktop.input_check import input_warnings  # an input unlike the training data: say so

    notes += input_warnings(study, getattr(classifier, "card", None))
    if orig_idx != label_idx:
        notes.append(f"the clean image is already misclassified ({classes[orig_idx]} instead of {label_name})")

    def written(adv, output: str = "residual"):  # the image as step 4 below will write it
        with torch.no_grad():
            src = to_source_geometry(adv.detach().to(x.device, dtype=torch.float32), x, output)
            return to_tensor(study.quantise(to_numpy(src))).to(classifier.device)

    ctx = AttackContext(classifier=classifier, label=label_idx, target=target_idx, device=device,
                        backbone=backbone, on_step=on_step, cancel=cancel, generator=generator,
                        written=written, study=study, reference=reference)

    try:  # a classifier giving NaN/Inf on a moved image: one line about the attacked image
        # 3. the attack (after an out-of-memory error: one retry at lower cost, where one exists)
        cancel.check()
        t0 = time.perf_counter()
        try:
            out = attack.run(x, ctx)
        except BaseException as exc:
            if not is_out_of_memory(exc):
                raise
            _free_memory()
            cheaper = attack.cheaper()
            what = f"{attack.name} ran out of memory on {device}"
            if cheaper is None:
                raise OutOfMemory(f"{what}; free memory (close other jobs), use a smaller model or "
                                  "--device cpu") from None
            changes = {k: v for k, v in cheaper.config.to_dict().items() if cfg.to_dict().get(k) != v}
            notes.append(f"{what}; retried at lower cost with {changes}")
            ctx.history.clear()
            torch.manual_seed(cfg.seed)
            ctx.generator = torch.Generator().manual_seed(cfg.seed)
            attack, cfg = cheaper, cheaper.config
            try:
                out = attack.run(x, ctx)
            except BaseException as exc2:
                if is_out_of_memory(exc2):
                    _free_memory()
                    raise OutOfMemory(f"{what}, also at lower cost {changes}; use --device cpu or a smaller "
                                      "backbone") from None
                raise
        seconds = time.perf_counter() - t0
        cancel.check()

        # 4. back to the source geometry, quantised as it will be written
        with torch.no_grad():
            adv = out.adversarial.detach().to(x.device, dtype=torch.float32)
            if not bool(torch.isfinite(adv).all()):  # never quantise NaN/Inf into an image
                raise ModelError(f"{attack.name} produced non-finite pixel values (NaN or Inf): the classifier or "
                                 "backbone is broken or incomplete; nothing was written")
            p_int = classifier.probs(adv)[0].float().cpu().numpy()
            adv_src = to_source_geometry(adv, x, str(out.info.get("output", "residual")))
        written = study.quantise(to_numpy(adv_src))
        # 5. the verdict on the written image
        with torch.no_grad():
            p1 = classifier.probs(to_tensor(written).to(classifier.device))[0].float().cpu().numpy()
        if not (np.isfinite(p1).all() and np.isfinite(p_int).all()):
            raise ModelError(NON_FINITE_ATTACKED)
    except NonFiniteLogits:
        raise ModelError(NON_FINITE_ATTACKED) from None
    adv_idx, int_idx = int(p1.argmax()), int(p_int.argmax())
    success, success_internal = ctx.is_adversarial(adv_idx), ctx.is_adversarial(int_idx)
    if success != success_internal:
        notes.append("the attack's internal image and the written (resampled, quantised) image disagree: "
                     f"internal {'success' if success_internal else 'failure'}, written "
                     f"{'success' if success else 'failure'}; the written verdict is reported")
    # 6. metrics
    original = study.image.astype(np.float32)
    metrics, metric_notes = compute_metrics(original, written)
    notes += metric_notes
    backbone_id = backbone.identity() if backbone is not None and hasattr(backbone, "identity") else None
    info = dict(out.info)
    # 7. on a phantom: did the attack keep the finding? (label-preservation oracle; None elsewhere)
    from p2p_desktop.phantoms.oracle import study_verdict

    info["label_oracle"] = study_verdict(study, written, success)
    procedure = describe(attack, None, backbone, info=out.info)
    if procedure.get("resolution_warning"):
        notes.insert(0, procedure["resolution_warning"])
    return AttackResult(
        attack=attack.name, config=cfg.to_dict(), classes=tuple(classes), true_label=label_name,
        original_label=classes[orig_idx], original_probs=dict(zip(classes, map(float, p0))),
        adversarial_label=classes[adv_idx], adversarial_probs=dict(zip(classes, map(float, p1))),
        success=success, internal_label=classes[int_idx], internal_probs=dict(zip(classes, map(float, p_int))),
        success_internal=success_internal, original=original, adversarial=written,
        perturbation=(written - original).astype(np.float32), metrics=metrics, notes=notes,
        history=list(ctx.history), info=info, seconds=seconds, iterations=out.iterations,
        seed=cfg.seed, device=device, classifier=classifier.identity(), backbone=backbone_id,
        study_path=str(study.path), frame=study.frame_index, versions=software_versions(),
        procedure=procedure,
    )
