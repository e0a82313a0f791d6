"""Counterfactual fine-tuning of the demo backbone, so that its text steers P2P's timesteps.

Why this phase exists. P2P reads the one-step x0 estimate from ``t < 50``; there the noised
latent already shows the image, so a denoiser trained the usual way learns to ignore the
prompt (the first demo backbone did: swapping the class prompt changed the x0 estimate at
t = 25 by a mean absolute difference of 3e-5, and optimising the conditioning could not move
a classifier). Stable Diffusion 1.5 is steerable there because of its size; a 1.5 M-parameter
UNet must be taught.

What it does. It starts from a trained backbone folder (VAE frozen, UNet and text encoder
trained) and uses *counterfactual triplets*: one phantom seed drawn as benign, malignant and
normal with the mass at the same site (:func:`p2p_desktop.phantoms.generate_phantom` with
``shared_site=True``), so a triplet differs only by what the prompt names. Each step takes a
triplet, one member as the source, noises the source latent to ``t``, and asks for the
x0 estimate of **each** member under that member's prompt from the **same** noised source:

- own prompt → reconstruct the source (the faithful denoiser, as before);
- another class's prompt → the same breast with that class's mass (or none);
- the empty prompt (Diff-PGD's) → the source;
- the class prompt with a random non-class word in the class slot → the source. P2P starts
  from a *new* class token with a fresh embedding (as the authors' script does); this term
  makes such an unknown word reconstruct faithfully, so the attack starts from the image and
  its gradient leads toward the class words' edits.

The loss is the x0 error weighted by ``min(SNR(t), γ)`` (min-SNR-γ; for ε-prediction it is
the ε-loss at high t). t comes from ``[0, 50)`` most of the time (P2P's range), from
``[50, 300)`` some of the time, else from ``[0, 1000)`` so the model stays a diffusion model.

The result is a text-conditioned editor at small t: moving the conditioning between the class
prompts moves the mass, which is what P2P's gradient through the text encoder needs.

Usage::

    python -m p2p_desktop.training.counterfactual --base resources/models/demo --out DIR [--minutes M]

The budget counts CPU time of this process. A checkpoint goes to ``--scratch`` every two
minutes; re-running the same command resumes from it. The folder is written to a temporary
sibling and moved into place when complete, with its card (training record of the base, this
phase's record, and the quality figures of :func:`~p2p_desktop.training.backbone.evaluate_backbone`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from p2p_desktop.training.backbone import (
    RESOLUTION,
    TRAIN_SEED_START,
    PhantomData,
    cached_data,
    load_paired_phantom_data,
)
from p2p_desktop.training.backbone.data import PHANTOM_FIELDS
from p2p_desktop.training.backbone.loops import _log
from p2p_desktop.training.backbone.model import _tokens
from p2p_desktop.training.finetune import (
    FinetuneRun,
    encoded_data,
    finetune_arguments,
    publish_finetuned,
    sample_timesteps,
    text_conditioning_optimizer,
    x0_estimator,
)

__all__ = ["EditPlan", "load_counterfactual_triplets", "finetune_counterfactual", "main"]


@dataclass(frozen=True)
class EditPlan:
    """Everything that decides the fine-tuned weights (stored in the card)."""

    minutes: float = 40.0           # CPU-time budget of the training loop
    seed: int = 0
    n_seeds: int = 800              # triplet seeds TRAIN_SEED_START .. (each as all three classes)
    triplets: int = 2               # per step; each triplet gives three (prompt, target) pairs
    unet_lr: float = 5e-4
    text_lr: float = 2e-4
    small_t: int = 50               # P2P's range
    small_t_share: float = 0.6
    mid_t: int = 300
    mid_t_share: float = 0.2        # t from [small_t, mid_t); the rest uniform over [0, 1000)
    snr_gamma: float = 5.0          # loss = min(SNR, γ) · x0-MSE
    empty_prompt_share: float = 0.1
    unknown_word_share: float = 0.15  # the class prompt with a random non-class word -> the source
    class_prompt_share: float = 0.4  # bare class prompt; else the member's descriptor prompt
    warmup_steps: int = 20
    threads: int = 1
    size: int = RESOLUTION          # phantom size (the backbone's resolution)


def load_counterfactual_triplets(start: int, n_seeds: int, size: int = RESOLUTION) -> PhantomData:
    """Seeds ``start ..`` each drawn as every class with the mass at one shared site, in the
    order (s, CLASSES[0]), (s, CLASSES[1]), …"""
    return load_paired_phantom_data(start, n_seeds, size, shared_site=True)


def _cached_triplets(scratch: Path, n_seeds: int, size: int) -> PhantomData:
    stem = f"triplets-{n_seeds}" if size == RESOLUTION else f"triplets-{n_seeds}-{size}"
    return cached_data(scratch, stem, lambda: load_counterfactual_triplets(TRAIN_SEED_START, n_seeds, size),
                       PHANTOM_FIELDS, PhantomData)


def _unknown_word_prompts(tok) -> list[str]:
    """The class prompt with each whole vocabulary word (not a class word) in the class slot."""
    from p2p_desktop.phantoms import class_prompt

    template = class_prompt("benign").replace("benign", "{}")
    class_words = {"benign", "malignant", "no", "normal"}
    words = sorted({w[:-4] for w in tok.get_vocab() if w.endswith("</w>")} - class_words)
    return [template.format(w) for w in words if len(w) > 1 and w.isascii() and w.isalpha()]


def finetune_counterfactual(parts: dict, plan: EditPlan, scratch: str | Path) -> dict:
    """Fine-tune ``parts`` (in place) on counterfactual triplets; returns the training record."""
    import torch

    from p2p_desktop.phantoms import CLASSES

    started_cpu = time.process_time()
    data, latents = encoded_data(parts, plan, Path(scratch), lambda d: _cached_triplets(d, plan.n_seeds, plan.size),
                                 "triplet phantoms")
    unet, te, tok, sched = (parts[k] for k in ("unet", "text_encoder", "tokenizer", "scheduler"))

    k = len(CLASSES)
    ids_class, ids_full, ids_empty = _tokens(tok, data.class_prompts), _tokens(tok, data.prompts), _tokens(tok, [""])
    ids_unknown = _tokens(tok, _unknown_word_prompts(tok))
    abar = sched.alphas_cumprod.float()
    T = sched.config.num_train_timesteps
    opt = text_conditioning_optimizer(unet, te, plan)
    gen = torch.Generator().manual_seed(plan.seed)
    run = FinetuneRun(plan, unet, te, opt, gen, Path(scratch) / "counterfactual-checkpoint.pt")
    run.resume()

    # A fixed probe: does the prompt steer the x0 estimate at t = 25 (latent space)?
    probe = torch.arange(0, 3 * min(8, plan.n_seeds), 3)  # the benign member of 8 triplets
    probe_noise = torch.randn((len(probe), *latents.shape[1:]), generator=torch.Generator().manual_seed(1))

    x0_of = x0_estimator(unet, te, abar)

    def probe_figures() -> dict:
        unet.eval(), te.eval()
        with torch.no_grad():
            t = torch.full((len(probe),), 25)
            a = float(abar[25])
            zt = math.sqrt(a) * latents[probe] + math.sqrt(1 - a) * probe_noise
            own = x0_of(zt, t, ids_class[probe])
            mal = x0_of(zt, t, ids_class[probe + 1])
            nor = x0_of(zt, t, ids_class[probe + 2])
            out = {"faithful_mse": float(((own - latents[probe]) ** 2).mean()),
                   "swap_mad": float(((mal - own).abs().mean() + (nor - own).abs().mean()) / 2),
                   "target_mad": float(((latents[probe + 1] - latents[probe]).abs().mean()
                                        + (latents[probe + 2] - latents[probe]).abs().mean()) / 2)}
        unet.train(), te.train()
        return {k_: round(v, 5) for k_, v in out.items()}

    first_probe = probe_figures()
    _log(f"probe before: {first_probe}")

    def loss_of():
        B = plan.triplets
        seeds = torch.randint(0, len(data) // k, (B,), generator=gen)
        src = seeds * k + torch.randint(0, k, (B,), generator=gen)
        t = sample_timesteps(plan, B, T, gen)
        a = abar[t].view(B, 1, 1, 1)
        zt = a.sqrt() * latents[src] + (1 - a).sqrt() * torch.randn((B, *latents.shape[1:]), generator=gen)
        members = (seeds[:, None] * k + torch.arange(k)).reshape(-1)        # (B·k,)
        src_r, t_r, zt_r = src.repeat_interleave(k), t.repeat_interleave(k), zt.repeat_interleave(k, 0)
        r = torch.rand(B * k, generator=gen)
        empty = r < plan.empty_prompt_share
        unknown = (r >= plan.empty_prompt_share) & (r < plan.empty_prompt_share + plan.unknown_word_share)
        use_class = (r < plan.empty_prompt_share + plan.unknown_word_share + plan.class_prompt_share)[:, None]
        pick = torch.randint(0, len(ids_unknown), (B * k,), generator=gen)
        ids = torch.where(empty[:, None], ids_empty.expand(B * k, -1),
                          torch.where(unknown[:, None], ids_unknown[pick],
                                      torch.where(use_class, ids_class[members], ids_full[members])))
        target = latents[torch.where(empty | unknown, src_r, members)]
        snr = abar[t_r] / (1 - abar[t_r])
        per = snr.clamp(max=plan.snr_gamma) * ((x0_of(zt_r, t_r, ids) - target) ** 2).mean((1, 2, 3))
        return per.mean()

    run.train(loss_of, probe_figures)
    unet.eval(), te.eval()
    last_probe = probe_figures()
    _log(f"probe after: {last_probe}")
    return {
        "phantoms": {"generator": "p2p_desktop.phantoms.generate_phantom(shared_site=True)",
                     "seeds": f"{TRAIN_SEED_START}..{TRAIN_SEED_START + plan.n_seeds - 1}",
                     "labels": "each seed as all three classes, mass at one shared site",
                     "count": len(data)},
        **run.record(started_cpu, first_probe, last_probe,
                     "8 held-in benign phantoms noised to t=25: x0 MSE to the source under its "
                     "own prompt; mean |Δx0| when the prompt says malignant / normal; mean "
                     "|Δ| between the triplet's true latents (what a full edit would move)"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: counterfactual fine-tuning of a base demo backbone; the exit code."""
    p = finetune_arguments("counterfactual", "Counterfactual fine-tuning of the demo backbone's text conditioning "
                           "(CPU).", EditPlan, "triplet seeds")
    args = p.parse_args(argv)

    base_card = json.loads((args.base.resolve() / "card.json").read_text(encoding="utf-8"))
    plan = EditPlan(minutes=args.minutes, seed=args.seed, n_seeds=args.n_seeds, threads=args.threads)
    training = dict(base_card.get("training", {}))
    training.pop("counterfactual", None)  # the new phase goes last
    return publish_finetuned("counterfactual", args, plan, finetune_counterfactual, training, base_card)

if __name__ == "__main__":
    sys.exit(main())
