"""The runner's judgement: success and the adversarial label come from a fresh classification of
the image *as written* (source geometry, quantised to the source's levels), never from the
attack's internal image.

A classifier whose verdict flips under 8-bit rounding makes the difference observable: it is
the seeded toy CNN (tests/toy.py) plus one readable term that sees sub-level detail. FGSM with
ε = 3.5/255 leaves every pixel half-way between two 8-bit levels; the written image (the change
rounded toward zero, 3/255) sits on the levels again.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from p2p_desktop.attacks.base import Attack, AttackConfig, AttackOutput
from p2p_desktop.attacks.fgsm import FGSM
from p2p_desktop.attacks.procedure import metric_protocol
from p2p_desktop.attacks.runner import AttackResult, run_attack
from p2p_desktop.errors import InputError
from tests.toy import CLASSES, toy_image, toy_module

EPS = 3.5 / 255


class _RoundingSensitive:
    """``forward`` of a torch module: toy CNN (× 0.01) + fixed terms on the image's level grid."""

    @staticmethod
    def build(mode: str, clean=None):
        import torch
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.base = toy_module(seed=0)  # gives FGSM a non-zero, seeded gradient
                self.register_buffer("clean", torch.zeros(1) if clean is None else clean)

            def forward(self, x):
                grey = x.mean(dim=1, keepdim=True)
                levels = grey * 255
                off_grid = (levels - torch.round(levels)).abs().mean(dim=(1, 2, 3))  # 0 on 8-bit levels
                moved = ((grey - self.clean).abs() * 255).mean(dim=(1, 2, 3)).clamp(max=1.0)
                zero = torch.zeros_like(off_grid)
                if mode == "internal-only":  # malignant only between levels
                    malignant = 4.0 * off_grid
                else:  # "written-only": malignant once moved by whole levels, not between them
                    malignant = 2.0 * moved - 4.0 * off_grid
                bias = torch.stack([zero + 0.5, malignant, zero], dim=1)
                return 0.01 * self.base(x) + bias

        return Net()


def _classifier(mode: str, clean=None):
    from p2p_desktop.models.classifier import Classifier, ModelCard

    card = ModelCard(name=f"rounding-{mode}", architecture="toy-cnn", classes=CLASSES, weights="none",
                     input_size=32, mean=(0.0,), std=(1.0,))
    return Classifier(_RoundingSensitive.build(mode, clean), card)


@pytest.fixture
def png_study(tmp_path):
    """An 8-bit grey PNG (32×32 toy lesion) loaded through the real loader."""
    from p2p_desktop.io import load_study

    img = toy_image(np.random.RandomState(1), 0)[:, :, 0]
    img = np.clip(img, 0.2, 0.8)  # FGSM never clips at 0 or 1
    path = tmp_path / "study" / "lesion.png"
    path.parent.mkdir()
    Image.fromarray(np.round(img * 255).astype(np.uint8), mode="L").save(path)
    return load_study(path)


def _on_levels(a: np.ndarray) -> bool:
    return bool(np.allclose(a * 255, np.round(a * 255), atol=1e-4))


def _fresh(clf, image):
    label, probs = clf.predict(image)
    return label, probs


def test_success_and_label_come_from_the_written_image_not_the_internal_one(png_study, tmp_path):
    clf = _classifier("internal-only")
    assert _fresh(clf, png_study.image)[0] == "benign"
    r = run_attack(png_study, clf, FGSM(eps=EPS))
    # the attack's own image fooled the classifier ...
    assert r.internal_label == "malignant" and r.success_internal is True
    # ... the image as written does not: that is what is reported
    assert _on_levels(r.adversarial) and not np.array_equal(r.adversarial, r.original)
    assert r.adversarial_label == "benign" and r.success is False
    label, probs = _fresh(clf, r.adversarial)
    assert (r.adversarial_label, r.adversarial_probs) == (label, pytest.approx(probs, abs=1e-7))
    assert r.internal_probs["malignant"] > 0.5 > r.adversarial_probs["malignant"]
    assert ("the attack's internal image and the written (resampled, quantised) image disagree: internal success, "
            "written failure; the written verdict is reported") in r.notes
    assert r.original.dtype == r.adversarial.dtype == r.perturbation.dtype == np.float32
    assert 0 < r.seconds < 60
    s = r.summary()
    assert s["success"] is False and s["adversarial"]["label"] == "benign"
    assert s["internal"] == {"label": "malignant", "probs": r.internal_probs, "success": True}
    # the metrics describe the written change (3 levels, rounded toward zero), not the internal 3.5
    assert r.metrics["linf"] == pytest.approx(3 / 255, abs=1e-6)
    assert np.abs(r.perturbation).max() == pytest.approx(3 / 255, abs=1e-6)
    np.testing.assert_array_equal(r.perturbation, r.adversarial - r.original)


def test_the_written_png_read_back_gets_the_reported_verdict(png_study, tmp_path):
    from p2p_desktop.export.images import write_image_outputs
    from p2p_desktop.io import load_study
    from p2p_desktop.io.outputs import OutputSet

    clf = _classifier("internal-only")
    r = run_attack(png_study, clf, FGSM(eps=EPS))
    with OutputSet(tmp_path / "out", [png_study.path]) as outs:
        write_image_outputs(r, png_study, outs)
    png = next(rec["path"] for rec in outs.records if rec["kind"] == "png")
    again = load_study(png)
    np.testing.assert_allclose(again.image, r.adversarial, atol=1e-6)
    assert _fresh(clf, again.image)[0] == r.adversarial_label == "benign"


def test_a_written_image_can_succeed_where_the_internal_one_failed(png_study):
    import torch

    clean = torch.from_numpy(png_study.image[:, :, 0])[None, None]
    clf = _classifier("written-only", clean)
    r = run_attack(png_study, clf, FGSM(eps=EPS))
    assert r.internal_label == "benign" and r.success_internal is False
    assert r.adversarial_label == "malignant" and r.success is True
    assert _fresh(clf, r.adversarial)[0] == "malignant"
    assert ("the attack's internal image and the written (resampled, quantised) image disagree: internal failure, "
            "written success; the written verdict is reported") in r.notes


def test_targeted_success_is_judged_on_the_written_image_too(png_study):
    clf = _classifier("internal-only")
    r = run_attack(png_study, clf, FGSM(eps=EPS, target="malignant"))
    assert r.target == "malignant"
    assert r.success_internal is True and r.success is False
    # the other target: not reached by either image
    r2 = run_attack(png_study, clf, FGSM(eps=EPS, target="normal"))
    assert r2.success is False and r2.success_internal is False
    assert not any("disagree" in n for n in r2.notes)


def test_agreeing_verdicts_add_no_note_and_keep_every_field(png_study):
    from tests.toy import trained_toy_classifier

    clf = trained_toy_classifier(seed=0)
    r = run_attack(png_study, clf, FGSM(eps=0.3, seed=5), true_label="benign")
    assert isinstance(r, AttackResult)
    assert r.true_label == "benign" and r.original_label == _fresh(clf, png_study.image)[0]
    assert r.success == (r.adversarial_label != "benign") and r.success == r.success_internal
    assert not any("disagree" in n for n in r.notes)
    assert r.seed == 5 and r.config["seed"] == 5 and r.config["eps"] == 0.3 and r.attack == "fgsm"
    assert r.iterations == 1 and r.seconds > 0 and len(r.history) == 1
    assert r.classes == CLASSES and r.device == "cpu" and r.classifier["name"] == "toy"
    assert r.study_path == str(png_study.path) and r.frame == 0 and r.backbone is None
    png_study.frame_index = 2  # as for frame 2 of a cine loop
    assert run_attack(png_study, clf, FGSM(eps=0.3, seed=5), true_label="benign").frame == 2
    assert set(r.versions) >= {"p2p-desktop", "python", "torch", "numpy"}
    assert sum(r.original_probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert r.original_probs == pytest.approx(_fresh(clf, png_study.image)[1], abs=1e-6)
    np.testing.assert_array_equal(r.original, png_study.image)


def test_true_label_comes_from_the_class_folder_else_the_clean_prediction(png_study):
    clf = _classifier("internal-only")  # predicts benign on the clean image
    r = run_attack(png_study, clf, FGSM(eps=EPS))
    assert r.true_label == "benign" and not any("misclassified" in n for n in r.notes)
    png_study.label = "normal"  # a BUSI-style class folder
    r = run_attack(png_study, clf, FGSM(eps=EPS))
    assert r.true_label == "normal"
    assert any("already misclassified (benign instead of normal)" in n for n in r.notes)
    # untargeted against 'normal': benign (written) already counts as a success
    assert r.success is True
    png_study.label = "not-a-class"  # a folder name that is no class: the clean prediction
    assert run_attack(png_study, clf, FGSM(eps=EPS)).true_label == "benign"
    r = run_attack(png_study, clf, FGSM(eps=EPS), true_label="malignant")  # explicit wins
    assert r.true_label == "malignant"


def test_bad_labels_and_targets_are_refused_before_the_attack(png_study):
    clf = _classifier("internal-only")
    with pytest.raises(InputError, match=r"^true label 'cyst' is not a class of rounding-internal-only "
                                         r"\(benign, malignant, normal\)$"):
        run_attack(png_study, clf, FGSM(eps=EPS), true_label="cyst")
    with pytest.raises(InputError, match="target class 'benign' is the image's own class"):
        run_attack(png_study, clf, FGSM(eps=EPS, target="benign"))
    with pytest.raises(InputError, match="unknown class 'cyst'"):
        run_attack(png_study, clf, FGSM(eps=EPS, target="cyst"))

    class NeedsBackbone(FGSM):
        name = "needs-backbone"
        requires_backbone = True

    with pytest.raises(InputError, match="'needs-backbone' needs a diffusion backbone"):
        run_attack(png_study, clf, NeedsBackbone(eps=EPS))


# -- the output is brought back to the source's geometry before it is judged --------------------
@dataclasses.dataclass(frozen=True)
class _ShiftConfig(AttackConfig):
    size: int = 16
    channels: int = 1
    shift: float = 0.1


class _WorksAtOtherGeometry(Attack):
    """An attack working at another resolution / channel count: adds ``shift`` there."""

    name = "other-geometry"
    Config = _ShiftConfig

    def run(self, x, ctx):
        import torch.nn.functional as F

        cfg = self.config
        small = F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", align_corners=False, antialias=True)
        if cfg.channels != small.shape[1]:
            small = small.mean(dim=1, keepdim=True).expand(-1, cfg.channels, -1, -1)
        adv = (small + cfg.shift).clamp(0, 1)
        ctx.step(1, 1, 0.0, ctx.classifier.probs(adv)[0])
        return AttackOutput(adversarial=adv, iterations=1, info={"size": cfg.size})


def test_a_lower_resolution_output_contributes_its_perturbation_upsampled(png_study):
    clf = _classifier("internal-only")
    # +10.5 levels at 16 px: +10 levels everywhere once written (the change rounds toward zero)
    r = run_attack(png_study, clf, _WorksAtOtherGeometry(size=16, shift=10.5 / 255))
    assert r.adversarial.shape == png_study.image.shape  # source geometry, source detail kept
    np.testing.assert_allclose(r.adversarial, png_study.image + 10 / 255, atol=1e-6)
    assert r.info["size"] == 16  # the attack's own info is passed through (the runner adds label_oracle)
    r3 = run_attack(png_study, clf, _WorksAtOtherGeometry(size=32, channels=3, shift=5.5 / 255))
    np.testing.assert_allclose(r3.adversarial, png_study.image + 5 / 255, atol=1e-6)


def test_a_grey_output_on_a_colour_source_is_spread_to_every_channel(tmp_path):
    from p2p_desktop.io import load_study

    rng = np.random.RandomState(2)
    rgb = np.round(np.clip(0.3 + 0.4 * rng.rand(32, 32, 3), 0, 1) * 255).astype(np.uint8)
    (tmp_path / "study").mkdir()
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "study" / "c.png")
    study = load_study(tmp_path / "study" / "c.png")
    clf = _classifier("internal-only")
    r = run_attack(study, clf, _WorksAtOtherGeometry(size=32, channels=1, shift=0.0))
    grey = study.image.mean(axis=2, keepdims=True)
    expected = study.quantise(np.repeat(grey, 3, axis=2))
    np.testing.assert_allclose(r.adversarial, expected, atol=1e-6)
    r = run_attack(study, clf, _WorksAtOtherGeometry(size=16, channels=3, shift=0.9))
    assert r.adversarial.max() == 1.0  # clamped to [0,1] before it is written
    assert _on_levels(r.adversarial)


# -- seeding, cancel, out-of-memory retry, the summary ------------------------------------------
@dataclasses.dataclass(frozen=True)
class _NoisyConfig(AttackConfig):
    batch: int = 1
    fail: str = ""  # "oom" / "value": raise that before (and after) drawing random numbers
    fail_batch_min: int = 2


class _Noisy(Attack):
    """Adds seeded noise (torch's global RNG and the context's generator); 'runs out of memory'
    when ``batch`` ≥ ``fail_batch_min``, after drawing random numbers (so a retry must reseed)."""

    name = "noisy"
    Config = _NoisyConfig
    requires_backbone = False

    def run(self, x, ctx):
        import torch

        cfg = self.config
        g = torch.rand(x.shape) * 0.02 + torch.rand(x.shape, generator=ctx.generator) * 0.02
        if cfg.fail and cfg.batch >= cfg.fail_batch_min:
            if cfg.fail == "oom":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
            raise ValueError("not a memory problem")
        ctx.step(1, 1, 0.0, ctx.classifier.probs(x + g)[0])
        return AttackOutput(adversarial=(x + g).clamp(0, 1), iterations=1, info={"batch": cfg.batch})

    def cheaper(self):
        return _Noisy(self.config.replace(batch=1)) if self.config.batch > 1 else None


def _expected_noisy(study, seed: int) -> np.ndarray:
    """The noisy attack's written image, computed here from the seed alone."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(study.image.transpose(2, 0, 1)))[None]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    g = torch.rand(x.shape) * 0.02 + torch.rand(x.shape, generator=gen) * 0.02
    adv = (x + g).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    return study.quantise(adv)


def test_the_seed_drives_both_random_sources(png_study):
    clf = _classifier("internal-only")
    r = run_attack(png_study, clf, _Noisy(seed=9))
    np.testing.assert_array_equal(r.adversarial, _expected_noisy(png_study, 9))
    assert not np.array_equal(r.adversarial, _expected_noisy(png_study, 0))
    assert r.seed == 9


def test_out_of_memory_retries_once_at_lower_cost_reseeded(png_study):
    clf = _classifier("internal-only")
    events = []
    r = run_attack(png_study, clf, _Noisy(seed=3, batch=4, fail="oom"), on_step=events.append)
    assert r.config["batch"] == 1 and {k: v for k, v in r.info.items() if k != "label_oracle"} == {"batch": 1}
    assert "noisy ran out of memory on cpu; retried at lower cost with {'batch': 1}" in r.notes
    # the retry starts from the seed again: the same image as a first run at the lower cost
    np.testing.assert_array_equal(r.adversarial, _expected_noisy(png_study, 3))
    assert len(r.history) == 1 and len(events) == 1 and r.history[0] is events[0]


def test_out_of_memory_without_or_after_the_cheaper_run_is_one_clear_error(png_study):
    from p2p_desktop.errors import OutOfMemory

    clf = _classifier("internal-only")
    with pytest.raises(OutOfMemory) as exc:
        run_attack(png_study, clf, _Noisy(batch=1, fail="oom", fail_batch_min=1))
    assert str(exc.value) == ("noisy ran out of memory on cpu; free memory (close other jobs), use a smaller "
                              "model or --device cpu")
    with pytest.raises(OutOfMemory) as exc:
        run_attack(png_study, clf, _Noisy(batch=3, fail="oom", fail_batch_min=1))
    assert str(exc.value) == ("noisy ran out of memory on cpu, also at lower cost {'batch': 1}; use --device cpu "
                              "or a smaller backbone")
    with pytest.raises(ValueError, match="not a memory problem"):  # other errors pass unchanged
        run_attack(png_study, clf, _Noisy(batch=1, fail="value", fail_batch_min=1))

    class ValueAfterOom(_Noisy):
        def cheaper(self):
            return _Noisy(self.config.replace(batch=1, fail="value", fail_batch_min=1))

    with pytest.raises(ValueError, match="not a memory problem"):
        run_attack(png_study, clf, ValueAfterOom(batch=2, fail="oom"))


def test_what_counts_as_out_of_memory():
    import torch

    from p2p_desktop.attacks.runner import is_out_of_memory

    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend Out Of Memory (MPS allocated: 1 GiB)"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))
    assert not is_out_of_memory(KeyboardInterrupt())


def test_a_cancel_before_or_during_the_attack_produces_nothing(png_study):
    from p2p_desktop.cancel import CancelToken
    from p2p_desktop.errors import Cancelled

    clf = _classifier("internal-only")
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        run_attack(png_study, clf, FGSM(eps=EPS), cancel=token)

    class CancelsQuietly(_Noisy):  # the user cancels while the last step runs: no step call after it
        def run(self, x, ctx):
            out = super().run(x, ctx)
            ctx.cancel.cancel()
            return out

    with pytest.raises(Cancelled):
        run_attack(png_study, clf, CancelsQuietly(), cancel=CancelToken())


def test_the_backbone_identity_and_the_summary(png_study):
    clf = _classifier("internal-only")

    class Backbone:
        def identity(self):
            return {"name": "sd", "path": "/m/sd", "sha256": "ab" * 32}

    r = run_attack(png_study, clf, _Noisy(seed=2), backbone=Backbone())
    assert r.backbone == {"name": "sd", "path": "/m/sd", "sha256": "ab" * 32}
    assert run_attack(png_study, clf, _Noisy(seed=2), backbone=object()).backbone is None
    r.info = {"arr": np.array([1, 2]), "f": np.float32(0.5), "i": np.int64(3), "t": (1, "a"), 4: {"n": [np.int8(1)]}}
    s = r.summary()
    assert s == {
        "attack": "noisy", "config": r.config, "classifier": r.classifier, "backbone": r.backbone,
        "true_label": "benign", "original": {"label": r.original_label, "probs": r.original_probs},
        "adversarial": {"label": r.adversarial_label, "probs": r.adversarial_probs}, "success": r.success,
        "internal": {"label": r.internal_label, "probs": r.internal_probs, "success": r.success_internal},
        "metrics": r.metrics, "timing": {"seconds": round(r.seconds, 4), "iterations": 1}, "seed": 2,
        "device": "cpu", "info": {"arr": [1, 2], "f": 0.5, "i": 3, "t": [1, "a"], "4": {"n": [1]}},
        "notes": r.notes, "frame": 0, "versions": r.versions,
        "procedure": {**r.procedure},  # what produced the image (issue 12): its own tests pin its fields
        "metric_protocol": metric_protocol("native"),  # issue 25: SSIM window, data range
    }
    import json

    json.dumps(s)
    assert s["notes"] is not r.notes and r.target is None


def test_software_versions_are_the_installed_ones():
    import importlib.metadata as md
    import platform

    from p2p_desktop import __version__
    from p2p_desktop.attacks.runner import software_versions

    v = software_versions()
    assert v["p2p-desktop"] == __version__ and v["python"] == platform.python_version()
    for pkg in ("torch", "torchvision", "diffusers", "transformers", "pydicom", "numpy"):
        assert v[pkg] == md.version(pkg)
    assert set(v) == {"p2p-desktop", "python", "torch", "torchvision", "diffusers", "transformers", "pydicom",
                      "numpy"}


class _PicksWritten(_WorksAtOtherGeometry):
    """Like an attack that picks among candidates: asks the context for each candidate's written form."""

    name = "picks-written"

    def run(self, x, ctx):
        out = super().run(x, ctx)
        seen = ctx.written(out.adversarial)
        return AttackOutput(out.adversarial, out.iterations, {"written": seen.detach().cpu().numpy(),
                                                             "device": ctx.device, "backbone": ctx.backbone})


def test_the_context_shows_attacks_the_image_as_it_will_be_written(png_study):
    clf = _classifier("internal-only")
    backbone = object()
    r = run_attack(png_study, clf, _PicksWritten(size=16, shift=10.5 / 255), backbone=backbone)
    assert r.info["device"] == "cpu" and r.info["backbone"] is backbone  # the context carries both
    seen = r.info["written"]
    assert seen.shape == (1, 1, 32, 32)
    np.testing.assert_array_equal(seen[0].transpose(1, 2, 0), r.adversarial)


def test_the_perturbation_is_upsampled_bilinearly_with_half_pixel_centres(png_study):
    """A non-uniform change at 16 px: its upsampled form (align_corners=False) is what is written."""
    import torch
    import torch.nn.functional as F

    class Ramp(_WorksAtOtherGeometry):
        name = "ramp"

        def run(self, x, ctx):
            small = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
            ramp = torch.linspace(0, 20.5 / 255, 16).view(1, 1, 1, 16)
            ctx.step(1, 1, 0.0, ctx.classifier.probs(small)[0])
            return AttackOutput(adversarial=(small + ramp).clamp(0, 1), iterations=1)

    clf = _classifier("internal-only")
    r = run_attack(png_study, clf, Ramp())
    ramp = torch.linspace(0, 20.5 / 255, 16).view(1, 1, 1, 16).expand(1, 1, 16, 16)
    up = F.interpolate(ramp, size=(32, 32), mode="bilinear", align_corners=False)[0, 0].numpy()
    expected = png_study.quantise(np.clip(png_study.image + up[:, :, None], 0, 1))
    np.testing.assert_allclose(r.adversarial, expected, atol=1e-6)


def test_a_colour_output_one_pixel_high_on_a_grey_source_is_made_grey(png_study):
    clf = _classifier("internal-only")
    r = run_attack(png_study, clf, _WorksAtOtherGeometry(size=1, channels=3, shift=0.0))
    assert r.adversarial.shape == png_study.image.shape


# -- details: the attack's output mode, the input warnings, non-finite verdicts ---------------------
class _Decoded(_WorksAtOtherGeometry):
    """As _WorksAtOtherGeometry, but says its output is the decoded image itself."""

    name = "decoded-output"

    def run(self, x, ctx):
        out = super().run(x, ctx)
        return AttackOutput(adversarial=out.adversarial, iterations=1, info={"output": "decoded"})


def test_an_output_the_attack_calls_decoded_is_resized_whole_not_added_as_a_residual(png_study):
    import torch
    import torch.nn.functional as F

    from p2p_desktop.attacks._diffusion import to_source_geometry
    from p2p_desktop.models.classifier import to_numpy, to_tensor

    clf = _classifier("internal-only")
    decoded = run_attack(png_study, clf, _Decoded(size=16, shift=10.5 / 255))
    residual = run_attack(png_study, clf, _WorksAtOtherGeometry(size=16, shift=10.5 / 255))
    x = to_tensor(png_study.image)
    small = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    adv = (small + 10.5 / 255).clamp(0, 1)
    with torch.no_grad():
        whole = png_study.quantise(to_numpy(to_source_geometry(adv, x, "decoded")))
    np.testing.assert_allclose(decoded.adversarial, whole, atol=1e-6)
    np.testing.assert_allclose(residual.adversarial, png_study.image + 10 / 255, atol=1e-6)
    assert np.abs(decoded.adversarial - residual.adversarial).max() > 5 / 255  # the detail is lost when decoded


def test_the_classifiers_training_input_warnings_reach_the_result(png_study):
    from p2p_desktop.input_check import WARNING_PREFIX

    clf = _classifier("internal-only")
    clf.card.extra["training_input"] = {"size": [128, 128]}
    r = run_attack(png_study, clf, FGSM(eps=EPS))
    assert r.notes[0] == (WARNING_PREFIX + "the image is 32×32, under half the 128×128 of rounding-internal-only's "
                          "training images")
    plain = run_attack(png_study, _classifier("internal-only"), FGSM(eps=EPS))
    assert not any(n.startswith(WARNING_PREFIX) for n in plain.notes)


def test_non_finite_probabilities_for_the_attacked_image_are_one_line(png_study):
    import torch

    from p2p_desktop.errors import ModelError
    from p2p_desktop.models.classifier import Classifier, ModelCard, to_tensor

    clean = to_tensor(png_study.image).mean(dim=1, keepdim=True)

    class NaNOnceMoved(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = _RoundingSensitive.build("internal-only")

        def forward(self, x):
            moved = (x.mean(dim=1, keepdim=True) - clean).abs().amax(dim=(1, 2, 3))
            # moved by more than float rounding (a mean of three equal channels can differ by an ulp,
            # which made the clean image NaN too: the clean verdict now refuses that itself)
            return self.base(x) + torch.where(moved > 0.5 / 255, torch.full_like(moved, float("nan")),
                                              torch.zeros_like(moved))[:, None]

    card = ModelCard(name="nan-once-moved", architecture="toy-cnn", classes=CLASSES, weights="none",
                     input_size=32, mean=(0.0,), std=(1.0,))
    with pytest.raises(ModelError) as exc:
        run_attack(png_study, Classifier(NaNOnceMoved(), card), _WorksAtOtherGeometry(size=32, shift=10 / 255))
    assert str(exc.value) == ("the classifier returned non-finite probabilities (NaN or Inf) for the attacked image; "
                              "nothing was written")


class _Half(_WorksAtOtherGeometry):
    """Works at 16 px and hands back a bfloat16 image (as reduced-precision attacks do); judges
    its own output through ``ctx.written`` as the written image, in both output modes."""

    name = "half-precision"

    def run(self, x, ctx):
        import torch

        out = super().run(x, ctx)
        adv = out.adversarial.to(torch.bfloat16)
        judged = {mode: ctx.written(adv, output=mode) for mode in ("residual", "decoded")}
        return AttackOutput(adversarial=adv, iterations=1, info={"judged": judged, "output": "decoded"})


def test_reduced_precision_outputs_are_mapped_back_in_float32(png_study):
    import torch

    from p2p_desktop.attacks._diffusion import to_source_geometry
    from p2p_desktop.models.classifier import to_numpy, to_tensor

    clf = _classifier("internal-only")
    r = run_attack(png_study, clf, _Half(size=16, shift=10.5 / 255))
    x = to_tensor(png_study.image)
    small = _WorksAtOtherGeometry(size=16, shift=10.5 / 255)
    adv32 = small.run(x, dataclasses.replace(_ctx(clf), on_step=None)).adversarial.to(torch.bfloat16).float()
    with torch.no_grad():
        for mode in ("residual", "decoded"):
            expected = png_study.quantise(to_numpy(to_source_geometry(adv32, x, mode)))
            np.testing.assert_array_equal(to_numpy(r.info["judged"][mode]), expected)
        decoded = png_study.quantise(to_numpy(to_source_geometry(adv32, x, "decoded")))
        np.testing.assert_array_equal(r.adversarial, decoded)
        # resampled in bfloat16 instead, the decoded image would be off by a level somewhere
        off = png_study.quantise(to_numpy(to_source_geometry(adv32.to(torch.bfloat16), x, "decoded").float()))
        assert np.abs(off - decoded).max() > 0


def _ctx(clf):
    from p2p_desktop.attacks.base import AttackContext

    return AttackContext(classifier=clf, label=0, target=None, device="cpu")


class _Broken(_WorksAtOtherGeometry):
    name = "nan-pixels"

    def run(self, x, ctx):
        return AttackOutput(adversarial=x * float("nan"), iterations=1)


def test_non_finite_pixels_are_one_line_naming_the_attack(png_study):
    from p2p_desktop.errors import ModelError

    with pytest.raises(ModelError) as exc:
        run_attack(png_study, _classifier("internal-only"), _Broken())
    assert str(exc.value) == ("nan-pixels produced non-finite pixel values (NaN or Inf): the classifier or backbone "
                              "is broken or incomplete; nothing was written")


def test_non_finite_probabilities_for_the_written_image_alone_are_refused(png_study):
    """The internal image (between 8-bit levels) gets finite probabilities, the written one NaN."""
    import torch

    from p2p_desktop.errors import ModelError
    from p2p_desktop.models.classifier import Classifier, ModelCard, to_tensor

    clean = to_tensor(png_study.image).mean(dim=1, keepdim=True)

    class NaNOnLevels(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = _RoundingSensitive.build("internal-only")

        def forward(self, x):
            grey = x.mean(dim=1, keepdim=True)
            moved = (grey - clean).abs().amax(dim=(1, 2, 3)) > 0.5 / 255
            levels = grey * 255
            on_grid = (levels - torch.round(levels)).abs().amax(dim=(1, 2, 3)) < 1e-3
            nan = torch.where(moved & on_grid, torch.full_like(levels[:, 0, 0, 0], float("nan")), 0.0)
            return self.base(x) + nan[:, None]

    card = ModelCard(name="nan-on-levels", architecture="toy-cnn", classes=CLASSES, weights="none",
                     input_size=32, mean=(0.0,), std=(1.0,))
    with pytest.raises(ModelError, match="non-finite probabilities"):
        run_attack(png_study, Classifier(NaNOnLevels(), card), FGSM(eps=EPS))


def test_a_phantom_gets_the_label_oracles_verdict_on_the_written_image(tmp_path):
    from p2p_desktop.io import load_study
    from p2p_desktop.phantoms import write_png_dataset
    from p2p_desktop.phantoms.oracle import study_verdict

    path = write_png_dataset(tmp_path / "data", 1, 7_600_000, size=32)[0]
    study = load_study(path)
    r = run_attack(study, _classifier("written-only", None), _WorksAtOtherGeometry(size=32, shift=3 / 255))
    assert r.info["label_oracle"] == study_verdict(study, r.adversarial, r.success)
    assert r.info["label_oracle"]["verdict"] is not None


@dataclasses.dataclass(frozen=True)
class _ResolutionConfig(_ShiftConfig):
    resolution: int = 0
    dtype: str = "auto"


class _Reports(_WorksAtOtherGeometry):
    name = "reports"
    Config = _ResolutionConfig

    def run(self, x, ctx):
        out = super().run(x, ctx)
        info = {"resolution": 16, "precision": "bf16"} if self.config.size == 16 else {}
        return AttackOutput(adversarial=out.adversarial, iterations=1, info=info)


class _Backbone:
    resolution = 48

    @property
    def dtype(self):
        import torch

        return torch.float32

    def identity(self):
        return {"name": "stub"}


def test_the_procedure_follows_the_attacks_info_then_the_backbone(png_study):
    from p2p_desktop.attacks.procedure import describe

    clf = _classifier("internal-only")
    told = run_attack(png_study, clf, _Reports(size=16), backbone=_Backbone())
    info = {"resolution": 16, "precision": "bf16"}
    assert told.procedure == describe(_Reports(size=16), None, _Backbone(), info=info)
    assert "16 px" in told.procedure["label"] and "bf16" in told.procedure["label"]
    silent = run_attack(png_study, clf, _Reports(size=32), backbone=_Backbone())
    assert "48 px" in silent.procedure["label"] and "fp32" in silent.procedure["label"]


class _NoCard:
    """A classifier object without a model card (as a plugin may hand back)."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        if name == "card":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_classifier_without_a_card_gets_no_input_warnings(png_study):
    r = run_attack(png_study, _NoCard(_classifier("internal-only")), FGSM(eps=EPS))
    assert r.attack == "fgsm" and not any("training data" in n for n in r.notes)
