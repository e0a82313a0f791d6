"""load_backbone on real diffusers folders (tiny seeded SD): loading, caching, refusals, offline."""

from __future__ import annotations

import json
import shutil
import socket

import pytest

from p2p_desktop.errors import ModelError, UnsafeFileError
from p2p_desktop.hashing import sha256_file
from p2p_desktop.models.backbone import Backbone, clear_backbone_cache, load_backbone
from tests.tiny_sd import save_tiny_sd


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return save_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd")


@pytest.fixture
def copy_of(sd_folder, tmp_path):
    def make():
        dst = tmp_path / "copy"
        shutil.copytree(sd_folder, dst)
        return dst
    return make


def test_loads_a_diffusers_folder_frozen(sd_folder):
    import torch

    bb = load_backbone(sd_folder, device="cpu")
    assert isinstance(bb, Backbone)
    assert bb.resolution == 32  # 16 latent px x VAE factor 2
    assert bb.prediction_type == "epsilon"
    assert bb.dtype == torch.float32 and bb.device == "cpu"
    assert bb.scaling_factor == pytest.approx(0.18215)
    assert type(bb.scheduler).__name__ == "DDPMScheduler"
    for module in (bb.vae, bb.unet, bb.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    ident = bb.identity()
    assert set(ident) == {"name", "path", "sha256", "prediction_type", "resolution"}
    assert len(ident["sha256"]) == 64 and ident["resolution"] == 32


def test_cache_returns_the_same_object(sd_folder):
    a = load_backbone(sd_folder, device="cpu")
    assert load_backbone(str(sd_folder), device="cpu") is a
    assert load_backbone(sd_folder, device="cpu", dtype="float16") is not a
    clear_backbone_cache()
    assert load_backbone(sd_folder, device="cpu") is not a


def test_weights_hash_is_sorted_per_file_hashes(sd_folder):
    import hashlib

    # every file that is read: weights, configs, tokenizer files and model_index.json
    files = sorted(p for p in sd_folder.rglob("*") if p.is_file()
                   and (p.name == "model_index.json" or p.relative_to(sd_folder).parts[0] in
                        ("vae", "unet", "text_encoder", "tokenizer", "scheduler")))
    assert any(p.name == "scheduler_config.json" for p in files) and any(p.suffix == ".safetensors" for p in files)
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(sd_folder).as_posix()}:{sha256_file(p)}\n".encode())
    assert load_backbone(sd_folder, device="cpu").identity()["sha256"] == h.hexdigest()


def test_v_prediction_folder(tmp_path):
    bb = load_backbone(save_tiny_sd(tmp_path / "v", prediction_type="v_prediction"), device="cpu")
    assert bb.prediction_type == "v_prediction"


def test_refuses_python_files(copy_of):
    folder = copy_of()
    (folder / "unet" / "pipeline_custom.py").write_text("import os\n")
    with pytest.raises(UnsafeFileError, match="Python code.*pipeline_custom.py"):
        load_backbone(folder, device="cpu")


def test_refuses_pickle_only_weights_unless_allowed(copy_of):
    import torch
    from safetensors.torch import load_file

    folder = copy_of()
    st = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(st)), folder / "unet" / "diffusion_pytorch_model.bin")
    st.unlink()
    with pytest.raises(UnsafeFileError, match=r"unet/ holds only pickle weights.*Convert them") as err:
        load_backbone(folder, device="cpu")
    assert "--allow-pickle" not in str(err.value)  # issue 15 item 13: no such flag exists
    bb = load_backbone(folder, device="cpu", allow_pickle=True)  # a plain state dict, weights_only
    assert bb.resolution == 32


@pytest.mark.parametrize("remove, expected", [
    ("text_encoder/model.safetensors", r"text_encoder' has no weights: expected .*text_encoder.model\.safetensors"),
    ("vae", r"component 'vae' is missing: expected the folder .*vae"),
    ("tokenizer/tokenizer.json", r"tokenizer files are missing: expected .*vocab\.json"),
    ("model_index.json", r"model_index\.json is missing"),
    ("scheduler/scheduler_config.json", r"scheduler_config\.json is missing"),
])
def test_missing_files_are_named(copy_of, remove, expected):
    folder = copy_of()
    target = folder / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ModelError, match=expected):
        load_backbone(folder, device="cpu")


def test_missing_folder_and_unknown_name(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="backbone folder not found"):
        load_backbone(tmp_path / "nowhere", device="cpu")
    monkeypatch.setenv("P2P_DESKTOP_RESOURCES", str(tmp_path / "empty-resources"))
    with pytest.raises(ModelError, match="backbone 'demo' not found"):
        load_backbone("demo", device="cpu")


def test_single_file_needs_a_config_folder_and_no_pickle(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"\0" * 16)
    with pytest.raises(ModelError, match="single-file checkpoint: also give a local diffusers config folder"):
        load_backbone(ckpt, device="cpu")
    pkl = tmp_path / "model.ckpt"
    pkl.write_bytes(b"\0" * 16)
    with pytest.raises(UnsafeFileError, match="pickle checkpoint"):
        load_backbone(pkl, device="cpu")


def test_registered_bundle_is_verified_before_loading(sd_folder, tmp_path, monkeypatch):
    """A bundle backbone (card.json with per-file hashes) loads by name; a changed file is refused."""
    res = tmp_path / "resources"
    demo = res / "models" / "demo"
    shutil.copytree(sd_folder, demo)
    files = {p.relative_to(demo).as_posix(): sha256_file(p) for p in sorted(demo.rglob("*")) if p.is_file()}
    (demo / "card.json").write_text(json.dumps({"name": "demo", "kind": "backbone", "files": files}))
    monkeypatch.setenv("P2P_DESKTOP_RESOURCES", str(res))
    bb = load_backbone("demo", device="cpu")
    assert bb.name == "demo" and bb.resolution == 32
    clear_backbone_cache()
    with open(demo / "unet" / "diffusion_pytorch_model.safetensors", "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x01\x02\x03\x04")
    with pytest.raises(ModelError, match="'demo' .* is corrupted"):
        load_backbone("demo", device="cpu")


def test_loading_makes_no_network_connection(sd_folder, monkeypatch):
    attempts = []

    def refuse(self, *args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    clear_backbone_cache()
    monkeypatch.setattr(socket.socket, "connect", refuse)
    load_backbone(sd_folder, device="cpu")
    assert attempts == []
