"""What the prompt of a demo backbone steers at P2P's timesteps: appearance, or the finding?

Measured on held-out phantoms (seeds ``EVAL_SEED_START ..``, never trained on), each noised to
``t`` (default 25, inside P2P's ``t < 50``) with one noise draw; the one-step x0 estimate is
decoded to grey under

- its own bare class prompt (what P2P starts from) — the reference;
- the same prompt from another noise draw — the *seed floor*, the change that means nothing;
- each appearance prompt that applies to the phantom (the class prompt plus the words of one
  imaging change, :data:`p2p_desktop.training.appearance.APPEARANCE`);
- each other class prompt (a class-word swap).

Figures (mean absolute difference of the decoded grey images, in [0, 1]):
``appearance_ratio`` = appearance-prompt change / seed floor (goal ≥ 2: the prompt steers how
the finding is imaged), ``class_swap_ratio`` = class-word change / seed floor (should be small:
a class word carries no edit), per factor, and ``toward_variant``: the share of appearance
prompts whose x0 is closer to the true appearance variant of the same phantom (the simulator
re-rendered with that imaging setting moved) than the bare prompt's x0 is — the prompt moves the
image the way its words say.

Usage::

    python -m p2p_desktop.training.appearance_eval resources/models/demo [--n-images 9] [--write-card]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["appearance_conditioning", "main"]


def appearance_conditioning(folder_or_parts, n_images: int = 9, start: int | None = None, t: int = 25,
                            seed: int = 0) -> dict:
    """The appearance / class-swap / seed-floor figures at timestep ``t`` (see the module docstring)."""
    import torch

    from p2p_desktop.phantoms import CLASSES, class_prompt, generate_phantom
    from p2p_desktop.training.appearance import appearance_variants
    from p2p_desktop.training.backbone.data import EVAL_SEED_START, to_grey, to_model_space
    from p2p_desktop.training.backbone.model import _tokens

    start = EVAL_SEED_START if start is None else start
    if isinstance(folder_or_parts, dict):
        parts = folder_or_parts
    else:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(str(folder_or_parts), local_files_only=True)
        parts = {"vae": pipe.vae, "unet": pipe.unet, "text_encoder": pipe.text_encoder,
                 "tokenizer": pipe.tokenizer, "scheduler": pipe.scheduler}
    vae, unet, te, tok = parts["vae"], parts["unet"], parts["text_encoder"], parts["tokenizer"]
    for m in (vae, unet, te):
        m.eval()
    sf = float(vae.config.scaling_factor)
    a = float(parts["scheduler"].alphas_cumprod[t])
    g = torch.Generator().manual_seed(seed)

    def x0_grey(z0, noise, prompts):
        zt = math.sqrt(a) * z0 + math.sqrt(1 - a) * noise
        n = len(prompts)
        e = unet(zt.expand(n, -1, -1, -1), torch.full((n,), t), te(_tokens(tok, prompts))[0]).sample
        x0 = (zt - math.sqrt(1 - a) * e) / math.sqrt(a)
        return to_grey(vae.decode(x0 / sf).sample).numpy()

    floor, app, cls = [], [], []
    per_factor: dict[str, list[float]] = {}
    toward = []
    with torch.no_grad():
        for i in range(n_images):
            s = start + i
            label = CLASSES[s % 3]
            ph = generate_phantom(s, label)
            z0 = vae.encode(to_model_space(ph.image[None])).latent_dist.mean * sf
            n1, n2 = torch.randn(z0.shape, generator=g), torch.randn(z0.shape, generator=g)
            own = class_prompt(label)
            base = x0_grey(z0, n1, [own])[0]
            floor.append(float(np.abs(x0_grey(z0, n2, [own])[0] - base).mean()))
            others = [class_prompt(c) for c in CLASSES if c != label]
            cls.extend(float(np.abs(img - base).mean()) for img in x0_grey(z0, n1, others))
            variants = appearance_variants(ph)
            if not variants:
                continue
            imgs = x0_grey(z0, n1, [f"{own}, {words}" for _, words, _ in variants])
            for (factor, _words, look), img in zip(variants, imgs):
                d = float(np.abs(img - base).mean())
                app.append(d)
                per_factor.setdefault(factor, []).append(d)
                target = generate_phantom(s, label, appearance=look).image
                toward.append(float(np.abs(img - target).mean()) < float(np.abs(base - target).mean()))
    f = float(np.mean(floor))
    out = {
        "t": t,
        "held_out_seeds": f"{start}..{start + n_images - 1}",
        "seed_floor_mad": round(f, 5),
        "appearance_mad": round(float(np.mean(app)), 5),
        "class_swap_mad": round(float(np.mean(cls)), 5),
        "appearance_ratio": round(float(np.mean(app)) / max(f, 1e-12), 3),
        "class_swap_ratio": round(float(np.mean(cls)) / max(f, 1e-12), 3),
        "per_factor_ratio": {k: round(float(np.mean(v)) / max(f, 1e-12), 3) for k, v in per_factor.items()},
        "toward_variant": round(float(np.mean(toward)), 3) if toward else None,
        "what": "mean |Δ| of decoded grey one-step x0 estimates vs the bare class prompt's, over the seed "
                "floor (same prompt, another noise draw); toward_variant: share of appearance prompts whose "
                "x0 is closer to the simulator's re-rendering with that setting moved",
    }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print the figures of a backbone folder; ``--write-card`` stores them in its card's quality."""
    p = argparse.ArgumentParser(prog="python -m p2p_desktop.training.appearance_eval",
                                description="What a demo backbone's prompt steers at P2P's timesteps.")
    p.add_argument("folder", type=Path)
    p.add_argument("--n-images", type=int, default=9)
    p.add_argument("--t", type=int, default=25)
    p.add_argument("--write-card", action="store_true",
                   help="store the figures as quality.appearance_conditioning in the folder's card.json")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    figures = appearance_conditioning(args.folder, n_images=args.n_images, t=args.t)
    if args.write_card:
        from p2p_desktop.training.backbone import write_card

        card = json.loads((args.folder / "card.json").read_text(encoding="utf-8"))
        quality = dict(card.get("quality", {}), appearance_conditioning=figures)
        write_card(args.folder, card.get("training", {}), quality, card.get("architecture", {}))
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
