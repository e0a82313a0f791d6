"""The paper's metric protocol pinned against independent references.

The P2P authors' metric script views each image as RGB, Resize(256) (shorter side to 256,
bilinear, antialiased; the longer side truncated to a whole pixel) and CenterCrop(256), then
measures SSIM with an 11×11 Gaussian window (σ = 1.5) and LPIPS (AlexNet) on those views.
References here: PIL's own bilinear resize and a hand-made centre crop for the view,
scikit-image's Gaussian SSIM, and an LPIPS model built in the test.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from p2p_desktop.metrics import paper_metrics, paper_view, similarity, ssim, ssim_paper


def _pil_view(channel: np.ndarray) -> np.ndarray:
    """One channel through PIL: shorter side to 256 (bilinear, antialiased), centre 256 × 256."""
    h, w = channel.shape
    if h <= w:
        size = (int(256 * w / h), 256)
    else:
        size = (256, int(256 * h / w))
    r = np.asarray(Image.fromarray(channel.astype(np.float32), mode="F").resize(size, Image.BILINEAR))
    top, left = int(round((r.shape[0] - 256) / 2)), int(round((r.shape[1] - 256) / 2))
    return r[top:top + 256, left:left + 256]


def test_a_grey_image_is_resized_on_its_shorter_side_cropped_and_made_rgb():
    rng = np.random.default_rng(0)
    grey = rng.random((300, 410)).astype(np.float32)  # 410 * 256 / 300 = 349.9 -> 349, crop at 46
    view = paper_view(grey)
    assert tuple(view.shape) == (1, 3, 256, 256) and str(view.dtype) == "torch.float32"
    v = view[0].numpy()
    assert np.array_equal(v[0], v[1]) and np.array_equal(v[1], v[2])
    np.testing.assert_allclose(v[0], _pil_view(grey), atol=1e-4)
    # (H, W, 1) is the same image
    assert np.array_equal(paper_view(grey[:, :, None])[0].numpy(), v)


def test_a_colour_portrait_keeps_its_channels_in_order():
    rng = np.random.default_rng(1)
    rgb = rng.random((420, 290, 3)).astype(np.float32)
    v = paper_view(rgb)[0].numpy()
    for c in range(3):
        np.testing.assert_allclose(v[c], _pil_view(rgb[:, :, c]), atol=1e-4)


def test_the_view_is_antialiased():
    """A fine stripe pattern shrunk by 3 averages out; without antialiasing it would alias."""
    stripes = np.tile(np.array([1.0, 0.0, 0.0], np.float32), (768, 256))  # 768 x 768
    v = paper_view(stripes)[0, 0].numpy()
    np.testing.assert_allclose(v, _pil_view(stripes), atol=1e-4)
    assert float(v.std()) < 0.02 and float(v.mean()) == pytest.approx(1 / 3, abs=0.01)


def test_the_view_is_clamped_to_the_unit_range():
    rng = np.random.default_rng(2)
    wild = (rng.random((256, 256)) * 2.0 - 0.5).astype(np.float32)  # [-0.5, 1.5]
    v = paper_view(wild)[0, 0].numpy()
    np.testing.assert_allclose(v, np.clip(_pil_view(wild), 0, 1), atol=1e-4)
    assert v.min() == 0.0 and v.max() == 1.0


def test_paper_ssim_matches_an_independent_gaussian_ssim():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.random((300, 410)).astype(np.float32)
    b = np.clip(a + 0.08 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    va = np.repeat(_pil_view(a)[:, :, None], 3, axis=2).astype(np.float64)
    vb = np.repeat(_pil_view(b)[:, :, None], 3, axis=2).astype(np.float64)
    # Wang et al.'s Gaussian SSIM (σ = 1.5, 11 × 11 window) in scikit-image
    ref = structural_similarity(va, vb, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert ssim_paper(a, b) == pytest.approx(ref, abs=1e-4)
    assert ssim_paper(a, a) == pytest.approx(1.0)
    # the Resize(256)+CenterCrop(256) view is part of the protocol: a wide image is cropped, not squeezed
    wide = np.zeros((256, 512), np.float32)
    wide[:, 384:] = 1.0  # a change only outside the central 256 x 256 crop
    assert ssim_paper(np.zeros_like(wide), wide) == pytest.approx(1.0) and ssim(np.zeros_like(wide), wide) < 0.9


def test_paper_ssim_of_colour_images_averages_the_channels():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(3)
    a = rng.random((256, 256, 3)).astype(np.float32)
    b = a.copy()
    b[:, :, 1] = np.clip(b[:, :, 1] + 0.2 * rng.standard_normal((256, 256)), 0, 1)  # green only
    per_channel = [structural_similarity(a[:, :, c].astype(np.float64), b[:, :, c].astype(np.float64),
                                         data_range=1.0, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False) for c in range(3)]
    assert per_channel[0] == per_channel[2] == 1.0 and per_channel[1] < 0.9
    assert ssim_paper(a, b) == pytest.approx(np.mean(per_channel), abs=1e-4)


def _reference_lpips(a: np.ndarray, b: np.ndarray) -> float:
    import lpips
    import torch

    def t(x):
        rgb = np.stack([_pil_view(x[:, :, c] if x.ndim == 3 else x) for c in range(3 if x.ndim == 3 else 1)])
        rgb = np.repeat(rgb, 3 // rgb.shape[0], axis=0)
        return torch.from_numpy(rgb)[None].float() * 2 - 1

    with torch.no_grad():
        return float(lpips.LPIPS(net="alex", verbose=False).eval()(t(a), t(b)).item())


def test_paper_lpips_is_computed_on_the_paper_views(seeded_alexnet_hub):
    rng = np.random.default_rng(4)
    a = rng.random((300, 280, 3)).astype(np.float32)
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    expected = _reference_lpips(a, b)
    assert expected > 0
    assert similarity.lpips_paper(a, b) == pytest.approx(expected, rel=1e-4)
    grey_a, grey_b = a[:, :, 0], b[:, :, 0]
    assert similarity.lpips_paper(grey_a, grey_b) == pytest.approx(_reference_lpips(grey_a, grey_b), rel=1e-4)
    # not the native LPIPS: the view is resized and cropped first
    assert similarity.lpips_paper(a, b) != pytest.approx(similarity.lpips_distance(a, b), rel=1e-3)
    got, notes = paper_metrics(a, b)
    assert list(got) == ["ssim", "lpips"] and notes == []
    assert got["ssim"] == ssim_paper(a, b) and got["lpips"] == pytest.approx(expected, rel=1e-4)


def test_without_alexnet_paper_lpips_is_null_and_the_note_says_why(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    ok, note = similarity.lpips_status()
    assert not ok and similarity.ALEXNET_FILE in note
    rng = np.random.default_rng(5)
    a = rng.random((64, 64)).astype(np.float32)
    b = np.clip(a + 0.05, 0, 1)
    assert similarity.lpips_paper(a, b) is None
    got, notes = paper_metrics(a, b)
    assert got == {"ssim": ssim_paper(a, b), "lpips": None} and notes == [note]


def test_one_lpips_network_per_device_frozen_and_in_eval_mode(seeded_alexnet_hub):
    net = similarity.lpips_net()
    assert net is similarity.lpips_net("cpu")
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert {p.device.type for p in net.parameters()} == {"cpu"}
    meta = similarity.lpips_net("meta")
    assert meta is not net and meta is similarity.lpips_net("meta")
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    assert similarity.lpips_net("cpu") is net
