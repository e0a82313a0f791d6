"""``p2p-lr0``: a control for Prompt2Perturb — P2P exactly as configured, with a learning rate of 0.

P2P: Medghalchi et al., "Prompt2Perturb (P2P): Text-Guided Diffusion-Based Adversarial Attacks on
Breast Ultrasound Images", CVPR 2025 (arXiv 2412.09910).

Everything P2P does (prompt, new class token, encoding, timesteps, noise, one-step estimate,
decoding, loss and its gradient, selection of the best candidate, early stop, the written-image
check) runs unchanged, but AdamW's learning rate is 0, so the text parameters never move: the
only search left is over P2P's random timesteps and noise. What P2P achieves beyond this control
is what its optimisation of the prompt does. Presets ``paper`` and ``fast`` are P2P's with lr = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2p_desktop.attacks.p2p import FAST, P2P, PAPER, P2PConfig
from p2p_desktop.config import param

__all__ = ["P2PLr0Config", "P2PLr0"]


@dataclass(frozen=True)
class P2PLr0Config(P2PConfig):
    """P2P's config with the learning rate fixed at (about) 0."""

    lr: float = param(0.0, min=0.0, max=1e-8, help="AdamW learning rate: 0 (at most 1e-8) — the control does not "
                                                   "learn; use p2p for a real run.")


class P2PLr0(P2P):
    """Control: P2P with learning rate 0 (the prompt is never changed)."""

    name = "p2p-lr0"
    Config = P2PLr0Config
    summary = "Control for P2P: the same pipeline with learning rate 0 (only timesteps and noise are searched)"
    control = True
    control_for = "p2p"
    control_note = "p2p-lr0 (control): P2P with learning rate 0 — only its timesteps and noise are searched"
    presets = {"paper": {**PAPER, "lr": 0.0}, "fast": {**FAST, "lr": 0.0}}
    config: P2PLr0Config

    def _run(self, x, ctx, bb):
        out = super()._run(x, ctx, bb)
        out.info.update(control=True, control_for="p2p")
        return out
