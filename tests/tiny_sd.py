"""Tiny seeded Stable-Diffusion-architecture components for fast tests.

Like diffusers' ``get_dummy_components``: the real classes (AutoencoderKL,
UNet2DConditionModel, CLIPTextModel, CLIPTokenizer, DDPMScheduler) with tiny configs,
seeded with ``torch.manual_seed``. :func:`save_tiny_sd` writes them as an ordinary
diffusers folder (``model_index.json`` + one subfolder per component, safetensors), so
tests go through :func:`p2p_desktop.models.backbone.load_backbone` on a real folder.

The VAE downsamples x2 and the UNet works on 16x16 latents, so the backbone's
resolution is 32 px. :func:`tiny_classifier` is a seeded 3-class CNN wrapped in
:class:`~p2p_desktop.models.classifier.Classifier`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CLASSES", "tiny_sd_components", "save_tiny_sd", "tiny_classifier", "phantom"]

CLASSES = ("benign", "malignant", "normal")


def tiny_sd_components(tokenizer_dir: str | Path, seed: int = 0, prediction_type: str = "epsilon") -> dict:
    """VAE, UNet, text encoder, tokenizer and scheduler with tiny seeded weights."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from p2p_desktop.models.tokenizer import build_clip_tokenizer_files

    build_clip_tokenizer_files(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=8, sample_size=32,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, prediction_type=prediction_type, steps_offset=1,
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "scheduler": scheduler}


def save_tiny_sd(folder: str | Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Write a tiny SD pipeline folder (no safety checker) and return its path."""
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    parts = tiny_sd_components(folder.parent / f"{folder.name}-tokenizer-src", seed, prediction_type)
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def tiny_classifier(seed: int = 0, input_size: int = 32, in_channels: int = 3):
    """A seeded 3-class CNN (benign/malignant/normal) as a frozen Classifier."""
    import torch
    import torch.nn as nn

    from p2p_desktop.models.classifier import Classifier, ModelCard

    torch.manual_seed(seed)
    module = nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, len(CLASSES)),
    )
    card = ModelCard(name="tiny-cnn", architecture="tiny-cnn", classes=CLASSES, weights="none",
                     input_size=input_size, in_channels=in_channels)
    return Classifier(module, card)


def context(clf, bb, seed: int = 0, label: int = 0, target=None, on_step=None):
    """An AttackContext for ``clf`` and the backbone ``bb``, its generator seeded with ``seed``."""
    import torch

    from p2p_desktop.attacks.base import AttackContext

    return AttackContext(classifier=clf, label=label, target=target, backbone=bb, on_step=on_step,
                         generator=torch.Generator().manual_seed(seed))


def phantom(size: int = 32, channels: int = 1, seed: int = 0):
    """A (1, C, size, size) speckled disc in [0,1], like a small ultrasound phantom."""
    import torch

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    disc = ((xx / 0.5) ** 2 + (yy / 0.35) ** 2 < 1).float()
    speckle = torch.rand(size, size, generator=g)
    img = (0.45 + 0.25 * speckle) * (1 - 0.7 * disc)
    return img.clamp(0, 1).expand(1, channels, size, size).clone()
