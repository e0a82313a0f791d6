"""Classifier loading: torchvision architectures with local weights, model cards, hashes, safety."""

from __future__ import annotations

import json

import numpy as np
import pytest

from p2p_desktop.errors import ModelError, UnsafeFileError
from p2p_desktop.hashing import sha256_file
from p2p_desktop.metrics import compute_metrics
from p2p_desktop.models.classifier import ARCHITECTURES, ModelCard, build_architecture, load_classifier

CLASSES = ("benign", "malignant", "normal")


@pytest.mark.parametrize("arch", ["densenet121", "resnet18", "resnet34", "resnet50", "squeezenet1_1",
                                  "efficientnet_b0"])
def test_architectures_load_from_safetensors_card(arch, tmp_path):
    import torch
    from safetensors.torch import save_file

    assert arch in ARCHITECTURES
    torch.manual_seed(0)
    module = build_architecture(arch, 3)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(weights))
    card = ModelCard(name=f"my-{arch}", architecture=arch, classes=CLASSES, weights="w.safetensors",
                     input_size=64, sha256=sha256_file(weights))
    (tmp_path / "card.json").write_text(json.dumps(card.to_dict()))
    clf = load_classifier(tmp_path / "card.json")
    x = torch.rand(1, 1, 50, 70)  # grey, non-square: resized and expanded to RGB inside
    with torch.no_grad():
        p = clf.probs(x)
    assert p.shape == (1, 3) and torch.allclose(p.sum(), torch.tensor(1.0), atol=1e-5)
    with torch.no_grad():
        ref = torch.softmax(module.eval()(clf.preprocess(x)), 1)
    assert torch.allclose(p, ref, atol=1e-5)
    g = clf.gradient(torch.rand(1, 3, 64, 64), 1)
    assert g.shape == (1, 3, 64, 64) and g.abs().sum() > 0


def test_hash_mismatch_is_refused(tmp_path):
    import torch

    torch.manual_seed(0)
    path = tmp_path / "w.pth"
    torch.save(build_architecture("squeezenet1_1", 3).state_dict(), path)
    card = {"name": "x", "architecture": "squeezenet1_1", "classes": list(CLASSES), "weights": "w.pth",
            "sha256": "0" * 64}
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="does not match its card"):
        load_classifier(tmp_path / "card.json")


def test_torchscript_is_refused_without_running(tmp_path):
    import torch

    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / "model.pt"
    torch.jit.save(scripted, str(path))
    with pytest.raises(UnsafeFileError, match="TorchScript"):
        load_classifier(path, arch="squeezenet1_1", classes=list(CLASSES))


def test_malformed_card_and_missing_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_classifier(tmp_path / "bad.json")
    (tmp_path / "c.json").write_text(json.dumps({"architecture": "resnet18", "classes": ["a", "b"],
                                                 "weights": "missing.safetensors"}))
    with pytest.raises(ModelError, match="not found"):
        load_classifier(tmp_path / "c.json")
    (tmp_path / "u.json").write_text(json.dumps({"architecture": "vgg99", "classes": ["a", "b"],
                                                 "weights": "u.json"}))
    with pytest.raises(ModelError, match="unknown architecture"):
        load_classifier(tmp_path / "u.json", verify_hash=False)
    with pytest.raises(ModelError, match="not found"):
        load_classifier("no-such-model")


def test_metrics_are_real_and_lpips_says_why():
    rng = np.random.RandomState(0)
    a = rng.rand(40, 50, 1).astype(np.float32)
    m, notes = compute_metrics(a, a)
    assert m["ssim"] == pytest.approx(1.0) and m["psnr"] is None and m["l2"] == 0 and m["linf"] == 0
    b = np.clip(a + 0.01, 0, 1)
    m, notes = compute_metrics(a, b)
    assert m["ssim"] < 1.0 and 35 < m["psnr"] < 41 and m["linf"] == pytest.approx(0.01, abs=1e-6)
    if m["lpips"] is None:
        assert any("alexnet" in n.lower() for n in notes)
    else:
        assert 0 <= m["lpips"] < 1
