"""MS-SSIM: one row of the metric table, and it is computed, reported and shown with no other edit."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
SAMPLES = Path(__file__).resolve().parent.parent / "resources" / "samples" / "busi"


def _real_pair():
    """A real sample image (256 × 256 grey) and a copy with small seeded noise, both in [0, 1]."""
    from PIL import Image

    image = np.asarray(Image.open(next(SAMPLES.glob("benign/*[0-9].png"))), np.float64) / 255.0
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 0.03, image.shape), 0, 1)
    return image, noisy


def _reference(a, b, **kw) -> float:
    import torch
    from pytorch_msssim import ms_ssim

    x, y = (torch.from_numpy(np.ascontiguousarray(v, np.float64))[None, None] for v in (a, b))
    return float(ms_ssim(x, y, data_range=1.0, **kw))


def test_ms_ssim_on_real_images_matches_pytorch_msssim():
    from p2p_desktop.metrics import METRICS, compute_metrics

    a, b = _real_pair()
    m, _notes = compute_metrics(a, b)
    assert m["ms_ssim"] == pytest.approx(_reference(a, b), abs=1e-9)  # the paper's 11-px window, 5 scales
    assert 0.5 < m["ms_ssim"] < 1.0
    assert compute_metrics(a, a)[0]["ms_ssim"] == pytest.approx(1.0, abs=1e-9)
    assert METRICS["ms_ssim"].heading == "MS-SSIM ↑"


def test_small_images_use_a_smaller_window_or_report_null():
    from p2p_desktop.metrics import compute_metrics

    a, b = _real_pair()
    small_a, small_b = a[:64, :64], b[:64, :64]  # 64 px: an 11-px window does not fit 4 halvings
    assert compute_metrics(small_a, small_b)[0]["ms_ssim"] == pytest.approx(_reference(small_a, small_b, win_size=3))
    assert compute_metrics(a[:32, :32], b[:32, :32])[0]["ms_ssim"] is None


@pytest.mark.gui
def test_ms_ssim_appears_in_the_results_panel(qtbot):
    from p2p_desktop.gui.results import MetricsTable, metric_rows
    from p2p_desktop.metrics import compute_metrics

    a, b = _real_pair()
    metrics, notes = compute_metrics(a, b)
    result = SimpleNamespace(metrics=metrics, notes=notes, success=True, original_label="benign",
                             adversarial_label="normal", true_label="benign", info={}, target=None, iterations=1,
                             seconds=0.1, seed=0, device="cpu")
    table = MetricsTable()
    qtbot.addWidget(table)
    table.set_rows(metric_rows(result))
    assert table.value("ms_ssim") == table.value("MS-SSIM ↑") == f"{metrics['ms_ssim']:.4f}"
