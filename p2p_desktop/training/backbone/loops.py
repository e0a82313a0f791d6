"""The two training phases of the demo backbone (VAE, then UNet with the text encoder) and the
run that chains them with their budgets and checkpoints; the plan that decides the weights."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from p2p_desktop.training.backbone.checkpoint import Checkpoint
from p2p_desktop.training.backbone.data import (
    EVAL_SEED_START,
    TEST_SEED_START,
    TRAIN_SEED_START,
    PhantomData,
    _cached_phantoms,
    encode_latents,
    to_grey,
    to_model_space,
)
from p2p_desktop.training.backbone.model import RESOLUTION, _tokens, build_components

__all__ = ["TrainingPlan", "train_backbone"]


@dataclass(frozen=True)
class TrainingPlan:
    """Everything that decides the trained weights (stored in the card and the checkpoint)."""

    minutes: float = 35.0             # CPU-time budget of the whole run, data to card
    seed: int = 0                     # torch initialisation and sampling
    n_train: int = 2400               # phantoms, seeds TRAIN_SEED_START ..
    vae_share: float = 0.25           # of the training time (the rest goes to the UNet)
    vae_batch: int = 16
    vae_crop: int = 64                # random crops first; the last part on full images
    vae_full_share: float = 0.25      # fraction of the VAE phase on full 128-px images
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    vae_ssim_weight: float = 0.2
    n_pair_seeds: int = 800           # UNet data: seeds 0 .. each drawn as all three classes
    unet_triplets: int = 2            # batch = triplets × 3 (one breast, three labels)
    unet_lr: float = 1e-3
    text_lr: float = 2e-4
    text_frozen_share: float = 0.5    # text encoder frozen for this part of the UNet phase (as in
                                      # SD); trained from scratch jointly, a random UNet makes it
                                      # collapse all prompts onto one embedding within ~100 steps
    small_t: int = 50                 # P2P samples t < 50
    small_t_share: float = 0.2        # of the full latents
    high_t: int = 750                 # where a lesion fades into the noise: the prompt matters
    high_t_share: float = 0.4         # t from [high_t, 1000); the rest uniform over [0, 1000)
    high_t_weight: float = 30.0       # ε-loss weight min(max(1, 1/SNR(t)), this), i.e. x0-error
                                      # weighting at high t, where the plain ε-loss barely sees
                                      # the global structure the prompt decides
    empty_prompt_share: float = 0.1
    class_prompt_share: float = 0.3
    warmup_steps: int = 30
    reserve_share: float = 0.10       # of the budget, kept for encoding, evaluation and saving

    def key(self) -> dict:
        """The fields a checkpoint must share to be resumed (the time budget may change)."""
        d = asdict(self)
        d.pop("minutes")
        d.pop("reserve_share")
        return d


def _ssim_torch(a, b, win: int = 7):
    """Mean SSIM of (N, H, W) images in [0, 1], uniform 7×7 window (skimage's default)."""
    import torch.nn.functional as F

    a, b = a.unsqueeze(1), b.unsqueeze(1)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    pool = lambda t: F.avg_pool2d(t, win, 1)  # noqa: E731
    ma, mb = pool(a), pool(b)
    cov = win * win / (win * win - 1)  # skimage uses the sample covariance
    va = (pool(a * a) - ma * ma) * cov
    vb = (pool(b * b) - mb * mb) * cov
    vab = (pool(a * b) - ma * mb) * cov
    s = ((2 * ma * mb + c1) * (2 * vab + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return s.mean()


def _lr_factor(step: int, frac: float, warmup: int) -> float:
    """Linear warmup (steps), then cosine over the phase's elapsed fraction, floor 5 %."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _cpu() -> float:
    """CPU seconds of this process: the training budget (one thread, so on an idle core this
    is the wall time; on a busy machine the run takes longer but does the same work)."""
    return time.process_time()


def _log(msg: str) -> None:
    print(f"[backbone {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _train_vae(vae, data: PhantomData, plan: TrainingPlan, budget_s: float, ckpt: Checkpoint,
               state: dict, generator) -> None:
    import torch

    x_all = to_model_space(data.images)
    opt = torch.optim.AdamW(vae.parameters(), lr=plan.vae_lr, weight_decay=0.0)
    if state.get("phase") == "vae" and state.get("step", 0) > 0:
        ckpt.restore({"vae": vae}, opt, generator)
    step, spent = state.get("step", 0), state.get("phase_seconds", 0.0)
    vae.train()
    last_save = time.monotonic()
    t0 = _cpu() - spent
    crop = plan.vae_crop
    while (spent := _cpu() - t0) < budget_s:
        frac = spent / budget_s
        full = frac >= 1 - plan.vae_full_share
        n = plan.vae_batch if not full else max(1, plan.vae_batch * crop * crop // RESOLUTION ** 2)
        idx = torch.randint(0, len(data), (n,), generator=generator)
        x = x_all[idx]
        if not full:
            i, j = torch.randint(0, RESOLUTION - crop + 1, (2,), generator=generator).tolist()
            x = x[:, :, i:i + crop, j:j + crop]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=generator)
        y = vae.decode(z).sample
        l1 = (y - x).abs().mean()
        ssim = _ssim_torch(to_grey(y), to_grey(x))
        kl = post.kl().mean()
        loss = l1 + plan.vae_ssim_weight * (1 - ssim) + plan.vae_kl_weight * kl
        for g in opt.param_groups:
            g["lr"] = plan.vae_lr * _lr_factor(step, frac, plan.warmup_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 10 == 0:
            _log(f"vae step {step} {spent:.0f}/{budget_s:.0f}s l1 {l1.item():.4f} "
                 f"ssim {ssim.item():.3f} kl {kl.item():.1f}{' (full)' if full else ''}")
        if time.monotonic() - last_save > 60:
            state.update(phase="vae", step=step, phase_seconds=_cpu() - t0)
            ckpt.save(state, {"vae": vae}, opt, generator)
            last_save = time.monotonic()
    vae.eval()
    state.setdefault("record", {})["vae"] = {"steps": step, "cpu_seconds": round(_cpu() - t0, 1)}
    state.update(phase="unet", step=0, phase_seconds=0.0)
    ckpt.save(state, {"vae": vae}, None, generator)


def _train_unet(parts: dict, latents, data: PhantomData, plan: TrainingPlan, budget_s: float,
                ckpt: Checkpoint, state: dict, generator) -> None:
    import torch
    import torch.nn.functional as F

    from p2p_desktop.phantoms import CLASSES

    unet, text_encoder, tok, sched = (parts["unet"], parts["text_encoder"], parts["tokenizer"],
                                      parts["scheduler"])
    ids_full = _tokens(tok, data.prompts)
    ids_class = _tokens(tok, data.class_prompts)
    ids_empty = _tokens(tok, [""])
    abar = sched.alphas_cumprod.float()
    opt = torch.optim.AdamW([
        {"params": list(unet.parameters()), "lr": plan.unet_lr, "base": plan.unet_lr},
        {"params": list(text_encoder.parameters()), "lr": plan.text_lr, "base": plan.text_lr,
         "weight_decay": 0.0},
    ], weight_decay=1e-2)
    modules = {"vae": parts["vae"], "unet": unet, "text_encoder": text_encoder}
    if state.get("phase") == "unet" and state.get("step", 0) > 0:
        ckpt.restore({"unet": unet, "text_encoder": text_encoder}, opt, generator)
    step, spent = state.get("step", 0), state.get("phase_seconds", 0.0)
    unet.train()
    text_encoder.train()
    last_save = time.monotonic()
    t0 = _cpu() - spent
    ema_loss, ema_small = None, None
    T = sched.config.num_train_timesteps

    k = len(CLASSES)

    def sample(n_triplets: int):
        # One breast under each label (same anatomy and speckle; only the mass differs), with
        # one t and one noise draw per triplet: the losses of a triplet differ only where the
        # labels differ, so the gradient that teaches the prompt is not buried in speckle.
        seeds = torch.randint(0, len(data) // k, (n_triplets,), generator=generator)
        idx = (seeds[:, None] * k + torch.arange(k)).reshape(-1)
        n = idx.numel()
        z0 = latents[idx]
        u = torch.rand(n_triplets, generator=generator)
        small = u < plan.small_t_share
        high = (u >= plan.small_t_share) & (u < plan.small_t_share + plan.high_t_share)
        t = torch.where(small, torch.randint(0, plan.small_t, (n_triplets,), generator=generator),
                        torch.where(high, torch.randint(plan.high_t, T, (n_triplets,), generator=generator),
                                    torch.randint(0, T, (n_triplets,), generator=generator)))
        t, small = t.repeat_interleave(k), small.repeat_interleave(k)
        r = torch.rand(n, generator=generator)
        ids = torch.where((r < plan.empty_prompt_share)[:, None], ids_empty.expand(n, -1),
                          torch.where((r < plan.empty_prompt_share + plan.class_prompt_share)[:, None],
                                      ids_class[idx], ids_full[idx]))
        noise = torch.randn((n_triplets, *z0.shape[1:]), generator=generator).repeat_interleave(k, 0)
        a = abar[t].view(n, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        pred = unet(zt, t, text_encoder(ids)[0]).sample
        weight = ((1 - abar[t]) / abar[t]).clamp(1.0, plan.high_t_weight)
        return weight * F.mse_loss(pred, noise, reduction="none").mean((1, 2, 3)), small

    while (spent := _cpu() - t0) < budget_s:
        frac = spent / budget_s
        per, small = sample(plan.unet_triplets)
        loss = per.mean()
        text_frozen = frac < plan.text_frozen_share
        for g in opt.param_groups:
            g["lr"] = g["base"] * _lr_factor(step, frac, plan.warmup_steps)
        opt.param_groups[1]["lr"] = 0.0 if text_frozen else opt.param_groups[1]["lr"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if text_frozen:
            text_encoder.zero_grad(set_to_none=True)
        torch.nn.utils.clip_grad_norm_(list(unet.parameters()) + list(text_encoder.parameters()), 1.0)
        opt.step()
        step += 1
        ema_loss = loss.item() if ema_loss is None else 0.95 * ema_loss + 0.05 * loss.item()
        if small.any():
            ls = per[small].mean().item()
            ema_small = ls if ema_small is None else 0.95 * ema_small + 0.05 * ls
        if step % 10 == 0:
            _log(f"unet step {step} {spent:.0f}/{budget_s:.0f}s loss {ema_loss:.4f} "
                 f"loss(t<{plan.small_t}) {ema_small if ema_small is not None else float('nan'):.4f}")
        if time.monotonic() - last_save > 60:
            state.update(phase="unet", step=step, phase_seconds=_cpu() - t0)
            ckpt.save(state, modules, opt, generator)
            last_save = time.monotonic()
    unet.eval()
    text_encoder.eval()
    state.setdefault("record", {})["unet"] = {"steps": step, "cpu_seconds": round(_cpu() - t0, 1),
                                             "final_loss_ema": ema_loss,
                                             "final_small_t_loss_ema": ema_small}
    state.update(phase="done", step=step, phase_seconds=_cpu() - t0)
    ckpt.save(state, modules, None, generator)


def train_backbone(plan: TrainingPlan, scratch: str | Path) -> tuple[dict, dict]:
    """Train (or resume) the demo backbone; returns ``(components, training record)``."""
    import torch

    torch.set_num_threads(1)
    started, started_cpu = time.monotonic(), _cpu()
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    parts = build_components(scratch / "tokenizer", seed=plan.seed)
    ckpt = Checkpoint(scratch, plan)
    state = ckpt.load_state() or {"phase": "vae", "step": 0, "phase_seconds": 0.0}
    generator = torch.Generator().manual_seed(plan.seed)

    t = _cpu()
    data = _cached_phantoms(scratch, TRAIN_SEED_START, plan.n_train)
    pairs = _cached_phantoms(scratch, TRAIN_SEED_START, plan.n_pair_seeds, paired=True)
    _log(f"{len(data)} + {len(pairs)} phantoms ready ({_cpu() - t:.0f} CPU s)")
    if "budgets" not in state:
        left = plan.minutes * 60 * (1 - plan.reserve_share) - (_cpu() - started_cpu)
        if left < 60:
            raise ValueError(f"--minutes {plan.minutes} leaves no time to train after generating data")
        state["budgets"] = {"vae_s": plan.vae_share * left, "unet_s": (1 - plan.vae_share) * left}
        state["started"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    budgets = state["budgets"]

    if state["phase"] == "vae":
        _train_vae(parts["vae"], data, plan, budgets["vae_s"], ckpt, state, generator)
    else:
        ckpt.restore({"vae": parts["vae"]}, None, generator)
    parts["vae"].eval()
    t = _cpu()
    latents = encode_latents(parts["vae"], pairs.images)
    scaling = float(1.0 / latents.std())
    parts["vae"].register_to_config(scaling_factor=scaling)
    latents = latents * scaling
    _log(f"latents encoded in {_cpu() - t:.0f} CPU s; std {1 / scaling:.4f} -> scaling_factor "
         f"{scaling:.5f}; latent mean {latents.mean().item():.3f}")
    if state["phase"] == "unet":
        unet_budget = budgets["unet_s"] - (_cpu() - t)
        _train_unet(parts, latents, pairs, plan, unet_budget, ckpt, state, generator)
    else:
        ckpt.restore({"unet": parts["unet"], "text_encoder": parts["text_encoder"]}, None, generator)
    record = {
        "phantoms": {"generator": "p2p_desktop.phantoms.generate_phantom", "size": RESOLUTION,
                     "vae": {"seeds": f"{TRAIN_SEED_START}..{TRAIN_SEED_START + plan.n_train - 1}",
                             "labels": "CLASSES[seed % 3]", "count": plan.n_train},
                     "unet_text_encoder": {
                         "seeds": f"{TRAIN_SEED_START}..{TRAIN_SEED_START + plan.n_pair_seeds - 1}",
                         "labels": "each seed as all three classes", "count": len(pairs)},
                     "held_out_for_evaluation": f"{EVAL_SEED_START}.. (card) and {TEST_SEED_START}.. (tests)"},
        "plan": asdict(plan),
        "phases": state.get("record", {}),
        "latent_std_before_scaling": round(1 / scaling, 6),
        "threads": 1,
        "device": "cpu",
        "wall_seconds_this_run": round(time.monotonic() - started, 1),
        "cpu_seconds_this_run": round(_cpu() - started_cpu, 1),
        "started": state.get("started"),
    }
    return parts, record
