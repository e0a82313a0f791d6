"""Diff-PGD: PGD whose classifier sees a diffusion-purified (SDEdit) image.

Xue et al., "Diffusion-Based Adversarial Sample Generation for Improved Stealthiness and
Controllability", NeurIPS 2023. Distance: L∞ on the pixel perturbation δ (before SDEdit).

Each of ``steps`` iterations: x_pur = SDEdit(clip(x + δ)); L = CE(F(x_pur), y);
δ ← Π_ε(δ + α·sign(∇L)) (targeted: descend CE toward the target). SDEdit runs in the latent
space of the backbone: encode (posterior mean), noise to t = strength·1000 with FRESH noise on
every call (drawn from the attack's seeded generator, so runs stay reproducible; ``noise=fixed``
keeps one sample for the whole run), then deterministic DDIM through every timestep down to
t = 0 with the EMPTY prompt, decode — as the authors run it. ``fast``: ∇L is taken at x_pur and
applied to δ directly (no backpropagation through the diffusion); ``full``: backpropagation
through encode → UNet steps → decode, from a random start δ ~ U[−ε, ε]. Output: a final,
freshly noised SDEdit(clip(x + δ)) with the final δ.

Defaults (paper's baseline): ε = 16/255, α = 2/255, 10 steps, strength 0.06 (ddim50 with
t = 3, i.e. timestep 60 of 1000), 3 DDIM intervals: UNet calls at 60, 40, 20 and 0.

Shapes: input (1, C, H, W) in [0,1]; output (1, C, R, R) at the working resolution R
(``resolution``, default the backbone's native size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from p2p_desktop.attacks import _diffusion as D
from p2p_desktop.attacks.base import AttackConfig, AttackContext, AttackOutput
from p2p_desktop.config import param

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
    noise: str = param("fresh", choices=("fresh", "fixed"), advanced=True,
                       help="SDEdit noise: a fresh seeded sample on every call (the authors), or one fixed "
                            "sample for the whole run (a deterministic purifier).")
    random_start: str = param("auto", choices=("auto", "on", "off"), advanced=True,
                              help="Start δ uniformly in [−ε, ε] (auto: on for the full variant, as the authors).")
    preset: str = param("default", choices=("default", "paper", "full", "custom"),
                        help="Which preset these settings came from (recorded in the report).")
    resolution: int = D.resolution_param()
    output: str = param("residual", choices=("residual", "decoded"),
                        help="What is written: the purified image resized to the source geometry (decoded), or "
                             "the source plus the upsampled change (residual).")
    dtype: str = D.dtype_param()
    low_memory: bool = D.low_memory_param()

    def validate(self) -> None:
        D.check_resolution("diff-pgd", self.resolution)


class DiffPGD(D.DiffusionAttack):
    """Diff-PGD (NeurIPS 2023): L∞ PGD through SDEdit on a latent diffusion backbone."""

    name = "diff-pgd"
    Config = DiffPGDConfig
    summary = "Diff-PGD: PGD through SDEdit on a latent diffusion backbone"
    requires_backbone = True
    presets = {"paper": {"preset": "paper", "resolution": 224, "output": "decoded", "dtype": "fp32"},
               "full": {"preset": "full", "variant": "full", "resolution": 224, "output": "decoded",
                        "dtype": "fp32"}}
    config: DiffPGDConfig

    def _run(self, x: torch.Tensor, ctx: AttackContext, bb) -> AttackOutput:
        import torch
        import torch.nn.functional as F

        cfg = self.config
        gen = ctx.generator if ctx.generator is not None else torch.Generator().manual_seed(cfg.seed)
        clf = ctx.classifier
        dev = torch.device(bb.device)
        R = D.working_resolution(bb, cfg.resolution, "diff-pgd")
        T = bb.num_train_timesteps
        t_start = min(T - 1, max(1, int(round(cfg.strength * T))))
        targeted = ctx.target is not None
        y = torch.tensor([ctx.target if targeted else ctx.label], device=clf.device)

        # 1. The image at the working resolution, δ = 0 (full: a random start), the empty-prompt embedding.
        x_src = x.detach().float().to(dev)
        x_ref = D.resize(x_src, R).clamp(0, 1)
        delta = torch.zeros_like(x_ref)
        random_start = cfg.random_start == "on" or (cfg.random_start == "auto" and cfg.variant == "full")
        if random_start:
            delta = (torch.rand(x_ref.shape, generator=gen) * 2 - 1).to(dev) * cfg.eps
            delta = (x_ref + delta).clamp(0, 1) - x_ref
        f = bb.vae_factor
        shape = (1, bb.latent_channels, R // f, R // f)
        fixed = torch.randn(shape, generator=gen).to(dev) if cfg.noise == "fixed" else None
        with torch.no_grad():
            emb = D.text_embeddings(bb, cfg.prompt)

        def purify(img):
            # fresh SDEdit noise on every call, from the seeded generator (or the one fixed sample)
            noise = fixed if fixed is not None else torch.randn(shape, generator=gen).to(dev)
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
            logits = clf.logits(D.to_source_geometry(x_pur, x_src, cfg.output, x_ref)).float()  # as it will be written
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
            probs = clf.probs(D.to_source_geometry(x_adv, x_src, cfg.output, x_ref)).float()[0]
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
            "noise": cfg.noise,
            "random_start": random_start,
            "preset": cfg.preset,
            "resolution": R,
            "output": cfg.output,
            "precision": D.precision_name(bb.dtype),
            "backbone": bb.name,
        }
        return AttackOutput(adversarial=x_adv.detach().cpu(), iterations=cfg.steps, info=info)

    def cheaper(self) -> DiffPGD | None:
        """Gradient checkpointing and VAE slicing (one purification per step already); None when on."""
        if self.config.low_memory:
            return None
        return type(self)(self.config.replace(low_memory=True))
