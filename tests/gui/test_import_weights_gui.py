"""Tools > Import metric weights… (issue 25, item 6): a thin action over the core function of
``p2p-desktop models import-weights`` — refusal and accept path, with the message boxes captured."""

from __future__ import annotations

import hashlib

import pytest


@pytest.fixture
def boxes(monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    shown = []
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda parent, title, text: shown.append(("w", text))))
    monkeypatch.setattr(QMessageBox, "information",
                        staticmethod(lambda parent, title, text: shown.append(("i", text))))
    return shown


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    return tmp_path / "torch-home"


def test_import_metric_weights_action(window, boxes, torch_home, tmp_path, monkeypatch):
    from p2p_desktop.metrics import import_weights as core
    from p2p_desktop.metrics import lpips_status

    action = window.import_weights_action
    assert action.text() == "Import metric weights…"
    assert any(a is action for m in window.menuBar().actions() if m.text() == "&Tools" for a in m.menu().actions())
    bad = tmp_path / "alexnet-owt-7be5be79.pth"
    bad.write_bytes(b"wrong bytes")
    assert window.import_metric_weights([str(bad)]) is None
    assert boxes[-1][0] == "w" and core.PUBLISHED["alexnet-owt-7be5be79.pth"].sha256 in boxes[-1][1]
    assert lpips_status()[0] is False
    # the accept path: the core function's table pointed at a generated file (the real weights are not here)
    good = tmp_path / "download.bin"
    good.write_bytes(b"generated stand-in")
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    table = {"alexnet-owt-7be5be79.pth": core.PublishedWeights("alexnet-owt-7be5be79.pth", digest, 18, "LPIPS", "u")}
    real = core.import_weights
    monkeypatch.setattr(core, "import_weights", lambda files: real(files, published=table))
    records = window.import_metric_weights([str(good)])
    assert records and records[0]["name"] == "alexnet-owt-7be5be79.pth"
    assert boxes[-1][0] == "i" and "enables LPIPS" in boxes[-1][1]
    assert lpips_status()[0] is True
