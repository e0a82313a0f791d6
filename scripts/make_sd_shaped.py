#!/usr/bin/env python3
"""Write a diffusers folder shaped exactly like the public Stable Diffusion 1.5 or 2.1 snapshot,
with random (seeded) weights — to measure and test the full-size path without downloading.

    python scripts/make_sd_shaped.py --preset sd15 --out /tmp/sd15   # ~4.3 GB, 512 px, epsilon
    python scripts/make_sd_shaped.py --preset sd21 --out /tmp/sd21   # ~5.2 GB, 768 px, v-prediction

Shapes: SD 1.5 — UNet block_out_channels 320/640/1280/1280, cross-attention 768, 8 heads;
VAE 128/256/512/512; CLIP ViT-L/14 text encoder (12 layers, 768 wide, vocabulary 49408).
SD 2.1 — the same UNet widths with head dims 5/10/20/20, linear projections, cross-attention
1024; OpenCLIP ViT-H text encoder (23 layers, 1024 wide, GELU, vocabulary 49408); 768 px.
Like the real snapshots the folder carries model_index.json with PNDMScheduler,
``safety_checker`` and ``feature_extractor`` entries, their folders, fp16 variant names are
not written (one precision), and a README/.gitattributes at the top. The tokenizer is the
project's BPE builder padded to CLIP's 49408 entries (CLIP's own vocabulary cannot be
downloaded here), special tokens last as in CLIP. The weights are random: outputs are noise,
costs and memory are those of the real model. Never commit the output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

VOCAB = 49408

PRESETS = {
    "sd15": {
        "resolution": 512, "prediction_type": "epsilon",
        "unet": {"attention_head_dim": 8, "cross_attention_dim": 768, "use_linear_projection": False},
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
                 "hidden_act": "quick_gelu", "projection_dim": 768},
        "readme": "Stable Diffusion v1-5 shaped folder (random weights)",
    },
    "sd21": {
        "resolution": 768, "prediction_type": "v_prediction",
        "unet": {"attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024, "use_linear_projection": True},
        "text": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 23,
                 "hidden_act": "gelu", "projection_dim": 512},
        "readme": "Stable Diffusion 2.1 shaped folder (random weights)",
    },
}


def _json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _tokenizer(out: Path) -> None:
    """The project's CLIP-format BPE tokenizer padded to 49408 entries, specials last (as CLIP's)."""
    from p2p_desktop.models.tokenizer import build_clip_tokenizer_files

    build_clip_tokenizer_files(out)
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    specials = ["<|startoftext|>", "<|endoftext|>"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in specials]
    n = 0
    while len(tokens) < VOCAB - len(specials):
        tokens.append(f"unused{n}</w>")
        n += 1
    tokens += specials
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False),
                                    encoding="utf-8")


def make(preset: str, out: Path, seed: int = 0, log=print) -> Path:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    p = PRESETS[preset]
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"make_sd_shaped: {out} exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    t0 = time.perf_counter()

    _tokenizer(out / "tokenizer")
    _json(out / "scheduler" / "scheduler_config.json", {
        "_class_name": "PNDMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
        "prediction_type": p["prediction_type"], "set_alpha_to_one": False, "skip_prk_steps": True,
        "steps_offset": 1, "trained_betas": None})

    text = CLIPTextModel(CLIPTextConfig(vocab_size=VOCAB, max_position_embeddings=77, bos_token_id=0, eos_token_id=2,
                                        pad_token_id=1, layer_norm_eps=1e-5, **p["text"]))
    text.save_pretrained(out / "text_encoder", safe_serialization=True)
    del text
    log(f"text encoder written ({time.perf_counter() - t0:.0f} s)")

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
                        block_out_channels=(128, 256, 512, 512), sample_size=p["resolution"],
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        act_fn="silu", scaling_factor=0.18215)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    del vae
    log(f"VAE written ({time.perf_counter() - t0:.0f} s)")

    unet = UNet2DConditionModel(
        sample_size=p["resolution"] // 8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), norm_num_groups=32, act_fn="silu",
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1,
        norm_eps=1e-5, **p["unet"])
    unet.save_pretrained(out / "unet", safe_serialization=True)
    del unet
    log(f"UNet written ({time.perf_counter() - t0:.0f} s)")

    # what a real snapshot carries besides the five components
    _json(out / "feature_extractor" / "preprocessor_config.json", {
        "crop_size": 224, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224})
    _json(out / "safety_checker" / "config.json", {
        "_name_or_path": "CompVis/stable-diffusion-safety-checker", "architectures": ["StableDiffusionSafetyChecker"],
        "model_type": "clip", "projection_dim": 768,
        "note": "weights left out of this shaped folder: the project never loads the safety checker"})
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.6.0",
             "feature_extractor": ["transformers", "CLIPImageProcessor"],
             "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
             "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    if preset == "sd21":
        index.update(feature_extractor=[None, None], safety_checker=[None, None], requires_safety_checker=False)
    _json(out / "model_index.json", index)
    (out / "README.md").write_text(f"# {p['readme']}\n\nWritten by scripts/make_sd_shaped.py (seed {seed}).\n",
                                   encoding="utf-8")
    (out / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n", encoding="utf-8")
    log(f"{preset} written to {out} in {time.perf_counter() - t0:.0f} s")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="sd15")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    make(args.preset, args.out, args.seed, log=lambda m: print(m, file=sys.stderr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
