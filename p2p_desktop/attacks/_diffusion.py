"""Shared latent-diffusion steps of the diffusion attacks (P2P, Diff-PGD).

All functions take a :class:`~p2p_desktop.models.backbone.Backbone` and plain tensors;
they are differentiable unless called under ``torch.no_grad``. Images are (B, C, H, W) in
[0, 1]; latents are in the UNet's scaled space ``z = (E(2x-1) - shift) * scale``; timesteps
index the backbone's 1000-step DDPM schedule (ᾱ_t = ``alphas_cumprod[t]``).
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

from p2p_desktop.attacks.base import Attack, AttackContext, AttackOutput
from p2p_desktop.config import param
from p2p_desktop.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from p2p_desktop.models.backbone import Backbone

__all__ = ["DiffusionAttack", "resolution_param", "dtype_param", "low_memory_param", "check_resolution", "resize",
           "resize_to", "to_source_geometry", "working_resolution", "backbone_in", "low_memory", "precision_name",
           "to_rgb", "to_channels", "autocast", "encode", "add_noise", "unet_x0_eps", "decode", "tokenize",
           "text_embeddings", "ddim_timesteps", "sdedit_latent", "sdedit"]


# -- what every diffusion attack shares: config fields, their check, and the run wrapper ----------
# Fields are shared as field factories, not a base dataclass, so that each attack's fields keep
# their order (forms, --help, provenance).
def resolution_param() -> Any:
    """The ``resolution`` config field: working side in pixels, a multiple of 8, 0 = native."""
    return param(0, min=0, max=4096,
                 help="Working resolution in pixels, a multiple of 8 (0 = the backbone's native size; paper: 224).")


def dtype_param() -> Any:
    """The ``dtype`` config field: the precision of the diffusion backbone."""
    return param("auto", choices=("auto", "fp32", "fp16", "bf16"),
                 help="Precision of the diffusion backbone (auto: fp16 on CUDA, fp32 elsewhere; paper: fp32).")


def low_memory_param() -> Any:
    """The ``low_memory`` config field: gradient checkpointing and VAE slicing."""
    return param(False, advanced=True,
                 help="Gradient checkpointing of the UNet and VAE decoder and VAE slicing (less memory, "
                      "slower); the out-of-memory retry turns it on.")


def check_resolution(attack: str, resolution: int) -> None:
    """Refuse a working resolution that is not a multiple of 8 (the VAE halves it three times)."""
    if resolution and resolution % 8:
        raise InputError(f"{attack}.resolution: {resolution} is not a multiple of 8 (0 = native)")


class DiffusionAttack(Attack):
    """An attack through a latent diffusion backbone: ``run`` checks there is one, puts it in the
    configured precision and memory mode, and calls ``_run(x, ctx, backbone)``."""

    requires_backbone = True

    def run(self, x: torch.Tensor, ctx: AttackContext) -> AttackOutput:
        cfg = self.config
        if ctx.backbone is None:
            raise InputError(f"{self.name} needs a diffusion backbone (--backbone demo or a Stable Diffusion folder)")
        bb = backbone_in(ctx.backbone, cfg.dtype)
        with low_memory(bb, cfg.low_memory):
            return self._run(x, ctx, bb)

    @abstractmethod
    def _run(self, x: torch.Tensor, ctx: AttackContext, bb: Backbone) -> AttackOutput:
        """The attack itself, on the prepared backbone ``bb``."""


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size), bilinear with antialiasing when shrinking."""
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == (size, size):
        return x
    shrink = x.shape[-2] > size or x.shape[-1] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def resize_to(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, H, W), bilinear with antialiasing when shrinking (differentiable)."""
    import torch.nn.functional as F

    hw = (int(hw[0]), int(hw[1]))
    if tuple(x.shape[-2:]) == hw:
        return x
    shrink = x.shape[-2] > hw[0] or x.shape[-1] > hw[1]
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=shrink)


def to_source_geometry(adv: torch.Tensor, x_src: torch.Tensor, output: str = "residual",
                       x_small: torch.Tensor | None = None) -> torch.Tensor:
    """An attack output brought to the source's (B, C, H, W) geometry, as the runner writes it
    (differentiable; the one mapping the runner and the attacks' losses share).

    Channels first follow the source (RGB -> grey by mean, grey -> RGB repeated). Output mode
    ``decoded`` resizes the output itself (nothing of the source is put back, as the authors save
    it); ``residual`` keeps the source's detail: the source plus the upsampled change
    ``adv − x_small``, where ``x_small`` is the source at ``adv``'s size (computed, antialiased,
    when not given). At equal sizes the output itself, clamped to [0, 1].
    """
    import torch.nn.functional as F

    if adv.shape[1] != x_src.shape[1]:
        adv = adv.mean(dim=1, keepdim=True) if x_src.shape[1] == 1 else adv.expand(-1, x_src.shape[1], -1, -1)
    if tuple(adv.shape[-2:]) == tuple(x_src.shape[-2:]):
        return adv.clamp(0, 1)
    if output == "decoded":
        return resize_to(adv, tuple(x_src.shape[-2:])).clamp(0, 1)
    if x_small is None:
        x_small = F.interpolate(x_src, size=tuple(adv.shape[-2:]), mode="bilinear", align_corners=False,
                                antialias=True)
    delta = F.interpolate(adv - x_small, size=tuple(x_src.shape[-2:]), mode="bilinear", align_corners=False)
    return (x_src + delta).clamp(0, 1)


def working_resolution(bb: Backbone, resolution: int, attack: str) -> int:
    """The working side in pixels: ``resolution`` (a multiple of 8 that the VAE and UNet accept) or,
    when 0, the backbone's native size."""
    from p2p_desktop.errors import InputError

    if not resolution:
        return int(bb.resolution)
    r = int(resolution)
    if r % 8 or r < 8:
        raise InputError(f"{attack}.resolution: {r} is not a positive multiple of 8")
    if r % bb.vae_factor or (r // bb.vae_factor) < 2:
        raise InputError(f"{attack}.resolution: {r} px does not fit the backbone's VAE (downsampling x{bb.vae_factor})")
    return r


_PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def precision_name(dtype) -> str:
    """torch.float16 -> 'fp16' (the name the CLI, reports and provenance use)."""
    s = str(dtype).removeprefix("torch.")
    return next((k for k, v in _PRECISIONS.items() if v == s), s)


def backbone_in(bb: Backbone, dtype: str) -> Backbone:
    """``bb`` in the precision ``dtype`` ('auto' keeps it): the same folder reloaded from the backbone
    cache (same device), or ``bb`` itself when it already runs in that precision."""
    from p2p_desktop.device import check_dtype

    if not dtype or dtype == "auto":
        return bb
    check_dtype(str(bb.device), dtype)
    if precision_name(bb.dtype) == dtype:
        return bb
    import copy

    import torch

    key = (id(bb), dtype)
    other = _variants.get(key)
    if other is None:
        target = getattr(torch, _PRECISIONS[dtype])
        other = copy.copy(bb)
        other.unet = copy.deepcopy(bb.unet).to(dtype=target)
        other.text_encoder = copy.deepcopy(bb.text_encoder).to(dtype=target)
        vae_dtype = torch.float32 if (target == torch.float16 and _force_upcast(bb)) else target
        other.vae = copy.deepcopy(bb.vae).to(dtype=vae_dtype)
        other.dtype = target
        _variants.clear()  # keep at most one extra copy of a backbone in memory
        _variants[key] = other
    return other


_variants: dict = {}


def _force_upcast(bb: Backbone) -> bool:
    return bool(getattr(bb.vae.config, "force_upcast", False))


def _vae_dtype(bb: Backbone):
    return next(bb.vae.parameters()).dtype


@contextlib.contextmanager
def low_memory(bb: Backbone, enabled: bool = True):
    """Gradient checkpointing of the UNet and the VAE decoder and VAE slicing, where diffusers offers
    them, for the duration of the block (the shared backbone is restored afterwards).

    Attention already runs through PyTorch's scaled_dot_product_attention (diffusers' default
    processor). VAE tiling is not used: it only splits images larger than the VAE's own sample
    size, and the attacks work at or below the backbone's native resolution."""
    if not enabled:
        yield
        return
    done = []
    for module in (bb.unet, bb.vae):
        if getattr(module, "_supports_gradient_checkpointing", False) and not getattr(
                module, "is_gradient_checkpointing", False):
            module.enable_gradient_checkpointing()
            done.append(module)
    if hasattr(bb.vae, "enable_slicing"):
        bb.vae.enable_slicing()
    try:
        yield
    finally:
        for module in done:
            module.disable_gradient_checkpointing()
        if hasattr(bb.vae, "disable_slicing"):
            bb.vae.disable_slicing()


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Grey (B, 1, H, W) -> (B, 3, H, W); RGB unchanged."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB -> grey by channel mean when ``channels`` is 1."""
    return x.mean(dim=1, keepdim=True) if channels == 1 and x.shape[1] != 1 else x


def autocast(bb: Backbone):
    """Mixed precision when the backbone runs in fp16/bf16; a no-op context in fp32."""
    import torch

    if bb.dtype == torch.float32:
        return contextlib.nullcontext()
    device_type = str(bb.device).split(":")[0]
    return torch.autocast(device_type=device_type, dtype=bb.dtype)


def _vae_context(bb: Backbone):
    """The VAE runs in its own precision: fp32 when its config asks for ``force_upcast`` in fp16."""
    import torch

    if _vae_dtype(bb) == torch.float32 and bb.dtype != torch.float32:
        return torch.autocast(device_type=str(bb.device).split(":")[0], enabled=False)
    return contextlib.nullcontext()


def encode(bb: Backbone, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0,1] (any channels) -> (mean, std) of the scaled latent posterior."""
    import torch

    img = to_rgb(x).to(bb.device, _vae_dtype(bb)) * 2 - 1
    with _vae_context(bb):
        dist = bb.vae.encode(img).latent_dist
    mean = (dist.mean.float() - bb.shift_factor) * bb.scaling_factor
    std = dist.std.float() * bb.scaling_factor
    return mean, torch.nan_to_num(std)


def add_noise(bb: Backbone, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward process: z_t = sqrt(ᾱ_t)·z0 + sqrt(1-ᾱ_t)·noise, for a (B,) long tensor ``t``."""
    abar = bb.alphas_cumprod[t].view(-1, 1, 1, 1)
    return abar.sqrt() * z0 + (1 - abar).sqrt() * noise


def unet_x0_eps(bb: Backbone, z_t: torch.Tensor, t: torch.Tensor,
                emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One UNet call -> (one-step estimate ẑ0, predicted noise ε̂), for ε- or v-prediction models."""
    out = bb.unet(z_t.to(bb.dtype), t, encoder_hidden_states=emb.to(bb.dtype), return_dict=False)[0].float()
    abar = bb.alphas_cumprod[t].view(-1, 1, 1, 1)
    a, s = abar.sqrt(), (1 - abar).sqrt()
    if bb.prediction_type == "v_prediction":
        return a * z_t - s * out, a * out + s * z_t
    return (z_t - s * out) / a, out


def decode(bb: Backbone, z: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> RGB images in [0, 1] (float32)."""
    with _vae_context(bb):
        img = bb.vae.decode((z / bb.scaling_factor + bb.shift_factor).to(_vae_dtype(bb)), return_dict=False)[0]
    return ((img.float() + 1) / 2).clamp(0, 1)


def tokenize(bb: Backbone, text: str) -> torch.Tensor:
    """A prompt -> (1, L) token ids padded to the tokenizer's maximum length."""
    tok = bb.tokenizer
    ids = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    return ids.to(bb.device)


def text_embeddings(bb: Backbone, text: str) -> torch.Tensor:
    """A prompt -> (1, L, D) last hidden states of the frozen text encoder."""
    return bb.text_encoder(tokenize(bb, text), return_dict=False)[0]


def ddim_timesteps(t_start: int, steps: int) -> list[int]:
    """Evenly spaced DDIM timesteps from ``t_start`` down to 0 inclusive: ``steps`` intervals, one UNet
    call per timestep (ddim50 with t = 3: 60, 40, 20, 0 — four calls, as Diff-PGD's authors run it)."""
    steps = max(1, min(int(steps), int(t_start)))
    return [int(round(t_start - i * t_start / steps)) for i in range(steps + 1)]


def sdedit_latent(bb: Backbone, z0: torch.Tensor, noise: torch.Tensor, t_start: int, steps: int,
                  emb: torch.Tensor) -> torch.Tensor:
    """SDEdit in latent space: noise z0 to ``t_start``, then deterministic DDIM (η=0) through every
    timestep down to t = 0; the clean estimate at t = 0 is the result."""
    import torch

    ts = ddim_timesteps(t_start, steps)
    B = z0.shape[0]
    z = add_noise(bb, z0, torch.full((B,), ts[0], device=z0.device, dtype=torch.long), noise)
    emb = emb.expand(B, -1, -1)
    for i, t in enumerate(ts):
        tt = torch.full((B,), t, device=z0.device, dtype=torch.long)
        x0, eps = unet_x0_eps(bb, z, tt, emb)
        if i + 1 == len(ts):
            z = x0  # last step: the clean estimate (ᾱ_prev = 1)
        else:
            abar_prev = bb.alphas_cumprod[ts[i + 1]]
            z = abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps
    return z


def sdedit(bb: Backbone, x: torch.Tensor, noise: torch.Tensor, t_start: int, steps: int,
           emb: torch.Tensor) -> torch.Tensor:
    """Purify images in [0,1]: encode (posterior mean) -> SDEdit -> decode, in the input's channels."""
    z0, _ = encode(bb, x)
    z = sdedit_latent(bb, z0, noise, t_start, steps, emb)
    return to_channels(decode(bb, z), x.shape[1])
