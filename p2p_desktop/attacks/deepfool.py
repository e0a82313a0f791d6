"""DeepFool — Moosavi-Dezfooli et al., "DeepFool: a simple and accurate method to fool deep
neural networks" (CVPR 2016).

Distance measure: L2. Each iteration linearises the classifier at the current image and takes
the smallest step that crosses the nearest decision boundary: for every other class k,
w_k = ∇f_k − ∇f_y and f'_k = f_k − f_y; the step is r = (|f'_k̂| + 1e-4)·w_k̂ / ‖w_k̂‖₂² with
k̂ = argmin_k |f'_k| / ‖w_k‖₂. The steps add up to r_tot and the image is
x' = clip(x + (1 + overshoot)·r_tot, 0, 1). It stops at the first iteration whose image, as it
will be written (source geometry, quantised), is adversarial. Targeted: the only boundary
considered is the one between the target and the best other class. There is no budget:
DeepFool finds a small perturbation, it does not enforce one.

Arguments (``DeepFoolConfig``):
    steps (int): maximum number of iterations. (Default: 50)
    overshoot (float): factor beyond the boundary, applied to the summed step. (Default: 0.02)

Shape:
    - image: (1, C, H, W) in [0, 1]; output: (1, C, H, W) in [0, 1], the same geometry.

Examples::
    >>> attack = DeepFool(steps=50, overshoot=0.02)
    >>> out = attack.run(x, ctx)
"""

from __future__ import annotations

from dataclasses import dataclass

from p2p_desktop.attacks.base import Attack, AttackConfig, AttackContext, AttackOutput
from p2p_desktop.config import param

__all__ = ["DeepFool", "DeepFoolConfig"]


@dataclass(frozen=True)
class DeepFoolConfig(AttackConfig):
    """Parameters of DeepFool: the iteration cap and the overshoot past the boundary."""

    steps: int = param(50, help="Maximum number of DeepFool iterations (it stops once the image is adversarial).",
                       min=1, max=10000)
    overshoot: float = param(0.02, help="How far past the linearised boundary to step: x + (1 + overshoot)·r.",
                             min=0.0, max=1.0)


class DeepFool(Attack):
    """DeepFool (Moosavi-Dezfooli et al.): repeated smallest L2 steps across the nearest linearised
    decision boundary until the image is adversarial; no perturbation budget."""

    name = "deepfool"
    Config = DeepFoolConfig
    summary = "DeepFool: smallest L2 steps across the nearest linearised decision boundary (no budget)."

    def run(self, x, ctx: AttackContext) -> AttackOutput:
        import torch

        cfg: DeepFoolConfig = self.config
        r_tot = torch.zeros_like(x)
        adv = x.detach()
        for i in range(1, cfg.steps + 1):
            # 1. logits and the gradient of each class logit that matters, at the current image
            x_var = adv.clone().requires_grad_(True)
            logits = ctx.classifier.logits(x_var)[0].float()
            if ctx.target is None:  # the paper: boundaries between the true class and each other one
                y, others = ctx.label, [k for k in range(len(ctx.classes)) if k != ctx.label]
            else:  # targeted: only the boundary between the target and the best other class
                y = next(k for k in logits.argsort(descending=True).tolist() if k != ctx.target)
                others = [ctx.target]
            grads = {k: torch.autograd.grad(logits[k], x_var, retain_graph=True)[0] for k in [y] + others}
            # 2. the nearest boundary under the linear model, and the smallest step across it
            with torch.no_grad():
                f = {k: float(logits[k] - logits[y]) for k in others}
                w = {k: grads[k] - grads[y] for k in others}
                dist = {k: abs(f[k]) / (float(w[k].norm()) + 1e-12) for k in others}
                k_hat = min(others, key=dist.get)
                r_tot = r_tot + (abs(f[k_hat]) + 1e-4) * w[k_hat] / (float(w[k_hat].norm()) ** 2 + 1e-12)
                # 3. x' = clip(x + (1 + overshoot)·r_tot), judged as it will be written
                adv = (x + (1.0 + cfg.overshoot) * r_tot).clamp(0.0, 1.0).detach()
                judged = ctx.written(adv) if ctx.written is not None else adv
                probs = ctx.classifier.probs(judged)[0]
            success = ctx.is_adversarial(int(probs.argmax()))
            # loss: the margin of the reference class over the best other one (below 0 once crossed)
            ctx.step(i, cfg.steps, -max(f.values()), probs,
                     success=success, l2=float(((1.0 + cfg.overshoot) * r_tot).norm()))
            if success:
                return AttackOutput(adversarial=adv, iterations=i)
        return AttackOutput(adversarial=adv, iterations=cfg.steps)
