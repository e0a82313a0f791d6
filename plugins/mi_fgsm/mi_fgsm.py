"""MI-FGSM — Dong et al., "Boosting Adversarial Attacks with Momentum" (CVPR 2018). Example plugin.

L∞ attack: g ← μ·g + ∇/‖∇‖₁ ; x ← Π_ε(x + α·sign(g)). Defaults: ε = 0.05 ([0,1] units),
α = ε/steps, 10 steps, decay μ = 1.0. Input/output: (1, C, H, W) in [0,1].
"""

from __future__ import annotations

from dataclasses import dataclass

from p2p_desktop.attacks.base import Attack, AttackConfig, AttackContext, AttackOutput
from p2p_desktop.config import param


@dataclass(frozen=True)
class MIFGSMConfig(AttackConfig):
    """MI-FGSM's settings: the L∞ budget, the number of steps and the momentum decay."""

    eps: float = param(0.05, help="L∞ budget ε in [0,1] pixel units.", min=0.0, max=1.0, min_exclusive=True)
    steps: int = param(10, help="Number of iterations.", min=1, max=1000)
    decay: float = param(1.0, help="Momentum decay factor μ.", min=0.0, max=10.0)


class MIFGSM(Attack):
    """Momentum Iterative FGSM: sign steps along an L1-normalised gradient with momentum, projected to ε."""

    name = "mi-fgsm"
    Config = MIFGSMConfig
    summary = "Momentum Iterative FGSM (L∞)"

    def run(self, x, ctx: AttackContext) -> AttackOutput:
        import torch
        import torch.nn.functional as F

        cfg = self.config
        alpha = cfg.eps / cfg.steps
        label = ctx.target if ctx.target is not None else ctx.label
        y = torch.tensor([label], device=x.device)
        sign = -1.0 if ctx.target is not None else 1.0
        momentum = torch.zeros_like(x)
        adv = x.detach().clone()
        for i in range(1, cfg.steps + 1):
            adv.requires_grad_(True)
            loss = F.cross_entropy(ctx.classifier.logits(adv), y)
            (grad,) = torch.autograd.grad(loss, adv)
            with torch.no_grad():
                momentum = cfg.decay * momentum + grad / grad.abs().mean().clamp_min(1e-12)
                adv = adv + sign * alpha * momentum.sign()
                adv = (x + (adv - x).clamp(-cfg.eps, cfg.eps)).clamp(0, 1)
                probs = ctx.classifier.probs(adv)[0]
            ctx.step(i, cfg.steps, float(loss.detach()), probs, success=ctx.is_adversarial(int(probs.argmax())))
        return AttackOutput(adversarial=adv.detach(), iterations=cfg.steps)
