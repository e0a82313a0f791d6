"""The finished backbone folder: Stable Diffusion's layout (safetensors only), its ``card.json``
(hashes of every other file, training record, architecture, quality), and moving a folder
built beside it into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from p2p_desktop.io.outputs import atomic_replace_json
from p2p_desktop.training.backbone.model import RESOLUTION

__all__ = ["save_backbone", "write_card", "replace_folder", "publish_backbone"]


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
                        + (", then given appearance-only text conditioning (the prompt steers how the "
                           "same finding is imaged: gain, dynamic range, depth attenuation, speckle; "
                           "never another class) at P2P's timesteps" if "appearance" in training else "")
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


def replace_folder(built: Path, out: Path) -> None:
    """Move ``built`` to ``out``; an existing ``out`` is swapped out first, then removed."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(built, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def publish_backbone(parts: dict, out: Path, training: dict, architecture: dict, eval_images: int,
                     before_card: Callable[[dict], None] | None = None) -> dict:
    """Save ``parts`` as a backbone folder built beside ``out``, measure its quality on held-out
    phantoms, write its card (``before_card(training)`` may add to the record first), then move
    it into place; returns the card. On any failure the half-built folder is removed."""
    from p2p_desktop.training.backbone.evaluation import evaluate_backbone
    from p2p_desktop.training.backbone.loops import _log

    built = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        save_backbone(parts, built)
        _log("evaluating on held-out phantoms")
        quality = evaluate_backbone(built, n_images=eval_images)
        if before_card is not None:
            before_card(training)
        card = write_card(built, training, quality, architecture)
        replace_folder(built, out)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return card
