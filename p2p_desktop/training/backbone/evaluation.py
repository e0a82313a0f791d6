"""Quality figures of a backbone on held-out phantoms, and its CPU cost per step."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from p2p_desktop.training.backbone.data import (
    EVAL_SEED_START,
    load_phantom_data,
    to_grey,
    to_model_space,
)
from p2p_desktop.training.backbone.model import LATENT_SIZE, _tokens

__all__ = ["evaluate_backbone", "unet_step_seconds", "load_parts"]


def load_parts(folder: str | Path) -> dict:
    """The components of a backbone folder (local files only), by name."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    return {"vae": pipe.vae, "unet": pipe.unet, "text_encoder": pipe.text_encoder,
            "tokenizer": pipe.tokenizer, "scheduler": pipe.scheduler}


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

    parts = folder_or_parts if isinstance(folder_or_parts, dict) else load_parts(folder_or_parts)
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
