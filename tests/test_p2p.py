"""P2P on the tiny seeded SD folder: presets, reporting, cancel, determinism, fresh state, bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from p2p_desktop.attacks import _diffusion as D
from p2p_desktop.attacks.p2p import P2P, P2PConfig, lpips_available, parse_class_words
from p2p_desktop.errors import Cancelled, InputError
from p2p_desktop.models.backbone import load_backbone
from tests.tiny_sd import CLASSES, phantom, save_tiny_sd, tiny_classifier
from tests.tiny_sd import context as _ctx


@pytest.fixture(scope="module")
def clf():
    return tiny_classifier()


class ChangeDetector:
    """A classifier that calls the clean image "benign" and anything visibly different "normal"."""

    @staticmethod
    def build(x_clean, size=32):
        import torch
        import torch.nn as nn

        from p2p_desktop.models.classifier import Classifier, ModelCard

        card = ModelCard(name="change-detector", architecture="custom", classes=CLASSES, weights="none",
                         input_size=size)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("ref", torch.zeros(1, 3, size, size))

            def forward(self, z):
                d = ((z - self.ref) ** 2).flatten(1).mean(1, keepdim=True)
                zero = torch.zeros_like(d)
                return torch.cat([0.5 - 1000 * d, zero - 1.0, zero], dim=1)

        clf = Classifier(Net(), card)
        clf.module.ref.copy_(clf.preprocess(x_clean))
        return clf


def test_fast_preset_reports_every_step(bb, clf):
    x = phantom(48, 1)
    att = P2P.from_preset("fast", steps=5, early_stop=False)
    events = []
    ctx = _ctx(clf, bb, on_step=events.append)
    out = att.run(x, ctx)
    assert out.iterations == 5
    assert [e.step for e in events] == [1, 2, 3, 4, 5] and all(e.total == 5 for e in events)
    assert all(set(e.probs) == set(CLASSES) and np.isfinite(e.loss) for e in events)
    assert all({"t", "mse"} <= set(e.extra) and 0 <= e.extra["t"] < 50 for e in events)
    assert tuple(out.adversarial.shape) == (1, 1, 32, 32)  # grey in -> grey out, at the backbone size
    assert 0 <= float(out.adversarial.min()) and float(out.adversarial.max()) <= 1
    info = out.info
    assert info["preset"] == "fast" and info["learn"] == "text_encoder"
    assert info["prompt"] == "ultrasound image of benign tumor in breast"
    assert info["learned_parameters"] == sum(p.numel() for p in bb.text_encoder.parameters()) + 32
    assert isinstance(info["success"], bool) and 0 <= info["chosen_t"] < 50
    words = info["nearest_words"]
    assert [w["token"] for w in words] == ["ultrasound", "image", "of", "benign (new token)", "tumor", "in",
                                           "breast"]
    assert all(len(w["nearest"]) == 3 for w in words)


def test_paper_preset_runs_with_accumulation(bb, clf):
    att = P2P.from_preset("paper", steps=4)
    assert att.config.grad_accum == 4 and att.config.lr == pytest.approx(2e-3)
    assert att.config.fidelity == "mse" and att.config.fidelity_weight == 1.0 and not att.config.early_stop
    ctx = _ctx(clf, bb)
    out = att.run(phantom(32, 3), ctx)
    assert out.iterations == 4 and len(ctx.history) == 4
    # issue 12: the paper preset works at the authors' 224 px, writes the decoded image, fp32, CE x 1e10
    assert tuple(out.adversarial.shape) == (1, 3, 224, 224)
    assert out.info["preset"] == "paper" and out.info["resolution"] == 224 and out.info["output"] == "decoded"
    assert out.info["precision"] == "fp32" and out.info["cls_scale"] == 1e10


def test_cancel_stops_within_one_iteration(bb, clf):
    seen = []
    ctx = _ctx(clf, bb)

    def on_step(event):
        seen.append(event.step)
        if event.step == 2:
            ctx.cancel.cancel()

    ctx.on_step = on_step
    with pytest.raises(Cancelled):
        P2P.from_preset("fast", steps=20, early_stop=False).run(phantom(32, 1), ctx)
    assert seen == [1, 2]


def test_deterministic_and_fresh_state_per_image(bb, clf):
    import torch

    before = {k: v.clone() for k, v in bb.text_encoder.state_dict().items()}
    att = P2P.from_preset("fast", steps=4, early_stop=False)
    x = phantom(40, 1, seed=3)
    a = att.run(x, _ctx(clf, bb, seed=7))
    b = att.run(x, _ctx(clf, bb, seed=7))  # same backbone object: no state may carry over
    assert torch.equal(a.adversarial, b.adversarial)
    assert a.info["nearest_words"] == b.info["nearest_words"]
    after = bb.text_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in bb.text_encoder.parameters())
    c = att.run(x, _ctx(clf, bb, seed=8))
    assert not torch.equal(a.adversarial, c.adversarial)


def test_selection_keeps_smallest_t_then_lowest_mse(bb):
    x = phantom(32, 3, seed=1)
    clf = ChangeDetector.build(x)
    ctx = _ctx(clf, bb)
    out = P2P.from_preset("fast", steps=8, early_stop=False, batch_timesteps=1,
                          selection="min_t_then_mse").run(x, ctx)
    assert out.info["success"] and all(e.success for e in ctx.history)
    seen = [(e.extra["t"], e.extra["mse"]) for e in ctx.history]
    assert (out.info["chosen_t"], pytest.approx(out.info["mse"])) == min(seen)
    assert out.info["predicted"] == "normal"


def test_fast_selection_keeps_lowest_mse_success(bb):
    x = phantom(32, 3, seed=1)
    clf = ChangeDetector.build(x)
    ctx = _ctx(clf, bb)
    out = P2P.from_preset("fast", steps=8, early_stop=False, batch_timesteps=1).run(x, ctx)
    assert P2P.from_preset("fast").config.selection == "min_mse"
    seen = [e.extra["mse"] for e in ctx.history if e.success]
    assert out.info["success"] and seen
    assert out.info["mse"] == pytest.approx(min(seen))


def test_margin_and_the_no_success_fallback(bb):
    x = phantom(32, 3, seed=1)
    clf = ChangeDetector.build(x)  # fooled images: p(normal) ≈ 0.73, p(benign) ≈ 0
    ok = P2P.from_preset("fast", steps=2, margin=0.7).run(x, _ctx(clf, bb))
    assert ok.info["success"]
    ctx = _ctx(clf, bb)
    out = P2P.from_preset("fast", steps=3, margin=0.9).run(x, ctx)
    assert not out.info["success"] and not any(e.success for e in ctx.history)
    assert out.iterations == 3 and tuple(out.adversarial.shape) == (1, 3, 32, 32)


def test_early_stop_after_patience(bb):
    x = phantom(32, 3, seed=1)
    out = P2P.from_preset("fast", steps=60, patience=3).run(x, _ctx(ChangeDetector.build(x), bb))
    assert out.info["stopped_early"] and out.iterations < 60


@pytest.mark.parametrize("bound, eps", [("linf", 0.03), ("l2", 0.5)])
def test_bound_is_respected(bb, bound, eps):
    import torch

    x = phantom(48, 1, seed=2)
    clf = ChangeDetector.build(x)
    out = P2P.from_preset("fast", steps=3, early_stop=False, bound=bound, bound_eps=eps).run(x, _ctx(clf, bb))
    delta = out.adversarial - D.resize(x, 32)
    norm = float(delta.abs().max()) if bound == "linf" else float(delta.flatten().norm())
    assert norm <= eps + 1e-5
    assert out.info["bound"]["norm"] == bound and out.info["bound"][bound] <= eps + 1e-5
    assert float(delta.abs().max()) > 0 and torch.isfinite(delta).all()


def test_token_embeddings_only_and_targeted(bb, clf):
    import torch

    before = bb.text_encoder.get_input_embeddings().weight.clone()
    att = P2P.from_preset("fast", steps=3, learn="token_embeddings", early_stop=False)
    out = att.run(phantom(32, 1), _ctx(clf, bb, label=0, target=1))
    assert out.info["learned_parameters"] == 7 * 32  # 7 distinct prompt tokens x 32 dims
    assert torch.equal(before, bb.text_encoder.get_input_embeddings().weight)
    assert out.info["nearest_words"][0]["nearest"][0][0] == "ultrasound"  # 3 small steps: still close


def test_without_new_class_tokens_uses_the_vocabulary_word(bb, clf):
    out = P2P.from_preset("fast", steps=2, new_class_tokens=False).run(phantom(32, 1), _ctx(clf, bb, label=2))
    assert out.info["prompt"] == "ultrasound image of no tumor in breast"
    assert [w["token"] for w in out.info["nearest_words"]][3] == "no"


def test_v_prediction_backbone(tmp_path, clf):
    bb = load_backbone(save_tiny_sd(tmp_path / "v", prediction_type="v_prediction"), device="cpu")
    out = P2P.from_preset("fast", steps=2).run(phantom(32, 3), _ctx(clf, bb))
    assert out.iterations == 2


def test_config_is_validated():
    with pytest.raises(InputError, match="exactly once"):
        P2PConfig(prompt="ultrasound image of breast")
    with pytest.raises(InputError, match="class:word"):
        P2PConfig(class_words="benign")
    with pytest.raises(InputError, match="unknown preset"):
        P2P.from_preset("turbo")
    with pytest.raises(InputError, match="steps"):
        P2P.from_preset("fast", steps=0)
    assert parse_class_words("benign:benign, normal:no") == {"benign": "benign", "normal": "no"}
    assert P2P().config == P2P.from_preset("fast").config  # fast is the default


@pytest.mark.skipif(lpips_available(), reason="LPIPS weights are installed here")
def test_lpips_without_weights_is_refused_before_work(bb, clf):
    ctx = _ctx(clf, bb)
    with pytest.raises(InputError, match="AlexNet weights"):
        P2P.from_preset("fast", fidelity="lpips").run(phantom(32, 1), ctx)
    assert ctx.history == []


def test_through_the_runner(bb, clf):
    from p2p_desktop.attacks.runner import run_attack
    from p2p_desktop.io.study import Study

    img = np.round(phantom(40, 1)[0].permute(1, 2, 0).numpy() * 255) / 255
    study = Study(path=Path("phantom.png"), image=img.astype(np.float32), kind="image")
    result = run_attack(study, clf, P2P.from_preset("fast", steps=2), backbone=bb)
    assert result.adversarial.shape == img.shape  # mapped back to the source geometry
    assert len(result.history) == 2 and result.backbone["resolution"] == 32
