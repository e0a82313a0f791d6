"""Backbone integrity (issue 15 items 5, 6, 12, 13, 14): incomplete weights, pickle shards behind a
safetensors index, unhashed configs, huge configs and code behind symlinks are all refused."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from p2p_desktop.errors import ModelError, UnsafeFileError
from p2p_desktop.models.backbone import clear_backbone_cache, load_backbone
from tests.tiny_sd import save_tiny_sd


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return save_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd")


@pytest.fixture
def copy(sd_folder, tmp_path):
    clear_backbone_cache()
    dst = tmp_path / "copy"
    shutil.copytree(sd_folder, dst)
    yield dst
    clear_backbone_cache()


def _rewrite(path, keep):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(path))
    save_file({k: v.clone() for k, v in sd.items() if keep(k)}, str(path))


def test_vae_missing_most_keys_is_refused(copy, capfd):
    f = copy / "vae" / "diffusion_pytorch_model.safetensors"
    keys = sorted(__import__("safetensors.torch", fromlist=["load_file"]).load_file(str(f)))
    _rewrite(f, lambda k: k in keys[:5])
    with pytest.raises(ModelError, match=r"vae/ weights do not match its config: \d+ missing"):
        load_backbone(copy, device="cpu")
    assert "newly initialized" not in capfd.readouterr().err  # the library's warning is not what stops it


def test_unexpected_keys_are_refused(copy):
    from safetensors.torch import load_file, save_file

    f = copy / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(f))
    sd["extra.weight"] = sd[next(iter(sd))].clone()
    save_file(sd, str(f))
    with pytest.raises(ModelError, match=r"unet/ weights do not match its config: 1 unexpected \(extra.weight\)"):
        load_backbone(copy, device="cpu")


def test_incomplete_backbone_through_the_cli_exits_2(copy, tmp_path, capsys, pydicom_file):
    from p2p_desktop.cli.main import main

    f = copy / "vae" / "diffusion_pytorch_model.safetensors"
    _rewrite(f, lambda k: k.startswith("encoder."))
    code = main(["attack", str(pydicom_file("examples_rgb_color.dcm")), "--attack", "diff-pgd", "--backbone",
                 str(copy), "--classifier", "demo-squeezenet1_1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "vae/ weights do not match" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def _shard(copy, target_name):
    import torch
    from safetensors.torch import load_file

    unet = copy / "unet"
    st = unet / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(st))
    st.unlink()
    if target_name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(sd, str(unet / target_name))
    else:
        torch.save(sd, unet / target_name)
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: target_name for k in sd}}))


def test_pickle_shard_behind_a_safetensors_index_is_refused(copy):
    _shard(copy, "diffusion_pytorch_model-00001-of-00001.pt")
    with pytest.raises(UnsafeFileError, match="references the pickle shard"):
        load_backbone(copy, device="cpu")


def test_sharded_safetensors_load_and_every_shard_is_hashed(copy):
    _shard(copy, "diffusion_pytorch_model-00001-of-00001.safetensors")
    bb = load_backbone(copy, device="cpu")
    assert "unet/diffusion_pytorch_model-00001-of-00001.safetensors" in bb.weight_files
    assert "unet/diffusion_pytorch_model.safetensors.index.json" in bb.weight_files


@pytest.mark.parametrize("rel,key,value", [
    ("scheduler/scheduler_config.json", "beta_end", 0.02),
    ("vae/config.json", "scaling_factor", 0.5),
    ("tokenizer/tokenizer_config.json", "model_max_length", 60),
])
def test_configs_are_part_of_the_hash(copy, rel, key, value):
    before = load_backbone(copy, device="cpu").weights_sha256()
    clear_backbone_cache()
    cfg = json.loads((copy / rel).read_text())
    cfg[key] = value
    (copy / rel).write_text(json.dumps(cfg))
    assert load_backbone(copy, device="cpu").weights_sha256() != before


@pytest.mark.parametrize("rel,key,value", [
    ("scheduler/scheduler_config.json", "num_train_timesteps", 400_000_000),
    ("unet/config.json", "block_out_channels", [32, 10_000_000]),
    ("text_encoder/config.json", "vocab_size", 2_000_000_000),
    ("scheduler/scheduler_config.json", "num_train_timesteps", "1000"),
])
def test_huge_configs_are_refused_before_building(copy, rel, key, value):
    cfg = json.loads((copy / rel).read_text())
    cfg[key] = value
    (copy / rel).write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=f"{key} = .* is outside"):
        load_backbone(copy, device="cpu")


def test_python_file_behind_a_symlinked_folder_is_found(copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "pipeline.py").write_text("raise SystemExit('code ran')\n")
    os.symlink(elsewhere, copy / "extras")
    with pytest.raises(UnsafeFileError, match="carries Python code.*extras/pipeline.py"):
        load_backbone(copy, device="cpu")


def test_shard_index_pointing_outside_its_folder_is_refused(copy, tmp_path):
    import shutil as _sh

    _shard(copy, "diffusion_pytorch_model-00001-of-00001.safetensors")
    _sh.move(str(copy / "unet" / "diffusion_pytorch_model-00001-of-00001.safetensors"), str(tmp_path / "x.safetensors"))
    index = copy / "unet" / "diffusion_pytorch_model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = {k: "../../x.safetensors" for k in data["weight_map"]}
    index.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="not a file in"):
        load_backbone(copy, device="cpu")
