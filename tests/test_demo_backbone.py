"""The embedded demo backbone (resources/models/demo) is a genuine, intact SD-format folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from p2p_desktop.paths import models_dir

DEMO = models_dir() / "demo"
CLASS_WORDS = ("benign", "malignant", "normal", "no", "tumor", "breast", "ultrasound")


def _require_demo() -> Path:
    if not (DEMO / "card.json").is_file():
        pytest.skip(f"demo backbone not built yet ({DEMO}); run python -m p2p_desktop.training.backbone")
    return DEMO


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((_require_demo() / "card.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pipe():
    import os

    folder = _require_demo()
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")}
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    try:
        from diffusers import StableDiffusionPipeline

        yield StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_folder_has_sd_layout_and_safetensors_only():
    folder = _require_demo()
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["requires_safety_checker"] is False
    assert not any(index["safety_checker"]) and not any(index["feature_extractor"])
    for sub, cls in (("vae", "AutoencoderKL"), ("unet", "UNet2DConditionModel"),
                     ("text_encoder", "CLIPTextModel"), ("tokenizer", "CLIPTokenizer"),
                     ("scheduler", "DDPMScheduler")):
        assert index[sub][1] == cls
        assert (folder / sub).is_dir()
    for sub in ("vae", "unet", "text_encoder"):
        assert list((folder / sub).glob("*.safetensors")), sub
    bad = [p for p in folder.rglob("*") if p.suffix in {".bin", ".ckpt", ".pt", ".pth", ".pkl", ".py"}]
    assert not bad
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 25 * 1024 * 1024


def test_card_hashes_cover_every_file(card):
    from p2p_desktop.hashing import sha256_file

    folder = _require_demo()
    assert card["name"] == "demo" and card["kind"] == "backbone" and card["resolution"] == 128
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*")
               if p.is_file() and p.name != "card.json"}
    assert set(card["files"]) == on_disk
    for rel, digest in card["files"].items():
        assert sha256_file(folder / rel) == digest, rel


def test_card_quality_meets_targets(card):
    q = card["quality"]
    assert q["vae_ssim"] >= 0.85
    assert q["x0_ssim_min"] >= 0.8


def test_card_prompt_steers_appearance_not_the_class(card):
    """The card's figures (issue 13): at t = 25 an appearance prompt moves the x0 estimate at least
    twice the seed floor, a class-word swap far less than the floor; no cross-class phase in training."""
    ac = card["quality"]["appearance_conditioning"]
    assert ac["t"] == 25
    assert ac["appearance_ratio"] >= 2.0, ac
    assert ac["class_swap_ratio"] <= 0.5, ac
    assert ac["toward_variant"] >= 0.8, ac
    assert "counterfactual" not in card["training"]
    assert card["training"]["appearance"]["cross_class_targets"] == 0


def test_prompt_steers_appearance_not_the_class_on_test_phantoms(pipe):
    """Live, on test-range phantoms (never trained on, not the card's seeds): the same measure as the card."""
    from p2p_desktop.training.appearance_eval import appearance_conditioning
    from p2p_desktop.training.backbone import TEST_SEED_START

    parts = {"vae": pipe.vae, "unet": pipe.unet, "text_encoder": pipe.text_encoder, "tokenizer": pipe.tokenizer,
             "scheduler": pipe.scheduler}
    ac = appearance_conditioning(parts, n_images=3, start=TEST_SEED_START + 10)  # one phantom per class
    assert ac["appearance_ratio"] >= 2.0, ac
    assert ac["class_swap_ratio"] <= 0.5, ac


def test_pipeline_loads_offline_with_sd_components(pipe):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    assert isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.unet, UNet2DConditionModel)
    assert isinstance(pipe.text_encoder, CLIPTextModel)
    assert isinstance(pipe.tokenizer, CLIPTokenizer)
    assert isinstance(pipe.scheduler, DDPMScheduler)
    assert pipe.safety_checker is None
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert pipe.unet.config.in_channels == pipe.vae.config.latent_channels == 4
    assert pipe.unet.config.sample_size * 2 == pipe.vae.config.sample_size == 128
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer)
    assert pipe.vae.config.scaling_factor != 1.0


def test_scheduler_is_sd15_scaled_linear(pipe):
    cfg = pipe.scheduler.config
    assert cfg.num_train_timesteps == 1000
    assert cfg.beta_schedule == "scaled_linear"
    assert cfg.beta_start == pytest.approx(0.00085) and cfg.beta_end == pytest.approx(0.012)
    assert cfg.prediction_type == "epsilon" and cfg.clip_sample is False and cfg.steps_offset == 1
    raw = json.loads((DEMO / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    assert raw["set_alpha_to_one"] is False
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    assert np.allclose(pipe.scheduler.betas.numpy(), betas, atol=1e-7)


def test_tokenizer_one_token_per_class_word(pipe):
    tok = pipe.tokenizer
    for word in CLASS_WORDS:
        ids = tok(word).input_ids
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert len(ids) == 3, (word, tok.tokenize(word))
    ids = tok("ultrasound image of benign tumor in breast").input_ids
    assert len(ids) == 2 + 7


def test_vae_round_trip_on_held_out_phantoms(pipe):
    import torch
    from skimage.metrics import structural_similarity

    from p2p_desktop.phantoms import generate_phantom
    from p2p_desktop.training.backbone import TEST_SEED_START, to_grey, to_model_space

    phantoms = [generate_phantom(TEST_SEED_START + i) for i in range(2)]
    images = np.stack([p.image for p in phantoms])
    with torch.no_grad():
        post = pipe.vae.encode(to_model_space(images)).latent_dist
        rec = to_grey(pipe.vae.decode(post.mean).sample).numpy()
    for a, b in zip(images, rec):
        assert structural_similarity(a, b, data_range=1.0) >= 0.8
