"""PerturbationMap: heatmap maps and levels, ROI statistics, lesion energy (Qt-free)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from p2p_desktop.metrics import compute_metrics
from p2p_desktop.metrics.perturbation import PerturbationMap


def _pair(seed: int = 0, shape=(20, 30, 3)):
    rng = np.random.default_rng(seed)
    original = rng.uniform(0.2, 0.8, shape).astype(np.float32)
    adversarial = np.clip(original + rng.uniform(-0.05, 0.05, shape), 0, 1).astype(np.float32)
    return original, adversarial


def test_delta_is_adversarial_minus_original():
    o, a = _pair()
    pm = PerturbationMap(o, a)
    np.testing.assert_array_equal(pm.delta, a - o)
    assert (pm.height, pm.width, pm.channels) == (20, 30, 3)


def test_grey_2d_inputs_and_shape_mismatch():
    pm = PerturbationMap(np.zeros((4, 5)), np.full((4, 5), 0.25))
    assert pm.channels == 1
    np.testing.assert_allclose(pm.signed(), 0.25)
    with pytest.raises(ValueError, match="differ in shape"):
        PerturbationMap(np.zeros((4, 5)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="mask"):
        PerturbationMap(np.zeros((4, 5)), np.zeros((4, 5)), mask=np.zeros((3, 3), bool))


def test_signed_is_channel_mean_and_absolute_is_channel_max():
    d = np.zeros((2, 2, 3), np.float32)
    d[0, 0] = (0.1, -0.1, 0.0)  # cancels in the mean, visible in |δ|
    d[1, 1] = (-0.3, -0.3, -0.3)
    pm = PerturbationMap.from_delta(d)
    assert pm.signed()[0, 0] == pytest.approx(0.0, abs=1e-7)
    assert pm.absolute()[0, 0] == pytest.approx(0.1)
    assert pm.signed()[1, 1] == pytest.approx(-0.3)
    assert pm.absolute()[1, 1] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="mode"):
        pm.map("log")


def test_levels_are_symmetric_for_signed_and_shrink_with_amplification():
    d = np.zeros((3, 3, 1), np.float32)
    d[0, 0, 0], d[2, 2, 0] = 0.02, -0.05
    pm = PerturbationMap.from_delta(d)
    assert pm.levels("signed") == pytest.approx((-0.05, 0.05))
    assert pm.levels("absolute") == pytest.approx((0.0, 0.05))
    assert pm.levels("signed", amplification=5) == pytest.approx((-0.01, 0.01))
    values, levels = pm.display("absolute", 2)
    assert values.shape == (3, 3) and levels == pytest.approx((0.0, 0.025))
    n = pm.normalised("signed", amplification=2)
    assert n.min() == -1.0 and n[0, 0] == pytest.approx(0.8)
    with pytest.raises(ValueError):
        pm.levels("signed", amplification=0)
    # zero perturbation: a tiny, non-zero range (so a colour bar can still be drawn)
    flat = PerturbationMap.from_delta(np.zeros((2, 2, 1)))
    lo, hi = flat.levels("signed")
    assert lo < 0 < hi


def test_region_stats_match_numpy_and_whole_image_matches_metrics():
    o, a = _pair(1)
    pm = PerturbationMap(o, a)
    s = pm.region_stats(5, 3, 10, 4)
    region = (a - o)[3:7, 5:15].astype(np.float64)
    assert (s.x, s.y, s.width, s.height, s.pixels) == (5, 3, 10, 4, 40)
    assert s.mean == pytest.approx(region.mean())
    assert s.abs_mean == pytest.approx(np.abs(region).mean())
    assert s.max_abs == pytest.approx(np.abs(region).max())
    assert s.energy == pytest.approx(np.sum(region ** 2))
    assert s.l2 == pytest.approx(math.sqrt(np.sum(region ** 2)))
    metrics, _ = compute_metrics(o, a)
    whole = pm.whole_image_stats()
    assert whole.l2 == pytest.approx(metrics["l2"], rel=1e-5)
    assert whole.max_abs == pytest.approx(metrics["linf"], rel=1e-5)


def test_region_is_clipped_to_the_image_and_may_be_empty():
    pm = PerturbationMap.from_delta(np.ones((10, 10, 1), np.float32) * 0.1)
    s = pm.region_stats(-5.5, 8, 8, 100)
    assert (s.x, s.y, s.width, s.height) == (0, 8, 3, 2)
    assert s.pixels == 6 and s.energy == pytest.approx(6 * 0.01)
    empty = pm.region_stats(20, 20, 5, 5)
    assert empty.pixels == 0 and empty.l2 == 0.0


def test_value_at():
    o, a = _pair(2)
    pm = PerturbationMap(o, a)
    np.testing.assert_allclose(pm.value_at(4, 7), (a - o)[4, 7])
    assert pm.value_at(-1, 0) is None and pm.value_at(0, 30) is None


def test_lesion_energy_splits_the_total():
    d = np.zeros((10, 10, 1), np.float32)
    d[2:4, 2:4] = 0.1  # 4 pixels inside the lesion
    d[8, 8] = 0.2  # 1 pixel outside
    mask = np.zeros((10, 10), bool)
    mask[1:5, 1:5] = True  # 16 pixels
    pm = PerturbationMap.from_delta(d, mask)
    le = pm.lesion_energy()
    assert le.inside_pixels == 16 and le.outside_pixels == 84
    assert le.inside_energy == pytest.approx(4 * 0.01)
    assert le.outside_energy == pytest.approx(0.04)
    assert le.inside_fraction == pytest.approx(0.5)
    assert le.total_energy == pytest.approx(pm.whole_image_stats().energy)
    assert le.density_ratio == pytest.approx((0.04 / 16) / (0.04 / 84))
    assert PerturbationMap.from_delta(d).lesion_energy() is None
