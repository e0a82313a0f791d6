"""Diff-PGD: PGD whose classifier sees a diffusion-purified (SDEdit) image.

Xue et al., "Diffusion-Based Adversarial Sample Generation for Improved Stealthiness and
Controllability", NeurIPS 2023. Distance: L∞ on the pixel perturbation δ (before SDEdit).

Each of ``steps`` iterations: x_pur = SDEdit(clip(x + δ)); L = CE(F(x_pur), y);
δ ← Π_ε(δ + α·sign(∇L)) (targeted: descend CE toward the target). SDEdit runs in the latent
space of the backbone: encode (posterior mean), noise to t = strength·1000 with one FIXED noise
sample, ``ddim_steps`` deterministic DDIM steps to a clean latent with the EMPTY prompt, decode.
``fast``: ∇L is taken at x_pur and applied to δ directly (no backpropagation through the
diffusion); ``full``: backpropagation through encode → UNet steps → decode. Output:
SDEdit(clip(x + δ)) with the final δ.

Defaults (paper's baseline): ε = 16/255, α = 2/255, 10 steps, strength 0.06 (ddim50 with
t = 3, i.e. timestep 60 of 1000), 3 DDIM steps (60 → 40 → 20 → clean).

Shapes: input (1, C, H, W) in [0,1]; output (1, C, R, R) at the backbone's resolution R.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from p2p_desktop.attacks import _diffusion as D
from p2p_desktop.attacks.base import Attack, AttackConfig, AttackContext, AttackOutput
from p2p_desktop.config import param
from p2p_desktop.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["DiffPGDConfig", "DiffPGD"]


@dataclass(frozen=True)
class DiffPGDConfig(AttackConfig):
    """Diff-PGD settings (defaults: the paper's baseline)."""

    eps: float = param(16 / 255, min=0.0, min_exclusive=True, max=1.0,
                       help="L∞ budget of δ in [0,1] pixel units (16/255).")
    alpha: float = param(2 / 255, min=0.0, min_exclusive=True, max=1.0, help="PGD step size (2/255).")
    steps: int = param(10, min=1, max=1000, help="PGD iterations.")
    strength: float = param(0.06, min=0.0, min_exclusive=True, max=1.0,
                            help="SDEdit noise level as a fraction of the 1000-step schedule (0.06 → t = 60).")
    ddim_steps: int = param(3, min=1, max=100, help="DDIM denoising steps from t back to a clean image.")
    variant: str = param("fast", choices=("fast", "full"),
                         help="fast: gradient at the SDEdit output applied to δ; full: backpropagate "
                              "through the diffusion (slower, more memory).")
    prompt: str = param("", advanced=True, help="Text conditioning of SDEdit (paper: none, i.e. empty prompt).")


class DiffPGD(Attack):
    """Diff-PGD (NeurIPS 2023): L∞ PGD through SDEdit on a latent diffusion backbone."""

    name = "diff-pgd"
    Config = DiffPGDConfig
    summary = "Diff-PGD: PGD through SDEdit on a latent diffusion backbone"
    requires_backbone = True
    presets = {"paper": {}, "full": {"variant": "full"}}
    config: DiffPGDConfig

    def run(self, x: "torch.Tensor", ctx: AttackContext) -> AttackOutput:
        import torch
        import torch.nn.functional as F

        cfg = self.config
        bb = ctx.backbone
        if bb is None:
            raise InputError("diff-pgd needs a diffusion backbone (--backbone demo or a Stable Diffusion folder)")
        gen = ctx.generator if ctx.generator is not None else torch.Generator().manual_seed(cfg.seed)
        clf = ctx.classifier
        dev = torch.device(bb.device)
        R = bb.resolution
        T = bb.num_train_timesteps
        t_start = min(T - 1, max(1, int(round(cfg.strength * T))))
        targeted = ctx.target is not None
        y = torch.tensor([ctx.target if targeted else ctx.label], device=clf.device)

        # 1. The image at the backbone's resolution, δ = 0, one fixed noise sample, empty-prompt embedding.
        x_src = x.detach().float().to(dev)
        x_ref = D.resize(x_src, R).clamp(0, 1)
        delta = torch.zeros_like(x_ref)
        f = bb.vae_factor
        noise = torch.randn((1, bb.latent_channels, R // f, R // f), generator=gen).to(dev)
        with torch.no_grad():
            emb = D.text_embeddings(bb, cfg.prompt)

        def purify(img):
            with D.autocast(bb):
                return D.sdedit(bb, img, noise, t_start, cfg.ddim_steps, emb).float()

        for it in range(1, cfg.steps + 1):
            # 2. Purify x + δ and take the classifier's gradient.
            x_in = (x_ref + delta).clamp(0, 1)
            if cfg.variant == "full":
                x_in.requires_grad_(True)
                x_pur = purify(x_in)
                leaf = x_in
            else:
                with torch.no_grad():
                    x_pur = purify(x_in)
                x_pur.requires_grad_(True)
                leaf = x_pur
            logits = clf.logits(D.to_source(x_pur, x_src, x_ref)).float()  # as it will be written
            loss = F.cross_entropy(logits, y)
            (grad,) = torch.autograd.grad(loss, leaf)

            # 3. Signed step on δ, projected onto the L∞ ball and the valid pixel range.
            step = cfg.alpha * grad.sign().to(delta.device)
            delta = delta - step if targeted else delta + step
            delta = delta.clamp(-cfg.eps, cfg.eps)
            delta = (x_ref + delta).clamp(0, 1) - x_ref

            # 4. Report (raises Cancelled on user cancel).
            probs = torch.softmax(logits.detach(), 1)[0]
            success = ctx.is_adversarial(int(probs.argmax()))
            ctx.step(it, cfg.steps, float(loss.detach()), probs, success=success,
                     delta_linf=float(delta.abs().max()))

        # 5. Output: SDEdit(clip(x + δ)) with the final δ.
        with torch.no_grad():
            x_adv = purify((x_ref + delta).clamp(0, 1))
            probs = clf.probs(D.to_source(x_adv, x_src, x_ref)).float()[0]
        pred = int(probs.argmax())
        info: dict[str, Any] = {
            "success": ctx.is_adversarial(pred),
            "predicted": ctx.classes[pred],
            "probs": {c: float(p) for c, p in zip(ctx.classes, probs.tolist())},
            "delta_linf": float(delta.abs().max()),
            "eps": cfg.eps,
            "t_start": t_start,
            "ddim_timesteps": D.ddim_timesteps(t_start, cfg.ddim_steps),
            "variant": cfg.variant,
            "resolution": R,
            "backbone": bb.name,
        }
        return AttackOutput(adversarial=x_adv.detach().cpu(), iterations=cfg.steps, info=info)
