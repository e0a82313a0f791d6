"""``rerender``: a control for Prompt2Perturb on phantoms — the same breast imaged again.

P2P: Medghalchi et al., "Prompt2Perturb (P2P): Text-Guided Diffusion-Based Adversarial Attacks on
Breast Ultrasound Images", CVPR 2025 (arXiv 2412.09910).

A phantom is fully determined by its generator record (seed, label, size;
:mod:`p2p_desktop.phantoms`), and the simulator can image the same scene again with other probe and
display settings without changing what it shows (the label, the mass, its site and mask). If a
re-acquisition that looks as similar to the source as P2P's adversarial image (SSIM at least as
high) fools the classifier as often, P2P's "attack" is no more than a plausible re-acquisition.

Each of ``steps`` draws picks a strength s ~ U(0, ``strength``] and moves the acquisition settings
that leave the scene's sampling unchanged (gain, dynamic range, grey-map γ, time-gain compensation
and its ripple, speckle smoothing, electronic noise, focus) from the source's toward a fresh random
acquisition by s; ``speckle`` also draws a new speckle realisation. The re-rendering is judged as it
will be written (source geometry, quantised). Candidates whose SSIM to the source (native protocol:
7×7 window, data range 1) is below the floor are discarded. Kept: the fooling candidate with the
highest SSIM; when none fools the classifier, the one with the lowest probability of the true class
(of the target, highest); when none reaches the floor, the source itself (not a success). No
gradient is taken.

The floor is ``ssim_floor`` (default 0.85, about what P2P's successes reach), or, when the caller ran
P2P on the same image first and it succeeded (``evaluate --attacks p2p,rerender``), the SSIM of that
success (``match_reference``). A study that is not a phantom with a generator record is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from p2p_desktop.attacks.base import Attack, AttackConfig, AttackContext, AttackOutput
from p2p_desktop.config import param
from p2p_desktop.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["RerenderConfig", "Rerender", "VARIED_SETTINGS"]

#: Acquisition settings re-drawn: none of them changes the random draws of the scene (the PSF widths,
#: which set the simulation's padding, are kept).
VARIED_SETTINGS = ("gain_db", "dynamic_range_db", "gamma", "tgc_compensation", "tgc_ripple_db", "smoothing",
                   "noise_db", "focus_mm", "focal_zone_mm")
NOT_A_PHANTOM = ("rerender re-renders phantoms only: {name} is not a phantom with a generator record (a PNG listed "
                 "in its dataset's phantom manifest, or a phantom DICOM)")


@dataclass(frozen=True)
class RerenderConfig(AttackConfig):
    """How many re-acquisitions to draw, how different they may be, and the SSIM floor."""

    steps: int = param(45, min=1, max=10000, help="Number of re-renderings drawn (default: P2P fast's budget).")
    ssim_floor: float = param(0.85, min=-1.0, max=1.0,
                              help="Re-renderings with a lower SSIM to the source are discarded (default: about what "
                                   "P2P's successes reach).")
    strength: float = param(1.0, min=0.0, min_exclusive=True, max=1.0,
                            help="Largest step of the acquisition settings from the source's toward a fresh random "
                                 "acquisition (1 = all the way).")
    speckle: bool = param(False, help="Also draw a new speckle realisation (the same scene, another acquisition).")
    match_reference: bool = param(True, help="Use the SSIM of P2P's success on the same image as the floor when "
                                             "the caller ran P2P first.")


def _to_grey(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img, dtype=np.float32)
    return a.mean(axis=2) if a.ndim == 3 else a


class Rerender(Attack):
    """Control: best of N random re-acquisitions of a phantom by its simulator, above an SSIM floor."""

    name = "rerender"
    Config = RerenderConfig
    summary = "Control for P2P (phantoms only): best of N random re-acquisitions by the simulator above an SSIM floor"
    control = True
    control_for = "p2p"
    control_note = ("rerender (control): best of N random re-acquisitions of the same phantom by the simulator, at "
                    "SSIM no lower than P2P's success on that image (when p2p ran first on the serial executor; "
                    "else ssim_floor); a successful re-acquisition keeps the finding by construction")
    requires_phantom = True  # runs only on phantoms with a generator record
    config: RerenderConfig

    def run(self, x: torch.Tensor, ctx: AttackContext) -> AttackOutput:
        import torch

        from p2p_desktop.metrics import ssim
        from p2p_desktop.phantoms import generate_phantom
        from p2p_desktop.phantoms.oracle import phantom_record
        from p2p_desktop.phantoms.simulate import sample_imaging

        cfg = self.config
        study = ctx.study
        record = phantom_record(study.path) if study is not None and getattr(study, "n_frames", 1) == 1 else None
        if record is None:
            name = getattr(getattr(study, "path", None), "name", None) or "this input"
            raise InputError(NOT_A_PHANTOM.format(name=name))
        source = generate_phantom(record.seed, record.label, record.size)
        original = np.asarray(study.image, dtype=np.float32)
        if source.image.shape != original.shape[:2] or float(
                np.abs(source.image - _to_grey(original)).max()) > 1.0 / 255 + 1e-3:
            raise InputError(f"rerender: {study.path.name} is not what its phantom record (seed {record.seed}, "
                             f"{record.label}, {record.size} px) renders (edited or resized?); nothing was run")
        look = source.params["imaging"]
        depth = float(source.params["field_of_view_mm"][0])
        floor, floor_source = float(cfg.ssim_floor), "ssim_floor"
        ref = ctx.reference or {}
        if cfg.match_reference and ref.get("success") and ref.get("ssim") is not None:
            floor, floor_source = float(ref["ssim"]), "SSIM of P2P's success on this image"

        def written(img: np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
            t = t.expand(-1, int(x.shape[1]), -1, -1).to(x.device)
            return t, (ctx.written(t) if ctx.written is not None else t)

        best: dict[str, Any] | None = None
        fallback: dict[str, Any] | None = None
        kept = 0
        for it in range(1, cfg.steps + 1):
            rng = np.random.default_rng([cfg.seed, 7, it])
            s = float(cfg.strength * (1.0 - rng.random()))  # in (0, strength]
            fresh = sample_imaging(rng, depth)
            appearance: dict[str, Any] = {}
            for k in VARIED_SETTINGS:
                a, b = look[k], fresh[k]
                appearance[k] = ([float(u + s * (v - u)) for u, v in zip(a, b)] if isinstance(a, list)
                                 else float(a + s * (b - a)))
            if cfg.speckle:
                appearance["speckle_seed"] = int(rng.integers(0, 2 ** 31 - 1))
            img = generate_phantom(record.seed, record.label, record.size, appearance=appearance).image
            cand, as_written = written(img)
            with torch.no_grad():
                probs = ctx.classifier.probs(as_written)[0].float().cpu()
            arr = as_written[0].permute(1, 2, 0).cpu().numpy()
            sim = float(ssim(original, arr))
            pred = int(probs.argmax())
            fooled = ctx.is_adversarial(pred)
            p_goal = float(probs[ctx.target]) if ctx.target is not None else 1.0 - float(probs[ctx.label])
            entry = {"image": cand.cpu(), "ssim": sim, "iteration": it, "strength": s, "pred": pred,
                     "probs": probs, "p_goal": p_goal}
            if sim >= floor:
                kept += 1
                if fooled and (best is None or sim > best["ssim"]):
                    best = entry
                elif best is None and (fallback is None or p_goal > fallback["p_goal"]):
                    fallback = entry
            ctx.step(it, cfg.steps, 1.0 - p_goal, probs, success=fooled and sim >= floor, ssim=sim,
                     strength=s, best_ssim=None if best is None else best["ssim"])
        chosen = best or fallback
        info: dict[str, Any] = {
            "success": best is not None, "control": True, "control_for": "p2p",
            "phantom": {"seed": record.seed, "label": record.label, "size": record.size, "record": record.source},
            "ssim_floor": floor, "ssim_floor_source": floor_source, "draws": cfg.steps,
            "draws_above_floor": kept, "speckle": cfg.speckle, "varied": list(VARIED_SETTINGS),
            "gradient": "none (re-acquisitions by the simulator)", "output": "direct",
        }
        if chosen is None:
            info.update(chosen=None, note=f"no re-rendering reached the SSIM floor {floor:.3f}; the source is returned")
            return AttackOutput(adversarial=x.detach().float().cpu().clone(), iterations=cfg.steps, info=info)
        info.update(chosen={"iteration": chosen["iteration"], "strength": round(chosen["strength"], 4),
                            "ssim": chosen["ssim"]},
                    predicted=ctx.classes[chosen["pred"]],
                    probs={c: float(p) for c, p in zip(ctx.classes, chosen["probs"].tolist())})
        return AttackOutput(adversarial=chosen["image"], iterations=cfg.steps, info=info)
