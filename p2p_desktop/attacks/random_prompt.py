"""``random-prompt``: a control for Prompt2Perturb — P2P's pipeline with the text parameters moved
in random directions instead of learned ones.

P2P: Medghalchi et al., "Prompt2Perturb (P2P): Text-Guided Diffusion-Based Adversarial Attacks on
Breast Ultrasound Images", CVPR 2025 (arXiv 2412.09910).

If P2P's success came from its optimisation, a change of the text parameters of the same size in
a random direction should rarely do as well. Each of ``steps`` draws (P2P's iteration budget)
takes a fresh Gaussian direction over exactly the parameters P2P learns (the whole CLIP text
encoder and the new class token, or only the prompt's token embeddings), scales it to the L2
norm of P2P's learned change, and runs P2P's candidate step once (a timestep t ~ U{0..t_max−1},
fresh noise, one UNet call, ẑ0 decoded, judged as written); no gradient is taken. The best
candidate is kept by P2P's own selection rule (and early stop). The pipeline is P2P's own code
(:class:`p2p_desktop.attacks.p2p.Session`), not a copy.

The norm: when the caller ran P2P on the same image first (``evaluate --attacks p2p,random-prompt``
does), the norm of that run's learned change (its ``parameter_change``) and at most its number of
iterations; otherwise ``norm`` (default 13: P2P ``fast`` on the demo backbone learns a change of
about 13, measured on two held-out phantoms with demo-squeezenet1_1). ``info.norm_source`` says
which. The optimiser settings of P2P's config (lr, betas, weight decay, accumulation) are unused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from p2p_desktop.attacks import _diffusion as D
from p2p_desktop.attacks.base import AttackContext, AttackOutput
from p2p_desktop.attacks.p2p import FAST, PAPER, P2PConfig, Selection, Session
from p2p_desktop.config import param

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["RandomPromptConfig", "RandomPrompt", "DEFAULT_NORM"]

#: P2P ``fast``'s learned change on the demo backbone (two held-out phantoms: 13.5, 12.8).
DEFAULT_NORM = 13.0


@dataclass(frozen=True)
class RandomPromptConfig(P2PConfig):
    """P2P's settings (the pipeline and its selection), plus the norm of the random change."""

    norm: float = param(DEFAULT_NORM, min=0.0, max=1e9,
                        help="L2 norm of the random change of the text parameters, used when no P2P run on the "
                             "same image is given (evaluate gives one when p2p runs first).")
    match_reference: bool = param(True, help="Use the norm (and at most the iterations) of P2P's learned change "
                                             "on the same image when the caller ran P2P first.")


class RandomPrompt(D.DiffusionAttack):
    """Control: P2P's pipeline with random text-parameter changes of P2P's norm, no gradient."""

    name = "random-prompt"
    Config = RandomPromptConfig
    summary = "Control for P2P: random text-parameter changes of P2P's norm, best of P2P's budget, no gradient"
    requires_backbone = True
    control = True
    control_for = "p2p"
    control_note = ("random-prompt (control): P2P's pipeline with the text parameters moved in random directions of "
                    "the norm P2P learned on the same image (when p2p ran first on the serial executor; else the "
                    "configured norm), best of at most P2P's iterations, no gradient")
    presets = {"paper": PAPER, "fast": FAST}
    config: RandomPromptConfig

    def _run(self, x: torch.Tensor, ctx: AttackContext, bb) -> AttackOutput:
        import torch

        cfg = self.config
        ref = ctx.reference or {}
        norm, source, budget = float(cfg.norm), "configured norm", int(cfg.steps)
        if cfg.match_reference and ref.get("parameter_change") is not None:
            norm, source = float(ref["parameter_change"]), "P2P's learned change on this image"
            if ref.get("iterations"):
                budget = max(1, min(budget, int(ref["iterations"])))
        s = Session(cfg, x, ctx, bb)
        run_cfg = cfg.replace(steps=budget) if budget != cfg.steps else cfg
        sel = Selection(run_cfg)
        params = s.prompt.trainable
        start = [p.detach().clone() for p in params]
        it = 0
        with torch.no_grad():
            for it in range(1, budget + 1):
                dirs = [torch.randn(p.shape, generator=s.gen) for p in start]
                total = float(torch.sqrt(sum(d.double().pow(2).sum() for d in dirs)))
                scale = norm / total if total > 0 else 0.0
                for p, p0, d in zip(params, start, dirs):
                    p.copy_(p0 + (d * scale).to(device=p0.device, dtype=p0.dtype))
                c = s.candidates()
                if sel.judge_and_report(s, c, it):
                    break
        info = s.info(sel)
        info.update(control=True, control_for="p2p", norm=norm, norm_source=source, draws=it,
                    gradient="none (random directions)")
        return s.output(sel, it, info)
