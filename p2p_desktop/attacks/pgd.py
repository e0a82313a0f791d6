"""PGD — Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks" (ICLR 2018).

Iterated gradient steps of size α projected onto the ε-ball around x (L∞ or L2), with an
optional uniform random start. Defaults: ε = 0.05 (P2P paper's baseline budget, [0,1] units),
α = 0.01, 10 steps, random start. Untargeted ascends the true-class cross-entropy; targeted
descends the target's. Input/output: (1, C, H, W) in [0,1].
"""

from __future__ import annotations

from dataclasses import dataclass

from p2p_desktop.attacks.base import Attack, AttackConfig, AttackContext, AttackOutput
from p2p_desktop.attacks.norms import NORMS, check_budget, normalise_step, project
from p2p_desktop.config import param
from p2p_desktop.errors import InputError

__all__ = ["PGD", "PGDConfig"]


@dataclass(frozen=True)
class PGDConfig(AttackConfig):
    """Parameters of PGD: budget ε, step α, iterations, norm, random start and early stop."""

    eps: float = param(0.05, help="Perturbation budget ε in [0,1] pixel units (L∞: per pixel, at most 1; "
                       "L2: Euclidean norm over the whole image).", min=0.0, min_exclusive=True)
    alpha: float = param(0.01, help="Step size α per iteration, same units as ε.", min=0.0,
                         min_exclusive=True)
    steps: int = param(10, help="Number of PGD iterations.", min=1, max=10000)
    norm: str = param("linf", help="Distance measure of the budget: linf or l2.", choices=NORMS)
    random_start: bool = param(True, help="Start from a uniformly random point inside the ε-ball.")
    early_stop: bool = param(False, help="Stop at the first iteration whose image is adversarial.")

    def validate(self) -> None:
        check_budget(self.eps, self.norm, "pgd")
        if self.alpha > self.eps * 10 and self.norm == "linf":
            raise InputError(f"pgd.alpha: step {self.alpha} is more than 10× ε={self.eps}; use a smaller α")


class PGD(Attack):
    """Projected Gradient Descent: iterated gradient steps of size α, projected back into the ε-ball."""

    name = "pgd"
    Config = PGDConfig
    summary = "Projected Gradient Descent: iterated, projected steps (L∞ or L2), random start."

    def run(self, x, ctx: AttackContext) -> AttackOutput:
        import torch
        import torch.nn.functional as F

        cfg: PGDConfig = self.config
        label = ctx.target if ctx.target is not None else ctx.label
        y = torch.tensor([label], device=x.device)
        direction = -1.0 if ctx.target is not None else 1.0

        # 1. start point: x, or a uniform point in the ε-ball (drawn from the seeded generator)
        delta = torch.zeros_like(x)
        if cfg.random_start:
            noise = torch.rand(x.shape, generator=ctx.generator, dtype=x.dtype).to(x.device) * 2 - 1
            if cfg.norm == "linf":
                delta = noise * cfg.eps
            else:
                delta = project(noise, "l2", cfg.eps * float(torch.rand((), generator=ctx.generator)))
            delta = (x + delta).clamp(0, 1) - x

        adv = (x + delta).detach()
        for i in range(1, cfg.steps + 1):
            # 2. gradient step on the loss, then 3. projection onto the ball and the image range
            adv.requires_grad_(True)
            logits = ctx.classifier.logits(adv)
            loss = F.cross_entropy(logits, y)
            (grad,) = torch.autograd.grad(loss, adv)
            with torch.no_grad():
                adv = adv + direction * cfg.alpha * normalise_step(grad, cfg.norm)
                adv = (x + project(adv - x, cfg.norm, cfg.eps)).clamp(0.0, 1.0)
                probs = ctx.classifier.probs(adv)[0]
            success = ctx.is_adversarial(int(probs.argmax()))
            ctx.step(i, cfg.steps, float(loss.detach()), probs, success=success)
            if success and cfg.early_stop:
                return AttackOutput(adversarial=adv.detach(), iterations=i)
        return AttackOutput(adversarial=adv.detach(), iterations=cfg.steps)
