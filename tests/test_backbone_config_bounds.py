"""Size-like config values of a backbone folder are checked against sane bounds before anything
is built (issue 28 item 2): a tokenizer whose ``model_max_length`` is 1e9 reached 18.6 GB before
the kernel killed it. Each case edits one value in a copy of the demo backbone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from p2p_desktop.errors import ModelError
from p2p_desktop.models.backbone import clear_backbone_cache, load_backbone
from p2p_desktop.paths import models_dir
from tests.cgroup import memory_limited

DEMO = models_dir() / "demo"


@pytest.fixture
def demo_copy(tmp_path):
    if not (DEMO / "model_index.json").is_file():
        pytest.skip(f"demo backbone not built yet ({DEMO})")
    clear_backbone_cache()
    dst = tmp_path / "bb"
    shutil.copytree(DEMO, dst)
    yield dst
    clear_backbone_cache()


def _edit(folder, rel, key, value):
    path = folder / rel
    cfg = json.loads(path.read_text())
    if value is _DROP:
        cfg.pop(key, None)
    else:
        cfg[key] = value
    path.write_text(json.dumps(cfg))


_DROP = object()


@pytest.mark.parametrize("rel,key,value,bound", [
    ("tokenizer/tokenizer_config.json", "model_max_length", 1e9, "4,096"),
    ("tokenizer/tokenizer_config.json", "model_max_length", 10**9, "4,096"),
    ("text_encoder/config.json", "max_position_embeddings", 10**7, "4,096"),
    ("text_encoder/config.json", "projection_dim", 10**7, "8,192"),
    ("unet/config.json", "attention_head_dim", [8, 10**6, 8], "1,024"),
    ("unet/config.json", "transformer_layers_per_block", [[1, 1], [1, 10**4]], "64"),
    ("unet/config.json", "num_class_embeds", 10**9, "100,000"),
    ("unet/config.json", "conv_in_kernel", 999, "15"),
    ("unet/config.json", "norm_num_groups", 10**6, "1,024"),
    ("unet/config.json", "sample_size", 64.5, "1,024"),
    ("vae/config.json", "norm_num_groups", 10**6, "1,024"),
    ("vae/config.json", "sample_size", 10**6, "8,192"),
    ("vae/config.json", "latent_channels", 10**5, "64"),
    ("scheduler/scheduler_config.json", "num_train_timesteps", 10**9, "100,000"),
])
def test_size_beyond_its_bound_is_refused_naming_file_key_value_and_bound(demo_copy, rel, key, value, bound):
    _edit(demo_copy, rel, key, value)
    with pytest.raises(ModelError) as err:
        load_backbone(demo_copy, device="cpu")
    msg = str(err.value)
    assert rel in msg and key in msg and bound in msg and "before building" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("rel,changes", [
    # each value within its bound, together 172 billion parameters (687 GB in fp32)
    ("text_encoder/config.json", {"hidden_size": 8192, "intermediate_size": 65536, "num_hidden_layers": 128}),
    ("unet/config.json", {"block_out_channels": [8192, 8192, 8192], "layers_per_block": 16}),
    ("vae/config.json", {"block_out_channels": [4096, 8192], "layers_per_block": 16}),
])
def test_sizes_that_multiply_beyond_the_weights_are_refused_before_building(demo_copy, rel, changes):
    import resource

    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401 - imported before measuring
    from transformers import CLIPTextModel  # noqa: F401

    for key, value in changes.items():
        _edit(demo_copy, rel, key, value)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelError) as err:
        load_backbone(demo_copy, device="cpu")
    msg = str(err.value)
    assert rel in msg and "describes" in msg and "weights hold" in msg and "memory is available" in msg, msg
    assert "before building" in msg and "\n" not in msg
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500 * 1024  # KB: nothing was built


@pytest.mark.parametrize("rel,key,length", [
    ("unet/config.json", "block_out_channels", 10_000),
    ("vae/config.json", "down_block_types", 10_000),
    ("scheduler/scheduler_config.json", "trained_betas", 200_000),
])
def test_too_long_lists_are_refused(demo_copy, rel, key, length):
    item = 0.001 if key == "trained_betas" else ("DownEncoderBlock2D" if key.endswith("types") else 32)
    _edit(demo_copy, rel, key, [item] * length)
    with pytest.raises(ModelError, match=f"{rel}.*{key} has {length:,} entries"):
        load_backbone(demo_copy, device="cpu")


def test_tokenizer_longer_than_the_text_encoder_positions_is_refused(demo_copy):
    _edit(demo_copy, "tokenizer/tokenizer_config.json", "model_max_length", 300)  # within 4,096
    with pytest.raises(ModelError, match=r"model_max_length = 300 .*max_position_embeddings = 77"):
        load_backbone(demo_copy, device="cpu")


def test_tokenizer_without_a_max_length_is_refused(demo_copy):
    # transformers then pads prompts to 10**30 tokens
    _edit(demo_copy, "tokenizer/tokenizer_config.json", "model_max_length", _DROP)
    with pytest.raises(ModelError, match="tokenizer/tokenizer_config.json.*model_max_length is missing"):
        load_backbone(demo_copy, device="cpu")


def test_huge_config_file_is_not_read(demo_copy):
    path = demo_copy / "unet" / "config.json"
    cfg = path.read_text()
    path.write_text(cfg[:-2] + ', "_padding": "' + "x" * (5 * 2**20) + '"}')
    with pytest.raises(ModelError, match=r"unet/config.json .* 5\.0 MiB .*limit 4 MiB"):
        load_backbone(demo_copy, device="cpu")


def test_huge_vocabulary_file_is_not_read(demo_copy):
    with open(demo_copy / "tokenizer" / "vocab.json", "r+b") as fh:
        fh.truncate(65 * 2**20)  # sparse: no disk used
    with pytest.raises(ModelError, match=r"tokenizer/vocab.json .*limit 64 MiB"):
        load_backbone(demo_copy, device="cpu")


def test_the_demo_itself_and_sd_sized_values_still_load(demo_copy):
    bb = load_backbone(demo_copy, device="cpu")
    assert bb.tokenizer.model_max_length == 77


def test_cli_refusal_is_one_line_exit_2_and_builds_nothing(demo_copy, tmp_path, pydicom_file):
    """The reported case, end to end: exit 2, one line, and the process never grew (it was 18.6 GB)."""
    _edit(demo_copy, "tokenizer/tokenizer_config.json", "model_max_length", 1e9)
    src = pydicom_file("examples_rgb_color.dcm")
    code = (
        "import sys\n"
        "from p2p_desktop.cli.main import main\n"
        "rc = main(sys.argv[1:])\n"
        "print('PEAK_KB', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))\n"
        "sys.exit(rc)\n")
    env = {**os.environ, "P2P_DESKTOP_HOME": str(tmp_path / "home")}
    argv = [sys.executable, "-c", code, "attack", str(src), "--attack", "p2p", "--backbone",
            str(demo_copy), "--classifier", "demo-squeezenet1_1", "--out", str(tmp_path / "o"),
            "--steps", "1"]
    with memory_limited(3 * 10**9) as wrap:  # as it was run; and it must not take the machine down
        proc = subprocess.run(wrap(argv), capture_output=True, text=True, env=env, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert "model_max_length" in err[0] and "1000000000" in err[0] and "4,096" in err[0]
    assert int(proc.stdout.split("PEAK_KB")[1].split()[0]) < 2 * 2**20  # KB: under 2 GB
    assert not (tmp_path / "o").exists()
