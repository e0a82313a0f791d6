"""Train the demo diffusion backbone: a small Stable-Diffusion-format model on synthetic phantoms.

Stable Diffusion cannot be downloaded here, so the demo bundle ships its own latent diffusion
model with SD's exact component classes and folder layout (``model_index.json``, ``vae/``,
``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``, safetensors only); the code path
that serves it is the one that serves SD 1.5. It is a synthetic demo, not a medical model.

Architecture (128×128 RGB in/out, grey replicated to three channels):

- VAE (:class:`diffusers.AutoencoderKL`): two levels, ×2 downsampling to a 64×64×4 latent
  (speckle does not survive ×4), no mid-block attention; ``scaling_factor`` = 1/std of the
  training latents (measured).
- UNet (:class:`diffusers.UNet2DConditionModel`) on 64×64×4: widths (32, 64, 64), one layer
  per block, cross-attention on the 16×16 level and the mid block only (self-attention at
  32×32 costs ~4× the whole UNet on a CPU), plus the attention-pooled prompt added to the
  time embedding (``addition_embed_type="text"``, FiLM scale/shift in every resnet) so the
  prompt reaches every level.
- Text encoder (:class:`transformers.CLIPTextModel`): 64 wide, 3 layers, 77 positions, over
  the demo tokenizer (:func:`p2p_desktop.models.tokenizer.build_clip_tokenizer_files`).
- Scheduler: SD 1.5's DDPM schedule (1000 steps, scaled-linear 0.00085..0.012, ε-prediction).

Training (CPU, one thread; the budget ``--minutes`` counts CPU time of the process, which is
the wall time on an idle core). Phantoms are generated once, kept in memory and cached in the
scratch folder.

1. VAE on seeds ``0 .. n_train-1`` (label ``seed % 3``): L1 + light SSIM + tiny KL, random
   64-px crops, then full images.
2. Every phantom of the UNet set is encoded once (posterior mean × scaling). The UNet set is
   seeds ``0 .. n_pair_seeds-1``, each drawn as all three classes — the generator keeps a
   seed's breast and speckle across labels, so a triplet differs only by its mass. UNet and
   text encoder train jointly on the ε-prediction loss, one t and one noise draw per triplet
   (the prompt is the only thing that tells the three apart at high t; with unpaired
   phantoms the prompt signal drowned in speckle and the model learned to ignore it). t comes
   from ``[0, 50)`` (P2P's range) 20 % of the time, from ``[750, 1000)`` (where a mass fades
   into the noise) 40 %, else from ``[0, 1000)``; the loss is weighted by
   ``clamp(1/SNR(t), 1, 30)`` (x0 error at high t). Prompts: the phantom's descriptor prompt
   (60 %), its bare class prompt (30 %) or ``""`` (10 %, the empty prompt of Diff-PGD).
   The text encoder stays frozen for the first half of the phase (as SD's CLIP is frozen):
   trained from the start, it collapsed every prompt onto one embedding before the UNet could
   use any.

The learning rate follows a cosine over each phase's CPU-time budget. A checkpoint goes to
``--scratch`` every minute; re-running the same command resumes from it.

Quality (:func:`evaluate_backbone`, on held-out seeds ``1_000_000 ..``): VAE round-trip SSIM;
SSIM of the one-step x0 estimate from t ∈ {10, 25, 49} (the P2P regime); and how much a
different class prompt changes a denoised image compared with a different noise seed.

Usage::

    python -m p2p_desktop.training.backbone --out resources/models/demo [--minutes M] [--seed S]

The folder is built in a temporary sibling and moved into place when complete.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from p2p_desktop.io.outputs import atomic_replace_json

__all__ = [
    "RESOLUTION",
    "LATENT_SIZE",
    "TRAIN_SEED_START",
    "EVAL_SEED_START",
    "TEST_SEED_START",
    "VAE_CONFIG",
    "UNET_CONFIG",
    "TEXT_ENCODER_CONFIG",
    "SCHEDULER_CONFIG",
    "TrainingPlan",
    "PhantomData",
    "load_phantom_data",
    "load_paired_phantom_data",
    "to_model_space",
    "to_grey",
    "encode_latents",
    "build_components",
    "parameter_counts",
    "train_backbone",
    "save_backbone",
    "evaluate_backbone",
    "unet_step_seconds",
    "write_card",
    "main",
]

RESOLUTION = 128
LATENT_SIZE = 64
TRAIN_SEED_START = 0
EVAL_SEED_START = 1_000_000   # held out: quality figures in card.json
TEST_SEED_START = 1_100_000   # held out: unit tests

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "block_out_channels": [16, 32],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": RESOLUTION,
    "mid_block_add_attention": False,
    "scaling_factor": 1.0,  # replaced by 1/std of the training latents
}

TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 64,
    "hidden_act": "quick_gelu",
}

UNET_CONFIG: dict[str, Any] = {
    "sample_size": LATENT_SIZE,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "norm_num_groups": 16,
    "cross_attention_dim": TEXT_ENCODER_CONFIG["hidden_size"],
    # The prompt also enters globally: attention-pooled text added to the time embedding
    # (diffusers' TextTimeEmbedding). Cross-attention alone is learned too slowly in a
    # CPU-sized training run (prompt swaps changed ε̂ by ~1e-4 after 400 steps).
    "addition_embed_type": "text",
    "addition_embed_type_num_heads": 4,
    "resnet_time_scale_shift": "scale_shift",  # time+text embedding as FiLM scale and shift
}

# Stable Diffusion 1.5's training schedule. ``set_alpha_to_one`` is not a DDPMScheduler
# argument; it is written into scheduler_config.json (as in SD 1.5) for DDIM conversions.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "prediction_type": "epsilon",
    "clip_sample": False,
    "steps_offset": 1,
}


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


# ----------------------------------------------------------------------------------- data


@dataclass
class PhantomData:
    """Phantom images (N, H, W) float32 in [0, 1] with labels, prompts and seeds."""

    images: np.ndarray
    labels: list[str]
    prompts: list[str]        # descriptor prompts ("ultrasound image of ... , oval, ...")
    class_prompts: list[str]  # bare class prompts (what P2P starts from)
    seeds: list[int]

    def __len__(self) -> int:
        return len(self.seeds)


def _phantom_data(phantoms: Sequence, size: int) -> PhantomData:
    """Stack generated phantoms with their labels, prompts and seeds."""
    from p2p_desktop.phantoms import class_prompt

    images = np.empty((len(phantoms), size, size), np.float32)
    for i, ph in enumerate(phantoms):
        images[i] = ph.image
    return PhantomData(images, [ph.label for ph in phantoms], [ph.prompt for ph in phantoms],
                       [class_prompt(ph.label) for ph in phantoms], [ph.seed for ph in phantoms])


def load_phantom_data(start: int, n: int, size: int = RESOLUTION) -> PhantomData:
    """Generate ``n`` phantoms from seeds ``start ..`` (labels balanced by ``seed % 3``)."""
    from p2p_desktop.phantoms import generate_phantom

    return _phantom_data([generate_phantom(start + i, size=size) for i in range(n)], size)


def load_paired_phantom_data(start: int, n_seeds: int, size: int = RESOLUTION,
                             shared_site: bool = False) -> PhantomData:
    """Seeds ``start ..`` each drawn as every class, in the order (s, CLASSES[0]), (s, CLASSES[1]), …

    The phantom generator keeps the breast of a seed fixed across labels, so each triplet is
    one breast with a benign mass, a malignant mass and no mass (with ``shared_site`` both
    masses sit at the same spot: see :func:`p2p_desktop.phantoms.generate_phantom`)."""
    from p2p_desktop.phantoms import CLASSES, generate_phantom

    return _phantom_data([generate_phantom(start + s, label, size=size, shared_site=shared_site)
                          for s in range(n_seeds) for label in CLASSES], size)


def _cached_phantoms(folder: Path, start: int, n: int, paired: bool = False) -> PhantomData:
    """Phantom data kept in ``folder`` (npy + json) so a resumed run skips generating it."""
    stem = f"phantoms-{'paired-' if paired else ''}{start}-{n}"
    img_f, meta_f = folder / f"{stem}.npy", folder / f"{stem}.json"
    if img_f.is_file() and meta_f.is_file():
        meta = json.loads(meta_f.read_text(encoding="utf-8"))
        return PhantomData(np.load(img_f, allow_pickle=False), **meta)
    data = load_paired_phantom_data(start, n) if paired else load_phantom_data(start, n)
    np.save(img_f, data.images, allow_pickle=False)
    meta_f.write_text(json.dumps({"labels": data.labels, "prompts": data.prompts,
                                  "class_prompts": data.class_prompts, "seeds": data.seeds}),
                      encoding="utf-8")
    return data


def to_model_space(images) -> "torch.Tensor":  # noqa: F821
    """(N, H, W) grey in [0, 1] -> (N, 3, H, W) in [-1, 1], as SD's VAE expects."""
    import torch

    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    return (x * 2 - 1).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def to_grey(x) -> "torch.Tensor":  # noqa: F821
    """(N, 3, H, W) in [-1, 1] -> (N, H, W) grey in [0, 1] (channel mean, clamped)."""
    return ((x.mean(1) + 1) / 2).clamp(0, 1)


# ----------------------------------------------------------------------------- components


def build_components(tokenizer_dir: str | Path, seed: int = 0) -> dict:
    """Fresh VAE, UNet, text encoder (seeded), the demo tokenizer and SD's DDPM scheduler."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from p2p_desktop.models.tokenizer import build_clip_tokenizer_files

    build_clip_tokenizer_files(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        **TEXT_ENCODER_CONFIG))
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    return {"vae": vae, "unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "scheduler": scheduler}


def parameter_counts(components: dict) -> dict[str, int]:
    return {name: int(sum(p.numel() for p in components[name].parameters()))
            for name in ("vae", "unet", "text_encoder")}


def _tokens(tokenizer, prompts: Sequence[str]):
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


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


# ---------------------------------------------------------------------------- checkpoints


def _save_state_dict(module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}, str(path))


def _load_state_dict(module, path: Path) -> None:
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path)))


class _Checkpoint:
    """Resumable training state in a scratch folder (replaced atomically on each save)."""

    def __init__(self, folder: Path, plan: TrainingPlan):
        self.folder = Path(folder)
        self.plan = plan

    @property
    def current(self) -> Path:
        return self.folder / "current"

    def load_state(self) -> dict | None:
        f = self.current / "state.json"
        if not f.is_file():
            return None
        state = json.loads(f.read_text(encoding="utf-8"))
        if state.get("plan_key") != self.plan.key():
            print(f"[backbone] checkpoint in {self.folder} is from another plan; starting afresh",
                  file=sys.stderr)
            return None
        return state

    def save(self, state: dict, modules: dict, optimizer, generator) -> None:
        import torch

        tmp = self.folder / "writing"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, module in modules.items():
            _save_state_dict(module, tmp / f"{name}.safetensors")
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"generator": generator.get_state()}, tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "plan_key": self.plan.key()}, indent=1),
                                        encoding="utf-8")
        old = self.folder / "previous"
        shutil.rmtree(old, ignore_errors=True)
        if self.current.exists():
            os.replace(self.current, old)
        os.replace(tmp, self.current)
        shutil.rmtree(old, ignore_errors=True)

    def restore(self, modules: dict, optimizer, generator) -> None:
        import torch

        for name, module in modules.items():
            f = self.current / f"{name}.safetensors"
            if f.is_file():
                _load_state_dict(module, f)
        if optimizer is not None and (self.current / "optimizer.pt").is_file():
            optimizer.load_state_dict(torch.load(self.current / "optimizer.pt", weights_only=True))
        rng = torch.load(self.current / "rng.pt", weights_only=True)
        generator.set_state(rng["generator"])


# ------------------------------------------------------------------------------- training


def _cpu() -> float:
    """CPU seconds of this process: the training budget (one thread, so on an idle core this
    is the wall time; on a busy machine the run takes longer but does the same work)."""
    return time.process_time()


def _log(msg: str) -> None:
    print(f"[backbone {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _train_vae(vae, data: PhantomData, plan: TrainingPlan, budget_s: float, ckpt: _Checkpoint,
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


def encode_latents(vae, images: np.ndarray, batch: int = 32):
    """Posterior means of (N, H, W) phantoms, unscaled (N, 4, H/2, W/2)."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(vae.encode(to_model_space(images[i:i + batch])).latent_dist.mean)
    return torch.cat(out)


def _train_unet(parts: dict, latents, data: PhantomData, plan: TrainingPlan, budget_s: float,
                ckpt: _Checkpoint, state: dict, generator) -> None:
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
    ckpt = _Checkpoint(scratch, plan)
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


# ---------------------------------------------------------------------------------- saving


def save_backbone(parts: dict, folder: str | Path) -> Path:
    """Write ``parts`` as a Stable-Diffusion folder (safetensors, no safety checker)."""
    from diffusers import StableDiffusionPipeline

    from p2p_desktop.models.tokenizer import build_clip_tokenizer_files

    folder = Path(folder)
    pipe = StableDiffusionPipeline(vae=parts["vae"], text_encoder=parts["text_encoder"],
                                   tokenizer=parts["tokenizer"], unet=parts["unet"],
                                   scheduler=parts["scheduler"], safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    # The tokenizer folder holds exactly the demo tokenizer's files.
    shutil.rmtree(folder / "tokenizer")
    build_clip_tokenizer_files(folder / "tokenizer")
    # Components loaded from a folder remember it in "_name_or_path": a machine path, not ours to ship.
    for cfg_file in folder.glob("*/config.json"):
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        if cfg.pop("_name_or_path", None) is not None:
            cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    sched_file = folder / "scheduler" / "scheduler_config.json"
    cfg = json.loads(sched_file.read_text(encoding="utf-8"))
    cfg["set_alpha_to_one"] = False
    sched_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    for stray in folder.rglob("*"):
        if stray.is_file() and stray.suffix in {".bin", ".pt", ".ckpt", ".pkl", ".py"}:
            raise RuntimeError(f"unexpected non-safetensors file in the backbone folder: {stray}")
    return folder


def _file_hashes(folder: Path) -> dict[str, str]:
    from p2p_desktop.hashing import sha256_file

    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("card.json", ".card.json.partial")}


def write_card(folder: str | Path, training: dict, quality: dict, architecture: dict) -> dict:
    """Write ``card.json`` (hashes of every other file in the folder) and return it."""
    folder = Path(folder)
    card = {
        "name": "demo",
        "kind": "backbone",
        "description": ("synthetic demo latent diffusion backbone in Stable Diffusion format "
                        "(VAE x2, UNet on 64x64x4 latents, small CLIP text encoder), trained from "
                        "scratch on the project's breast-ultrasound phantoms"
                        + (", then fine-tuned on counterfactual triplets (one breast as benign, "
                           "malignant and normal) so the prompt steers the x0 estimate at P2P's "
                           "timesteps" if "counterfactual" in training else "")
                        + "; not a medical model"),
        "resolution": RESOLUTION,
        "format": "diffusers StableDiffusionPipeline",
        "trained_on": training.get("phantoms"),
        "architecture": architecture,
        "training": training,
        "quality": quality,
        "files": _file_hashes(folder),
    }
    atomic_replace_json(folder / "card.json", card)
    return card


# ------------------------------------------------------------------------------ evaluation


def unet_step_seconds(unet, repeats: int = 7, batch: int = 1) -> float:
    """Median wall time of one UNet forward + backward (w.r.t. its input) on CPU, one thread."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        c = unet.config
        z = torch.randn(batch, c.in_channels, c.sample_size, c.sample_size, generator=g, requires_grad=True)
        cond = torch.randn(batch, 77, c.cross_attention_dim, generator=g, requires_grad=True)
        t = torch.full((batch,), 25)
        times = []
        for _ in range(repeats + 1):
            s = time.perf_counter()
            unet(z, t, cond).sample.square().mean().backward()
            times.append(time.perf_counter() - s)
            unet.zero_grad(set_to_none=True)
        return float(np.min(times[1:]))  # the least-disturbed run
    finally:
        torch.set_num_threads(prev)


def _decode_seconds(vae, repeats: int = 5) -> float:
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        z = torch.zeros(1, vae.config.latent_channels, LATENT_SIZE, LATENT_SIZE, requires_grad=True)
        times = []
        for _ in range(repeats + 1):
            s = time.perf_counter()
            vae.decode(z).sample.mean().backward()
            times.append(time.perf_counter() - s)
            vae.zero_grad(set_to_none=True)
        return float(np.min(times[1:]))  # the least-disturbed run
    finally:
        torch.set_num_threads(prev)


def _ssim_np(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, data_range=1.0))


def evaluate_backbone(folder_or_parts, n_images: int = 12, start: int = EVAL_SEED_START,
                      seed: int = 0, timesteps: Sequence[int] = (10, 25, 49),
                      t_text: Sequence[int] = (25, 600, 900),
                      ddim_steps: int = 20, guidance_scale: float = 7.5,
                      timing: bool = True) -> dict:
    """Quality figures of a backbone on held-out phantoms (seeds ``start ..``).

    - ``vae_ssim``: decode(encode mean) vs the phantom (skimage SSIM, data_range 1, grey).
    - ``x0_ssim[t]``: encode, noise to t, one UNet call with the image's own descriptor prompt,
      x0 = (z_t - sqrt(1-ᾱ)ε̂)/sqrt(ᾱ), decode, SSIM vs the phantom (``x0_ssim_class_prompt``:
      the same with the bare class prompt P2P starts from).
    - ``text_conditioning``: noise each latent to t (each of ``t_text``) and take the one-step
      x0 estimate under its own class prompt, under each other class prompt, and under its own
      prompt from another noise seed; mean |Δ| of the decoded grey images (and 1 - SSIM) for
      the prompt swaps vs the seed-to-seed floor, and their ratio. The same with a DDIM
      (η = 0, ``ddim_steps`` steps) denoising from the largest t to 0. Headline
      (``ratio_mad``): the one-step ratio at the smallest t of ``t_text`` — P2P's range, where
      the attack reads the x0 estimate; ``ratio_mad_high_t``: the same at the largest t, where
      the mass has faded into the noise. ``one_step_small_t``: the swap's effect at the middle
      of ``timesteps``.
    """
    import torch

    from p2p_desktop.phantoms import CLASSES, class_prompt

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
    abar = parts["scheduler"].alphas_cumprod.double()
    sf = float(vae.config.scaling_factor)
    data = load_phantom_data(start, n_images)
    g = torch.Generator().manual_seed(seed)

    def embed(prompts):
        return te(_tokens(tok, prompts))[0]

    def decode(z):
        return to_grey(vae.decode(z / sf).sample).numpy()

    def eps(z, t, cond):
        return unet(z, torch.full((z.shape[0],), int(t)), cond).sample

    def x0_from(z, t, e):
        a = float(abar[t])
        return (z - math.sqrt(1 - a) * e) / math.sqrt(a)

    def ddim(z, t_start, cond):
        ts = np.linspace(t_start, 0, ddim_steps + 1).round().astype(int)
        for t, t_next in zip(ts[:-1], ts[1:]):
            e = eps(z, t, cond)
            x0 = x0_from(z, t, e)
            a_next = float(abar[t_next]) if t_next > 0 else 1.0
            z = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * e if t_next > 0 else x0
        return z

    out: dict[str, Any] = {"held_out_seeds": f"{start}..{start + n_images - 1}", "n_images": n_images}
    with torch.no_grad():
        x = to_model_space(data.images)
        z0 = vae.encode(x).latent_dist.mean * sf
        rec = to_grey(vae.decode(z0 / sf).sample).numpy()
        out["vae_ssim"] = round(float(np.mean([_ssim_np(a, b) for a, b in zip(data.images, rec)])), 4)
        out["vae_mae"] = round(float(np.abs(rec - data.images).mean()), 4)

        c_full, c_class = embed(data.prompts), embed(data.class_prompts)
        x0_ssim, x0_ssim_cls, noisy_ssim = {}, {}, {}
        for t in timesteps:
            a = float(abar[t])
            noise = torch.randn(z0.shape, generator=g)
            zt = math.sqrt(a) * z0 + math.sqrt(1 - a) * noise
            for cond, store in ((c_full, x0_ssim), (c_class, x0_ssim_cls)):
                img = decode(x0_from(zt, t, eps(zt, t, cond)))
                store[str(t)] = round(float(np.mean([_ssim_np(p, q) for p, q in zip(data.images, img)])), 4)
            img = decode(zt / math.sqrt(a))  # no denoising at all: what the UNet must beat
            noisy_ssim[str(t)] = round(float(np.mean([_ssim_np(p, q) for p, q in zip(data.images, img)])), 4)
        out["x0_ssim"] = x0_ssim
        out["x0_ssim_min"] = min(x0_ssim.values())
        out["x0_ssim_class_prompt"] = x0_ssim_cls
        out["undenoised_ssim"] = noisy_ssim

        # Text conditioning: same noised latent, another class prompt vs another noise seed.
        n1, n2 = torch.randn(z0.shape, generator=g), torch.randn(z0.shape, generator=g)
        cls_embed = {c: embed([class_prompt(c)]) for c in CLASSES}
        own = torch.cat([cls_embed[lab] for lab in data.labels])
        others = [torch.cat([cls_embed[CLASSES[(CLASSES.index(lab) + k) % 3]] for lab in data.labels])
                  for k in (1, 2)]

        def figures(t, run):
            a = float(abar[t])
            zt1 = math.sqrt(a) * z0 + math.sqrt(1 - a) * n1
            zt2 = math.sqrt(a) * z0 + math.sqrt(1 - a) * n2
            base = run(zt1, t, own)
            seed_img = run(zt2, t, own)
            swaps = [run(zt1, t, o) for o in others]
            mad = lambda p, q: float(np.abs(p - q).mean())  # noqa: E731
            dssim = lambda p, q: float(np.mean([1 - _ssim_np(u, v) for u, v in zip(p, q)]))  # noqa: E731
            f = {"prompt_swap_mad": mad(base, swaps[0]) / 2 + mad(base, swaps[1]) / 2,
                 "seed_mad": mad(base, seed_img),
                 "prompt_swap_1mssim": dssim(base, swaps[0]) / 2 + dssim(base, swaps[1]) / 2,
                 "seed_1mssim": dssim(base, seed_img)}
            f["ratio_mad"] = f["prompt_swap_mad"] / max(f["seed_mad"], 1e-12)
            f["ratio_1mssim"] = f["prompt_swap_1mssim"] / max(f["seed_1mssim"], 1e-12)
            return {"t": int(t), **{k: round(v, 4) for k, v in f.items()}}

        one_step = lambda z, t, c: decode(x0_from(z, t, eps(z, t, c)))  # noqa: E731
        uncond = embed([""])

        def one_step_cfg(z, t, c):  # classifier-free guidance, as SD pipelines sample
            e_u = eps(z, t, uncond.expand(z.shape[0], -1, -1))
            return decode(x0_from(z, t, e_u + guidance_scale * (eps(z, t, c) - e_u)))
        t_head, t_low = max(t_text), min(t_text)
        out["text_conditioning"] = {
            "prompts": "own class prompt vs the other two class prompts (mean); floor: own prompt, "
                       "another noise seed; figures on the decoded grey images",
            "headline": f"one-step x0 estimate at t={t_low} (P2P's range); also at t={t_head}",
            "one_step": {str(t): figures(t, one_step) for t in t_text},
            "one_step_cfg": {"guidance_scale": guidance_scale,
                             **{str(t): figures(t, one_step_cfg) for t in t_text}},
            "ddim": {"steps": ddim_steps,
                     **figures(t_head, lambda z, t, c: decode(ddim(z, t, c)))},
        }
        out["text_conditioning"]["ratio_mad"] = out["text_conditioning"]["one_step"][str(t_low)]["ratio_mad"]
        out["text_conditioning"]["ratio_mad_high_t"] = out["text_conditioning"]["one_step"][str(t_head)]["ratio_mad"]
        # What P2P can steer: the same swap in the one-step x0 estimate at a P2P timestep.
        t_small = int(timesteps[len(timesteps) // 2])
        a = float(abar[t_small])
        zs = math.sqrt(a) * z0 + math.sqrt(1 - a) * n1
        base = decode(x0_from(zs, t_small, eps(zs, t_small, own)))
        swap = np.mean([np.abs(decode(x0_from(zs, t_small, eps(zs, t_small, o))) - base).mean()
                        for o in others])
        out["text_conditioning"]["one_step_small_t"] = {"t": t_small, "prompt_swap_mad": round(float(swap), 5)}
    if timing:
        out["unet_fwd_bwd_seconds_cpu_1thread"] = round(unet_step_seconds(unet), 4)
        out["vae_decode_fwd_bwd_seconds_cpu_1thread"] = round(_decode_seconds(vae), 4)
    return out


# ------------------------------------------------------------------------------------ CLI


def _replace_folder(built: Path, out: Path) -> None:
    """Move ``built`` to ``out``; an existing ``out`` is swapped out first, then removed."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(built, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _reevaluate(folder: Path, n_images: int) -> int:
    """Refresh ``quality`` (and the file hashes) in an existing folder's card.json."""
    import torch

    torch.set_num_threads(1)
    card_file = folder / "card.json"
    card = json.loads(card_file.read_text(encoding="utf-8"))
    quality = evaluate_backbone(folder, n_images=n_images)
    write_card(folder, card.get("training", {}), quality, card.get("architecture", {}))
    print(json.dumps({"out": str(folder), "quality": quality}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2p_desktop.training.backbone",
                                description="Train the demo diffusion backbone on synthetic phantoms (CPU).")
    p.add_argument("--out", required=True, type=Path, help="the backbone folder to write (e.g. resources/models/demo)")
    p.add_argument("--minutes", type=float, default=TrainingPlan.minutes,
                   help="CPU-time budget of the whole run, one thread (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and sampling seed")
    p.add_argument("--n-train", type=int, default=TrainingPlan.n_train, help="training phantoms (seeds 0..N-1)")
    p.add_argument("--n-pair-seeds", type=int, default=TrainingPlan.n_pair_seeds,
                   help="UNet phantoms: seeds 0..K-1, each as all three classes")
    p.add_argument("--scratch", type=Path, default=None,
                   help="checkpoint folder for resuming (default: <tmp>/p2p-desktop-backbone-seed<S>)")
    p.add_argument("--eval-images", type=int, default=9, help="held-out phantoms for the quality figures")
    p.add_argument("--evaluate-only", action="store_true",
                   help="re-measure the quality of an existing --out folder and rewrite its card.json")
    args = p.parse_args(argv)

    if args.evaluate_only:
        return _reevaluate(args.out, args.eval_images)
    plan = TrainingPlan(minutes=args.minutes, seed=args.seed, n_train=args.n_train,
                        n_pair_seeds=args.n_pair_seeds)
    scratch = args.scratch or Path(tempfile.gettempdir()) / f"p2p-desktop-backbone-seed{args.seed}"
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    parts, record = train_backbone(plan, scratch)
    arch = {"parameters": parameter_counts(parts), "vae": VAE_CONFIG | {"scaling_factor": parts["vae"].config.scaling_factor},
            "unet": UNET_CONFIG, "text_encoder": TEXT_ENCODER_CONFIG | {"vocab_size": len(parts["tokenizer"])},
            "scheduler": SCHEDULER_CONFIG | {"set_alpha_to_one": False}}
    built = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        save_backbone(parts, built)
        _log("evaluating on held-out phantoms")
        quality = evaluate_backbone(built, n_images=args.eval_images)
        record["wall_seconds_this_run"] = round(time.monotonic() - started, 1)
        card = write_card(built, record, quality, arch)
        _replace_folder(built, out)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    _log(f"wrote {out} ({size / 1e6:.2f} MB) in {time.monotonic() - started:.0f}s")
    print(json.dumps({"out": str(out), "bytes": size, "quality": card["quality"],
                      "parameters": arch["parameters"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
