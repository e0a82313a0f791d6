"""Shared test fixtures: real test files, small seeded classifiers, a private audit log, and a
check that a folder was left untouched. The GUI's fixtures are in ``tests/gui/conftest.py``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_as_from_a_terminal():
    """Ctrl-C reaches the tests' processes as it does a terminal's.

    A shell without job control starts a background job (``cmd &``, ``nohup``) with SIGINT
    ignored, and a child inherits that: the Ctrl-C tests would then send signals nobody hears.
    A Python handler in this process is reset to the default in every child it starts."""
    import signal

    before = signal.getsignal(signal.SIGINT)
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, before)


@pytest.fixture
def pydicom_file():
    """``pydicom_file(name) -> Path`` of a test file shipped inside pydicom (skip if absent)."""

    def get(name: str) -> Path:
        from pydicom.data import get_testdata_file

        found = get_testdata_file(name, download=False)
        if not found:
            pytest.skip(f"pydicom test file {name} is not installed")
        return Path(found)

    return get


@pytest.fixture
def ultrasound_file(pydicom_file):
    """``ultrasound_file() -> Path``: pydicom's ultrasound test file (US, RGB, 240x320; skip if absent)."""
    return lambda: pydicom_file("examples_rgb_color.dcm")


@pytest.fixture
def pydicom_copy(tmp_path, pydicom_file):
    """``pydicom_copy(name, as_name) -> Path``: a copy of one of pydicom's test files in a fresh
    ``in/`` folder of the test's temporary folder (so a test may change or move it)."""

    def copy(name: str, as_name: str) -> Path:
        path = tmp_path / "in" / as_name
        path.parent.mkdir(exist_ok=True)
        shutil.copy(pydicom_file(name), path)
        return path

    return copy


@pytest.fixture
def identified_ultrasound(tmp_path, pydicom_file):
    """``identified_ultrasound(attributes, folder, name) -> Path``: pydicom's ultrasound file with
    these identifying attributes and UIDs set (the media-storage UID follows SOPInstanceUID),
    saved as ``patients/<folder>/<name>`` in the test's temporary folder."""

    def write(attributes: dict[str, str], folder: str, name: str) -> Path:
        import pydicom

        ds = pydicom.dcmread(pydicom_file("examples_rgb_color.dcm"))
        for key, value in attributes.items():
            setattr(ds, key, value)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = tmp_path / "patients" / folder / name
        path.parent.mkdir(parents=True)
        ds.save_as(path)
        return path

    return write


@pytest.fixture
def audit_log(tmp_path, monkeypatch) -> Path:
    """The test's own audit log (``P2P_DESKTOP_AUDIT_LOG``), in its temporary folder."""
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(log))
    return log


@pytest.fixture(scope="session")
def model_card(tmp_path_factory) -> Path:
    """A seeded, untrained SqueezeNet saved as safetensors + a model card (input 64 px)."""
    import torch
    from safetensors.torch import save_file

    from p2p_desktop.models.classifier import build_architecture

    classes = ("benign", "malignant", "normal")
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    module = build_architecture("squeezenet1_1", len(classes))
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / "weights.safetensors"))
    card = {"name": "tiny-squeezenet", "architecture": "squeezenet1_1", "classes": list(classes),
            "input_size": 64, "weights": "weights.safetensors"}
    (folder / "card.json").write_text(json.dumps(card))
    return folder / "card.json"


@pytest.fixture
def tiny_classifier_args(tmp_path) -> list[str]:
    """The CLI arguments that load a seeded, untrained SqueezeNet 1.1 (64 px, three classes) from
    a plain ``.pth`` state dict in the test's temporary folder."""
    import torch

    from p2p_desktop.models.classifier import build_architecture

    torch.manual_seed(0)
    w = tmp_path / "w.pth"
    torch.save(build_architecture("squeezenet1_1", 3).state_dict(), w)
    return ["--classifier", str(w), "--arch", "squeezenet1_1", "--classes", "benign,malignant,normal",
            "--input-size", "64"]


@pytest.fixture
def plugin_sandbox(tmp_path, monkeypatch):
    """A private user folder and ``tmp_path/plugins`` as the plugin folder; afterwards the plugin
    loader forgets its plugins, both registries are as they were before the test, and the plugin
    modules and the modules imported from the test's temporary folder are unloaded. Yields the
    plugin folder."""
    import sys

    from p2p_desktop import plugins
    from p2p_desktop.attacks import registry
    from p2p_desktop.models import registry as mreg

    monkeypatch.setenv("P2P_DESKTOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("P2P_DESKTOP_PLUGIN_PATH", str(tmp_path / "plugins"))
    attacks_before, models_before = dict(registry._specs), dict(mreg._extra)
    modules_before = set(sys.modules)
    yield tmp_path / "plugins"
    plugins._loaded.clear()
    for finder in set(plugins._dist_finders.values()):
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
    plugins._dist_finders.clear()
    registry._specs.clear()
    registry._specs.update(attacks_before)
    mreg._extra.clear()
    mreg._extra.update(models_before)
    for name in list(sys.modules):
        if name.startswith("p2p_desktop_plugin_") or (
                name not in modules_before
                and (getattr(sys.modules[name], "__file__", None) or "").startswith(str(tmp_path))):
            sys.modules.pop(name)


@pytest.fixture
def cli_error(capsys):
    """``cli_error() -> str``: what the CLI wrote on stderr since the last read, checked to be one
    line that starts with ``p2p-desktop: error:``."""

    def one_line() -> str:
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert err.startswith("p2p-desktop: error: ")
        return err

    return one_line


@pytest.fixture(scope="module")
def tiny_sd_dir(tmp_path_factory) -> Path:
    """The tiny seeded Stable-Diffusion folder of ``tests/tiny_sd.py``, written once per module."""
    from tests.tiny_sd import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd")


@pytest.fixture(scope="module")
def bb(tiny_sd_dir):
    """The tiny SD folder loaded as a diffusion backbone on the CPU, once per module."""
    from p2p_desktop.models.backbone import load_backbone

    return load_backbone(tiny_sd_dir, device="cpu")


@pytest.fixture
def attack_process(tmp_path):
    """``attack_process(*args) -> Popen``: ``python -m p2p_desktop attack *args`` in a child
    process (its own user folder, a progress bar on stderr), returned once the attack is
    iterating (a ``pgd:`` step shown). A child still running at the end of the test is killed."""
    import subprocess
    import sys
    import time

    started = []

    def start(*args) -> subprocess.Popen:
        env = {**os.environ, "P2P_PROGRESS": "1", "P2P_DESKTOP_HOME": str(tmp_path / "home")}
        proc = subprocess.Popen([sys.executable, "-m", "p2p_desktop", "attack", *map(str, args)],
                                stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        started.append(proc)
        seen = b""
        deadline = time.time() + 240
        while time.time() < deadline and b"pgd:" not in seen:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:  # the child ended before iterating
                break
            seen += chunk
        assert b"pgd:" in seen, seen[-500:]
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


@pytest.fixture
def tiny_sd_training(tmp_path):
    """The tiny seeded SD components of ``tests/tiny_sd.py`` to fine-tune (``.parts``), and
    ``.check_trained()``: asserts that training changed the UNet and the text encoder and left
    the VAE frozen."""
    from types import SimpleNamespace

    import torch

    from tests.tiny_sd import tiny_sd_components

    parts = tiny_sd_components(tmp_path / "tok", seed=0)
    before = {part: {n: p.detach().clone() for n, p in parts[part].named_parameters()}
              for part in ("unet", "text_encoder")}

    def check_trained() -> None:
        for part in ("unet", "text_encoder"):
            assert any(not torch.equal(before[part][n], p) for n, p in parts[part].named_parameters()), part
        assert not any(p.requires_grad for p in parts["vae"].parameters())  # the VAE stays frozen

    return SimpleNamespace(parts=parts, check_trained=check_trained)


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            p = Path(dirpath) / name
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def unchanged():
    """``with unchanged(folder): ...`` fails if a file in ``folder`` was added, removed or
    modified inside the block."""
    from contextlib import contextmanager

    @contextmanager
    def check(folder: Path):
        before = _listing(Path(folder))
        yield
        after = _listing(Path(folder))
        assert after == before, f"files changed in {folder}: {set(after) ^ set(before) or 'modified'}"

    return check


@pytest.fixture(autouse=True, scope="session")
def _private_user_folders(tmp_path_factory):
    """Tests never touch the user's own settings, audit log, logs or plugin approvals."""
    home = tmp_path_factory.mktemp("p2p-home")
    old = {k: os.environ.get(k) for k in ("P2P_DESKTOP_HOME", "P2P_DESKTOP_AUDIT_LOG", "P2P_DESKTOP_AUDIT_KEY")}
    os.environ["P2P_DESKTOP_HOME"] = str(home)
    os.environ["P2P_DESKTOP_AUDIT_LOG"] = str(home / "audit.jsonl")
    # one installation key for the session's log: tests that move P2P_DESKTOP_HOME still sign it alike
    os.environ["P2P_DESKTOP_AUDIT_KEY"] = str(home / "audit.key")
    yield home
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def seeded_alexnet_hub(tmp_path, monkeypatch):
    """A torch hub folder holding a seeded AlexNet under the ImageNet file name (small on disk:
    each weight tensor is a strided view of a short random vector)."""
    import torch
    from torchvision.models import alexnet

    from p2p_desktop.metrics import similarity

    torch.manual_seed(0)
    state = {}
    for key, t in alexnet().state_dict().items():
        row = torch.randn(t.shape[-1]) * 0.1
        state[key] = row.as_strided(t.shape, [0] * (t.dim() - 1) + [1])
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(state, hub / "checkpoints" / similarity.ALEXNET_FILE)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(similarity, "_lpips_nets", {})  # the cache is restored after the test
    return hub
