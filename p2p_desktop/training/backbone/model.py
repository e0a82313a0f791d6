"""The demo backbone's components: Stable Diffusion's classes at CPU size (see the package
docstring for the architecture), built fresh and seeded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["RESOLUTION", "LATENT_SIZE", "VAE_CONFIG", "UNET_CONFIG", "TEXT_ENCODER_CONFIG", "SCHEDULER_CONFIG",
           "build_components", "parameter_counts"]

RESOLUTION = 128
LATENT_SIZE = 64

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
    """Number of parameters of the VAE, UNet and text encoder."""
    return {name: int(sum(p.numel() for p in components[name].parameters()))
            for name in ("vae", "unet", "text_encoder")}


def _tokens(tokenizer, prompts: Sequence[str]):
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids
