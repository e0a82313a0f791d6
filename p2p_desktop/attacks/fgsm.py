"""FGSM — Goodfellow et al., "Explaining and Harnessing Adversarial Examples" (ICLR 2015).

One gradient step of size ε: x' = clip(x ± ε·sign(∇x CE)) for L∞ (``norm="linf"``, default ε = 0.05
on [0,1] as in the P2P paper's baselines), or x' = clip(x ± ε·∇/‖∇‖₂) for L2. Untargeted ascends the
true-class loss; targeted descends the target-class loss. Input/output: (1, C, H, W) in [0,1].
"""

from __future__ import annotations

from dataclasses import dataclass

from p2p_desktop.attacks.base import Attack, AttackConfig, AttackContext, AttackOutput
from p2p_desktop.attacks.norms import NORMS, check_budget, normalise_step
from p2p_desktop.config import param

__all__ = ["FGSM", "FGSMConfig"]


@dataclass(frozen=True)
class FGSMConfig(AttackConfig):
    """Parameters of FGSM: the budget ε and its norm (linf or l2)."""

    eps: float = param(0.05, help="Perturbation budget ε in [0,1] pixel units (L∞: per pixel, at most 1; "
                       "L2: Euclidean norm over the whole image).", min=0.0, min_exclusive=True)
    norm: str = param("linf", help="Distance measure of the budget: linf or l2.", choices=NORMS)

    def validate(self) -> None:
        check_budget(self.eps, self.norm, "fgsm")


class FGSM(Attack):
    """Fast Gradient Sign Method: one step of size ε along the (normalised) loss gradient."""

    name = "fgsm"
    Config = FGSMConfig
    summary = "Fast Gradient Sign Method: one gradient step of size ε (L∞ or L2)."

    def total_steps(self) -> int:
        return 1

    def run(self, x, ctx: AttackContext) -> AttackOutput:
        import torch
        import torch.nn.functional as F

        cfg: FGSMConfig = self.config
        # 1. gradient of the loss at the clean image
        x_var = x.detach().clone().requires_grad_(True)
        logits = ctx.classifier.logits(x_var)
        label = ctx.target if ctx.target is not None else ctx.label
        loss = F.cross_entropy(logits, torch.tensor([label], device=logits.device))
        (grad,) = torch.autograd.grad(loss, x_var)
        # 2. one step: up the true-class loss (untargeted) or down the target loss (targeted)
        direction = -1.0 if ctx.target is not None else 1.0
        adv = (x + direction * cfg.eps * normalise_step(grad, cfg.norm)).clamp(0.0, 1.0).detach()
        # 3. report
        with torch.no_grad():
            probs = ctx.classifier.probs(adv)[0]
        ctx.step(1, 1, float(loss.detach()), probs, success=ctx.is_adversarial(int(probs.argmax())))
        return AttackOutput(adversarial=adv, iterations=1)
