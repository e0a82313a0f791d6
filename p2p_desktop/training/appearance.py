"""Appearance-only text conditioning of a demo backbone: the prompt steers how the same finding
is imaged, never what the finding is.

Why this phase exists. P2P reads the one-step x0 estimate at ``t < 50`` and optimises the
text conditioning. A small demo UNet must be taught that the prompt matters there (the first
demo backbone ignored it). The first way we taught it, counterfactual triplets
(:mod:`p2p_desktop.training.counterfactual`), used *cross-class* targets: another class's
prompt redrew the same breast as that class. P2P on such a backbone "succeeds" by redrawing
the finding (the phantom label-preservation oracle, :mod:`p2p_desktop.phantoms.oracle`,
measures it), which is not an adversarial example. This phase has **no cross-class target
anywhere**: every target is the source phantom itself, imaged differently.

What it does. It starts from a trained backbone folder (VAE frozen, UNet and text encoder
trained). For each training seed it renders the phantom ``(seed, CLASSES[seed % 3])`` as
generated (the source) and *appearance variants* of it: the same breast, the same mass at the
same site with the same label and mask, imaged with one setting moved
(:func:`p2p_desktop.phantoms.generate_phantom` ``appearance=``): gain, dynamic range, depth
compensation (depth attenuation), scanner smoothing (speckle texture), lateral resolution
(speckle size), posterior shadowing/enhancement strength and margin sharpness (masses only).
Each variant's prompt is the true class prompt plus words for the change (``APPEARANCE``).
Each step noises the source latent to ``t`` and asks for the x0 estimate of:

- the bare class prompt → the source (faithful; P2P starts from it);
- an appearance prompt → that variant of the same phantom;
- either of those with **another class word** → the same target as with the true word
  (a class word carries no edit);
- the empty prompt (Diff-PGD's) and the class prompt with a random non-class word in the
  class slot (P2P starts from a fresh token) → the source.

The loss is the x0 error weighted by ``min(SNR(t), γ)``; t comes from ``[0, 50)`` most of the
time, from ``[50, 300)`` some of the time, else from ``[0, 1000)``.

Usage::

    python -m p2p_desktop.training.appearance --base resources/models/demo --out DIR [--minutes M]

(``make retrain-demo`` runs it after the base training.) The budget counts CPU time; a
checkpoint goes to ``--scratch`` every two minutes and a re-run resumes from it. The folder is
written to a temporary sibling and moved into place when complete, with its card (the base's
training record without any counterfactual phase, this phase's record, and the quality
figures of :func:`~p2p_desktop.training.backbone.evaluate_backbone`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2p_desktop.training.backbone import (
    RESOLUTION,
    TRAIN_SEED_START,
    cached_data,
)
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

__all__ = ["APPEARANCE", "AppearancePlan", "AppearanceData", "appearance_variants", "load_appearance_data",
           "finetune_appearance", "main"]

#: factor -> (words for "less", words for "more", how to move it from the phantom's own value).
#: Moves stay inside (or at the edge of) the ranges the simulator samples, so variants look
#: like phantoms. ``("add", d)`` adds ``d``; ``("mul", f)`` multiplies.
APPEARANCE: dict[str, tuple[str, str, tuple[str, float], tuple[str, float]]] = {
    "gain_db": ("low gain", "high gain", ("add", -4.0), ("add", 4.0)),
    "dynamic_range_db": ("dark tissue", "bright tissue", ("add", -6.0), ("add", 6.0)),
    "tgc_compensation": ("dark deep tissue", "bright deep tissue", ("add", -0.12), ("add", 0.08)),
    "smoothing": ("rough texture", "smooth texture", ("mul", 0.5), ("mul", 1.6)),
    "sigma_lateral_mm": ("small speckle", "large speckle", ("mul", 0.75), ("mul", 1.35)),
    "posterior_scale": ("low posterior features", "high posterior features", ("mul", 0.5), ("mul", 1.6)),
    "edge_scale": ("sharp edge", "non sharp edge", ("mul", 0.5), ("mul", 2.0)),
}
# Words of the demo vocabulary (p2p_desktop.models.tokenizer.DEMO_WORDS), one token each, and
# none of them a class word or a BI-RADS descriptor that decides a class.
_LESION_ONLY = ("posterior_scale", "edge_scale")


@dataclass(frozen=True)
class AppearancePlan:
    """Everything that decides the fine-tuned weights (stored in the card)."""

    minutes: float = 40.0
    seed: int = 0
    n_seeds: int = 400              # training seeds TRAIN_SEED_START .. (label seed % 3), each with its variants
    batch: int = 4                  # sources per step
    unet_lr: float = 5e-4
    text_lr: float = 2e-4
    small_t: int = 50
    small_t_share: float = 0.6
    mid_t: int = 300
    mid_t_share: float = 0.2
    snr_gamma: float = 5.0
    identity_share: float = 0.25     # bare class prompt -> the source
    empty_prompt_share: float = 0.1
    unknown_word_share: float = 0.1
    class_swap_share: float = 0.3    # of the rest: another class word, same target
    warmup_steps: int = 20
    threads: int = 1
    size: int = RESOLUTION


@dataclass
class AppearanceData:
    """Sources and their variants: ``images[i]`` with ``labels[i]``, ``prompts[i]``, ``source[i]``
    (index of its source; a source points at itself) and ``factor[i]`` ("" for a source)."""

    images: np.ndarray
    labels: list[str]
    prompts: list[str]
    source: list[int]
    factor: list[str]
    seeds: list[int]

    def __len__(self) -> int:
        return len(self.labels)


def appearance_variants(ph) -> list[tuple[str, str, dict]]:
    """(factor, words, appearance override) for each variant of phantom ``ph``."""
    out = []
    imaging = ph.params.get("imaging", {})
    lesion = ph.params.get("lesion")
    for factor, (less, more, lo, hi) in APPEARANCE.items():
        if factor in _LESION_ONLY:
            if lesion is None or (factor == "posterior_scale" and not lesion.get("posterior_db")):
                continue
            base = 1.0
        else:
            base = float(imaging[factor])
        for words, (op, v) in ((less, lo), (more, hi)):
            out.append((factor, words, {factor: base + v if op == "add" else base * v}))
    return out


def load_appearance_data(start: int, n_seeds: int, size: int = RESOLUTION) -> AppearanceData:
    """Seeds ``start ..`` (label ``seed % 3``), each followed by its appearance variants."""
    from p2p_desktop.phantoms import CLASSES, class_prompt, generate_phantom

    images, labels, prompts, source, factor, seeds = [], [], [], [], [], []
    for s in range(start, start + n_seeds):
        label = CLASSES[s % 3]
        ph = generate_phantom(s, label, size)
        i0 = len(labels)
        images.append(ph.image)
        labels.append(label), prompts.append(class_prompt(label)), source.append(i0), factor.append(""), seeds.append(s)
        for f, words, look in appearance_variants(ph):
            v = generate_phantom(s, label, size, appearance=look)
            assert v.label == label and np.array_equal(v.mask, ph.mask)  # same finding, imaged differently
            images.append(v.image)
            labels.append(label), prompts.append(f"{class_prompt(label)}, {words}"), source.append(i0)
            factor.append(f), seeds.append(s)
    return AppearanceData(np.stack(images).astype(np.float32), labels, prompts, source, factor, seeds)


def _swap_class_word(prompt: str, label: str, other: str) -> str:
    from p2p_desktop.phantoms import class_prompt

    return prompt.replace(class_prompt(label), class_prompt(other), 1)


def _cached(scratch: Path, n_seeds: int, size: int) -> AppearanceData:
    return cached_data(scratch, f"appearance-{n_seeds}-{size}",
                       lambda: load_appearance_data(TRAIN_SEED_START, n_seeds, size),
                       ("labels", "prompts", "source", "factor", "seeds"), AppearanceData)


def finetune_appearance(parts: dict, plan: AppearancePlan, scratch: str | Path) -> dict:
    """Fine-tune ``parts`` (in place) on appearance variants; returns the training record."""
    import torch

    from p2p_desktop.phantoms import CLASSES
    from p2p_desktop.training.counterfactual import _unknown_word_prompts

    started_cpu = time.process_time()
    data, latents = encoded_data(parts, plan, Path(scratch), lambda d: _cached(d, plan.n_seeds, plan.size),
                                 "phantoms and variants")
    unet, te, tok, sched = (parts[k] for k in ("unet", "text_encoder", "tokenizer", "scheduler"))

    # every prompt with every class word in its class slot (a class word never changes the target)
    swapped = {c: [_swap_class_word(p, lab, c) for p, lab in zip(data.prompts, data.labels)] for c in CLASSES}
    ids_by_class = {c: _tokens(tok, swapped[c]) for c in CLASSES}
    ids_own = _tokens(tok, data.prompts)
    ids_empty = _tokens(tok, [""])
    ids_unknown = _tokens(tok, _unknown_word_prompts(tok))
    src_of = torch.tensor(data.source)
    sources = torch.tensor(sorted(set(data.source)))
    variants_of = {int(s): [i for i, (src, f) in enumerate(zip(data.source, data.factor)) if src == s and f]
                   for s in sources.tolist()}
    label_idx = torch.tensor([CLASSES.index(lab) for lab in data.labels])
    abar = sched.alphas_cumprod.float()
    T = sched.config.num_train_timesteps
    opt = text_conditioning_optimizer(unet, te, plan)
    gen = torch.Generator().manual_seed(plan.seed)
    run = FinetuneRun(plan, unet, te, opt, gen, Path(scratch) / "appearance-checkpoint.pt")
    run.resume()
    x0_of = x0_estimator(unet, te, abar)

    # A fixed probe at t = 25 (latent space): faithful under the bare prompt; how far an
    # appearance prompt moves the estimate (and how far its target is); how far a class-word swap
    # moves it (should stay small: no class edits were taught).
    probe_src = sources[: min(8, len(sources))]
    probe_var = torch.tensor([variants_of[int(s)][0] for s in probe_src]) if all(
        variants_of[int(s)] for s in probe_src) else probe_src
    probe_other = torch.tensor([CLASSES[(CLASSES.index(data.labels[int(s)]) + 1) % 3] == c
                                for s in probe_src for c in CLASSES]).view(len(probe_src), len(CLASSES))
    probe_noise = torch.randn((len(probe_src), *latents.shape[1:]), generator=torch.Generator().manual_seed(1))

    def probe_figures() -> dict:
        unet.eval(), te.eval()
        with torch.no_grad():
            t = torch.full((len(probe_src),), 25)
            a = float(abar[25])
            zt = math.sqrt(a) * latents[probe_src] + math.sqrt(1 - a) * probe_noise
            own = x0_of(zt, t, ids_own[probe_src])
            look = x0_of(zt, t, ids_own[probe_var])
            other_ids = torch.stack([ids_by_class[CLASSES[int(probe_other[i].nonzero()[0])]][int(s)]
                                     for i, s in enumerate(probe_src)])
            swap = x0_of(zt, t, other_ids)
            out = {"faithful_mse": float(((own - latents[probe_src]) ** 2).mean()),
                   "appearance_mad": float((look - own).abs().mean()),
                   "appearance_target_mad": float((latents[probe_var] - latents[probe_src]).abs().mean()),
                   "class_swap_mad": float((swap - own).abs().mean())}
        unet.train(), te.train()
        return {k_: round(v, 5) for k_, v in out.items()}

    first_probe = probe_figures()
    _log(f"probe before: {first_probe}")
    cross_class_targets = 0  # counted, and asserted zero: no target ever has another label than its source

    def loss_of():
        nonlocal cross_class_targets
        B = plan.batch
        src = sources[torch.randint(0, len(sources), (B,), generator=gen)]
        t = sample_timesteps(plan, B, T, gen)
        a = abar[t].view(B, 1, 1, 1)
        zt = a.sqrt() * latents[src] + (1 - a).sqrt() * torch.randn((B, *latents.shape[1:]), generator=gen)
        # the target member: the source itself or one of its variants
        r = torch.rand(B, generator=gen)
        tgt = src.clone()
        for b in range(B):
            vs = variants_of[int(src[b])]
            if r[b] >= plan.identity_share + plan.empty_prompt_share + plan.unknown_word_share and vs:
                tgt[b] = vs[int(torch.randint(0, len(vs), (1,), generator=gen))]
        cross_class_targets += int((label_idx[tgt] != label_idx[src]).sum())
        assert bool((src_of[tgt] == src).all())
        # its prompt: own class word, or another class word (same target), or empty / unknown word
        word = torch.where(torch.rand(B, generator=gen) < plan.class_swap_share,
                           torch.randint(0, len(CLASSES), (B,), generator=gen), label_idx[tgt])
        ids = torch.stack([ids_by_class[CLASSES[int(w)]][int(i)] for w, i in zip(word, tgt)])
        empty = (r >= plan.identity_share) & (r < plan.identity_share + plan.empty_prompt_share)
        unknown = (r >= plan.identity_share + plan.empty_prompt_share) & (
            r < plan.identity_share + plan.empty_prompt_share + plan.unknown_word_share)
        pick = torch.randint(0, len(ids_unknown), (B,), generator=gen)
        ids = torch.where(empty[:, None], ids_empty.expand(B, -1),
                          torch.where(unknown[:, None], ids_unknown[pick], ids))
        target = latents[tgt]
        snr = abar[t] / (1 - abar[t])
        per = snr.clamp(max=plan.snr_gamma) * ((x0_of(zt, t, ids) - target) ** 2).mean((1, 2, 3))
        return per.mean()

    run.train(loss_of, probe_figures)
    if cross_class_targets:
        raise AssertionError(f"{cross_class_targets} cross-class target(s) in appearance training")
    unet.eval(), te.eval()
    last_probe = probe_figures()
    _log(f"probe after: {last_probe}")
    n_sources = len(sources)
    return {
        "phantoms": {"generator": "p2p_desktop.phantoms.generate_phantom(appearance=...)",
                     "seeds": f"{TRAIN_SEED_START}..{TRAIN_SEED_START + plan.n_seeds - 1}",
                     "labels": "CLASSES[seed % 3]; each source with appearance variants of the same label",
                     "sources": n_sources, "count": len(data),
                     "factors": {f: [w[0], w[1]] for f, w in APPEARANCE.items()}},
        "cross_class_targets": cross_class_targets,
        **run.record(started_cpu, first_probe, last_probe,
                     "8 held-in sources noised to t=25: x0 MSE to the source under its bare prompt; "
                     "mean |Δx0| for an appearance prompt and for another class word; mean |Δ| "
                     "between the appearance variant's and the source's latents"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: appearance fine-tuning of a base demo backbone; the exit code."""
    p = finetune_arguments("appearance", "Appearance-only text conditioning of the demo backbone (CPU).",
                           AppearancePlan, "source seeds")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.n_seeds < 1 or args.threads < 1:
        print("p2p-desktop: error: --minutes must be > 0, --n-seeds and --threads ≥ 1", file=sys.stderr)
        return 2

    base_card = json.loads((args.base.resolve() / "card.json").read_text(encoding="utf-8"))
    plan = AppearancePlan(minutes=args.minutes, seed=args.seed, n_seeds=args.n_seeds, threads=args.threads)
    training = dict(base_card.get("training", {}))
    if "counterfactual" in training:
        print("p2p-desktop: error: the base backbone was fine-tuned with cross-class targets (its card has a "
              "counterfactual phase); start from a base-trained backbone (python -m p2p_desktop.training.backbone)",
              file=sys.stderr)
        return 2
    return publish_finetuned("appearance", args, plan, finetune_appearance, training, base_card)

if __name__ == "__main__":
    sys.exit(main())
