"""The native image metrics (SSIM, PSNR, L2, L∞, LPIPS) pinned against independent references.

References: closed forms for PSNR, L2 and L∞ on hand-made perturbations; SSIM recomputed here
from its definition (Wang et al. 2004 with scikit-image's defaults: 7×7 uniform window, sample
covariance, K1 = 0.01, K2 = 0.03, L = 1 for [0,1] images, mean over the valid area and then over
the channels) and by scikit-image with every setting spelled out. Grey and colour, exact values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from p2p_desktop.metrics import compute_metrics, psnr, ssim
from p2p_desktop.metrics import similarity as metrics


def _ssim_from_definition(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W, C) images in [0,1]: 7×7 uniform window, sample covariance."""
    from numpy.lib.stride_tricks import sliding_window_view

    k1, k2, L, w = 0.01, 0.03, 1.0, 7
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    n = w * w
    per_channel = []
    for c in range(a.shape[2]):
        x = sliding_window_view(a[:, :, c].astype(np.float64), (w, w))
        y = sliding_window_view(b[:, :, c].astype(np.float64), (w, w))
        mx, my = x.mean(axis=(-1, -2)), y.mean(axis=(-1, -2))
        vx = ((x - mx[..., None, None]) ** 2).sum(axis=(-1, -2)) / (n - 1)
        vy = ((y - my[..., None, None]) ** 2).sum(axis=(-1, -2)) / (n - 1)
        cxy = ((x - mx[..., None, None]) * (y - my[..., None, None])).sum(axis=(-1, -2)) / (n - 1)
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        per_channel.append(s.mean())
    return float(np.mean(per_channel))


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, data_range=1.0, channel_axis=2, win_size=7, gaussian_weights=False,
                                       use_sample_covariance=True, K1=0.01, K2=0.03))


def _pair(channels: int, seed: int = 0, shape=(40, 52)):
    """An 8-bit-like image and a noisy copy (different noise in every channel)."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = 0.5 + 0.3 * np.sin(yy / 5.0)[..., None] * np.cos(xx / 7.0)[..., None] * np.ones(channels)
    a = np.round(np.clip(base, 0, 1) * 255) / 255
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    return a.astype(np.float32), b.astype(np.float32)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_its_definition_and_scikit_image(channels):
    a, b = _pair(channels)
    expected = _ssim_from_definition(a.astype(np.float64), b.astype(np.float64))
    assert 0.3 < expected < 0.95  # a real, mid-range similarity: settings errors show
    assert _skimage_ssim(a.astype(np.float64), b.astype(np.float64)) == pytest.approx(expected, abs=1e-9)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-9)
    got, _ = compute_metrics(a, b)
    assert got["ssim"] == pytest.approx(expected, abs=1e-9)


def test_ssim_of_a_2d_grey_image_equals_its_one_channel_form():
    a, b = _pair(1, seed=3)
    assert ssim(a[:, :, 0], b[:, :, 0]) == pytest.approx(_ssim_from_definition(a, b), abs=1e-9)


def test_colour_ssim_averages_every_channel():
    """Only the 2nd and 3rd channels change: a first-channel-only SSIM would say 1.0."""
    a, b = _pair(3, seed=1)
    b[:, :, 0] = a[:, :, 0]
    expected = _ssim_from_definition(a, b)
    assert expected < 0.9
    assert ssim(a, b) == pytest.approx(expected, abs=1e-9)
    assert ssim(a, b) == pytest.approx((1.0 + 2 * _ssim_from_definition(a[:, :, 1:], b[:, :, 1:])) / 3, abs=1e-9)


def test_ssim_uses_the_data_range_of_unit_images():
    """With data_range 255 on [0,1] images the constants vanish and SSIM changes visibly."""
    a, b = _pair(1, seed=2)
    a[:20] = 0.0  # flat black band: there C1, C2 decide the value
    b[:20] = np.clip(0.01 * np.random.RandomState(5).rand(20, b.shape[1], 1), 0, 1)
    expected = _ssim_from_definition(a, b)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-9)
    from skimage.metrics import structural_similarity

    wrong = structural_similarity(a[:, :, 0].astype(np.float64), b[:, :, 0].astype(np.float64), data_range=255)
    assert abs(wrong - expected) > 1e-3  # the test can tell the two apart


def test_ssim_of_an_image_smaller_than_the_window_is_nan():
    a = np.zeros((6, 40, 1), np.float32)
    assert math.isnan(ssim(a, a))
    assert math.isnan(ssim(np.zeros((40, 6, 3)), np.zeros((40, 6, 3))))
    assert ssim(np.zeros((7, 7)), np.zeros((7, 7))) == pytest.approx(1.0)


@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_l2_linf_closed_forms(channels):
    h, w = 16, 20
    a = np.full((h, w, channels), 0.25, np.float32)
    b = a.copy()
    # four pixels changed in the last channel: +0.1, -0.1, +0.2, -0.05
    deltas = [0.1, -0.1, 0.2, -0.05]
    for i, d in enumerate(deltas):
        b[i, 3 * i, channels - 1] += d
    sq = sum(d * d for d in deltas)
    mse = sq / (h * w * channels)
    got, notes = compute_metrics(a, b)
    assert got["psnr"] == pytest.approx(10 * math.log10(1 / mse), abs=1e-4)
    assert psnr(a, b) == pytest.approx(-10 * math.log10(mse), abs=1e-4)
    assert got["l2"] == pytest.approx(math.sqrt(sq), rel=1e-5)
    assert got["linf"] == pytest.approx(0.2, rel=1e-5)
    # the L2/L∞ are of the perturbation as a whole, not per channel or per pixel
    assert got["l2"] != pytest.approx(math.sqrt(sq / channels)) or channels == 1


def test_psnr_of_a_uniform_offset_is_exact():
    a = np.full((10, 10, 3), 0.5)
    for offset, db in ((0.1, 20.0), (0.01, 40.0), (1 / 255, 20 * math.log10(255))):
        assert psnr(a, a + offset) == pytest.approx(db, abs=1e-9)
        assert compute_metrics(a, a - offset)[0]["psnr"] == pytest.approx(db, abs=1e-9)


def test_identical_images_give_null_psnr_zero_norms_and_ssim_one():
    a, _ = _pair(3)
    got, notes = compute_metrics(a, a.copy())
    assert got["psnr"] is None and got["l2"] == 0.0 and got["linf"] == 0.0
    assert got["ssim"] == pytest.approx(1.0)
    assert "PSNR is infinite (the images are identical); reported as null" in notes
    assert psnr(a, a) == float("inf")


def test_metrics_accept_grey_2d_and_hwc_alike():
    a, b = _pair(1, seed=4)
    m3, _ = compute_metrics(a, b)
    m2, _ = compute_metrics(a[:, :, 0], b[:, :, 0])
    for key in ("ssim", "psnr", "l2", "linf"):
        assert m2[key] == pytest.approx(m3[key], rel=1e-9)
    empty, _ = compute_metrics(np.zeros((0, 0)), np.zeros((0, 0)))
    assert empty["linf"] == 0.0 and empty["l2"] == 0.0


def test_lpips_is_null_with_a_note_when_alexnet_is_missing(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    ok, note = metrics.lpips_status()
    assert ok is False
    assert metrics.ALEXNET_FILE in note and str(tmp_path / "hub" / "checkpoints") in note
    assert "models import-weights" in note  # the note names the command that installs the file
    a, b = _pair(3)
    got, notes = compute_metrics(a, b)
    assert got["lpips"] is None and note in notes
    assert metrics.lpips_distance(a, b) is None


def test_lpips_is_computed_on_minus_one_to_one_inputs_when_weights_are_present(seeded_alexnet_hub, capsys):
    import lpips
    import torch

    assert metrics.lpips_status() == (True, "")
    a, b = _pair(3, seed=6, shape=(48, 48))
    first = metrics.lpips_distance(a, b)  # loads the model: silently (stdout carries --json output)
    assert capsys.readouterr().out == ""
    ref_model = lpips.LPIPS(net="alex", verbose=False).eval()

    def t(x):
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].float() * 2 - 1

    with torch.no_grad():
        expected = float(ref_model(t(a), t(b)).item())
        grey_expected = float(ref_model(t(np.repeat(a[:, :, :1], 3, 2)), t(np.repeat(b[:, :, :1], 3, 2))).item())
    assert expected > 0
    got, notes = compute_metrics(a, b)
    assert got["lpips"] == pytest.approx(expected, rel=1e-5) and first == pytest.approx(expected, rel=1e-5)
    assert not any("LPIPS" in n for n in notes)
    assert metrics.lpips_distance(a[:, :, :1], b[:, :, :1]) == pytest.approx(grey_expected, rel=1e-5)
    assert metrics.lpips_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_metric_table_drives_compute_metrics_and_formatting():
    """compute_metrics returns exactly the table's per-image rows, in order; each row formats itself."""
    from p2p_desktop.metrics import METRICS, compute_metrics, image_metrics, metric

    rng = np.random.default_rng(0)
    a = rng.random((32, 32))
    b = np.clip(a + 0.01, 0, 1)
    m, _ = compute_metrics(a, b)
    assert list(m) == [row.key for row in image_metrics()] == ["ssim", "ms_ssim", "psnr", "l2", "linf", "lpips"]
    assert m["linf"] == pytest.approx(0.01, abs=1e-9)
    assert METRICS["psnr"].format(m["psnr"]).endswith(" dB")
    assert METRICS["lpips"].format(None) == "—"
    assert METRICS["l2"].heading == "L2 ↓" and METRICS["ssim"].heading == "SSIM ↑"
    assert METRICS["fid"].compute is None and METRICS["fid"].average == "per-class mean"
    with pytest.raises(KeyError, match="unknown metric 'nope'"):
        metric("nope")


def test_ssim_and_psnr_are_computed_in_double_precision():
    """Both images are taken as float64: rounding either to float32 would move the figures."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.random((40, 40))
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    exact = structural_similarity(a, b, data_range=1.0)
    rounded = structural_similarity(a, b.astype(np.float32).astype(np.float64), data_range=1.0)
    assert abs(exact - rounded) > 1e-11  # float32 rounding is visible at this tolerance
    assert ssim(a, b) == pytest.approx(exact, rel=0, abs=1e-12)
    assert ssim(b, a) == pytest.approx(structural_similarity(b, a, data_range=1.0), rel=0, abs=1e-12)
    flat = np.full((8, 8), 0.1)  # 0.1 is not a float32 number
    assert psnr(flat, flat + 1e-6) == pytest.approx(120.0, abs=1e-6)
    assert psnr(flat + 1e-6, flat) == pytest.approx(120.0, abs=1e-6)
