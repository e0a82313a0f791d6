"""Diff-PGD on the tiny seeded SD folder, and the shared diffusion math it relies on."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from p2p_desktop.attacks import _diffusion as D
from p2p_desktop.attacks.diff_pgd import DiffPGD, DiffPGDConfig
from p2p_desktop.errors import Cancelled, InputError
from tests.tiny_sd import CLASSES, phantom, tiny_classifier
from tests.tiny_sd import context as _ctx


@pytest.fixture(scope="module")
def clf():
    return tiny_classifier()


def test_defaults_are_the_papers():
    cfg = DiffPGDConfig()
    assert (cfg.eps, cfg.alpha, cfg.steps) == (pytest.approx(16 / 255), pytest.approx(2 / 255), 10)
    assert cfg.strength == 0.06 and cfg.ddim_steps == 3 and cfg.variant == "fast" and cfg.prompt == ""
    # issue 12: every DDIM step down to t = 0 (ddim50 with t = 3 is four UNet calls)
    assert D.ddim_timesteps(60, 3) == [60, 40, 20, 0]
    assert D.ddim_timesteps(5, 10) == [5, 4, 3, 2, 1, 0]
    with pytest.raises(InputError):
        DiffPGDConfig(eps=0)
    with pytest.raises(InputError):
        DiffPGDConfig(variant="medium")


@pytest.mark.parametrize("variant, channels", [("fast", 1), ("full", 3)])
def test_runs_reports_and_respects_eps(bb, clf, variant, channels):
    eps = 8 / 255
    ctx = _ctx(clf, bb)
    out = DiffPGD(variant=variant, steps=3, eps=eps).run(phantom(40, channels), ctx)
    assert out.iterations == 3 and [e.step for e in ctx.history] == [1, 2, 3]
    assert all(set(e.probs) == set(CLASSES) for e in ctx.history)
    assert all(e.extra["delta_linf"] <= eps + 1e-6 for e in ctx.history)
    assert 0 < out.info["delta_linf"] <= eps + 1e-6
    assert out.info["t_start"] == 60 and out.info["ddim_timesteps"] == [60, 40, 20, 0]
    assert tuple(out.adversarial.shape) == (1, channels, 32, 32)
    assert 0 <= float(out.adversarial.min()) and float(out.adversarial.max()) <= 1


def test_deterministic_and_targeted(bb, clf):
    import torch

    x = phantom(32, 1, seed=4)
    a = DiffPGD(steps=2).run(x, _ctx(clf, bb, seed=3, target=2))
    b = DiffPGD(steps=2).run(x, _ctx(clf, bb, seed=3, target=2))
    assert torch.equal(a.adversarial, b.adversarial)


def test_cancel(bb, clf):
    ctx = _ctx(clf, bb)
    ctx.on_step = lambda e: ctx.cancel.cancel()
    with pytest.raises(Cancelled):
        DiffPGD(steps=10).run(phantom(32, 1), ctx)
    assert len(ctx.history) == 1


def test_registry_entries_load():
    from p2p_desktop.attacks.p2p import P2P
    from p2p_desktop.attacks.registry import get

    assert get("diff-pgd") is DiffPGD and get("p2p") is P2P
    assert DiffPGD.requires_backbone and P2P.requires_backbone


class _OracleUNet:
    """Predicts exactly the noise (ε) or velocity (v) that produced z_t from a known z0."""

    def __init__(self, z0, noise, abar, kind):
        self.z0, self.noise, self.abar, self.kind = z0, noise, abar, kind

    def __call__(self, z_t, t, encoder_hidden_states=None, return_dict=False):
        a = self.abar[t].view(-1, 1, 1, 1)
        eps = (z_t - a.sqrt() * self.z0) / (1 - a).sqrt()
        if self.kind == "v_prediction":
            return (a.sqrt() * eps - (1 - a).sqrt() * self.z0,)
        return (eps,)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_one_step_estimate_and_ddim_recover_z0_with_an_oracle(kind):
    import torch
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    abar = sched.alphas_cumprod.float()
    g = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    bb = SimpleNamespace(alphas_cumprod=abar, prediction_type=kind, dtype=torch.float32,
                         unet=_OracleUNet(z0, noise, abar, kind))
    t = torch.tensor([3, 49])
    z_t = D.add_noise(bb, z0, t, noise)
    x0, eps = D.unet_x0_eps(bb, z_t, t, torch.zeros(2, 1, 1))
    assert torch.allclose(x0, z0, atol=1e-4) and torch.allclose(eps, noise, atol=1e-3)
    assert torch.allclose(D.sdedit_latent(bb, z0, noise, 60, 3, torch.zeros(1, 1, 1)), z0, atol=1e-4)
