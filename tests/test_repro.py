"""Issue 12: the faithful reproduction — resolution, output mode, loss scale, precision, faithful
Diff-PGD, the paper's metric protocol, procedure labels, cheaper(), and tests that fail for the
right reason. Tiny seeded SD models for speed; the demo bundle for the end-to-end claims."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from p2p_desktop.attacks.diff_pgd import DiffPGD, DiffPGDConfig
from p2p_desktop.attacks.p2p import P2P, P2PConfig
from p2p_desktop.errors import InputError
from p2p_desktop.models.backbone import load_backbone
from tests.tiny_sd import context as _ctx
from tests.tiny_sd import phantom, tiny_classifier


@pytest.fixture(scope="module")
def clf():
    return tiny_classifier()


# -- the paper preset, field by field ---------------------------------------------------------------
# The authors' values (P2P_METHOD.md): AdamW lr 5e-4 x gradient accumulation 4, betas (0.9, 0.999),
# weight decay 1e-2, eps 1e-8, 500 iterations, t ~ U{0..49}, the whole CLIP text encoder learned,
# class words as new tokens, -CE x 1e10, no early stop, batch 1, 224 px, the decoded image saved, fp32;
# the kept example: smallest t, then lowest MSE. Defects of their script fixed: latent mean, no carry-over.
AUTHORS = {"steps": 500, "lr": 5e-4 * 4, "grad_accum": 4, "beta1": 0.9, "beta2": 0.999, "weight_decay": 1e-2,
           "eps_adam": 1e-8, "t_max": 50, "learn": "text_encoder", "new_class_tokens": True, "loss": "neg_ce",
           "cls_scale": 1e10, "early_stop": False, "batch_timesteps": 1, "resolution": 224, "output": "decoded",
           "dtype": "fp32", "selection": "min_t_then_mse", "margin": 0.0, "bound": "none", "encode": "mean",
           "prompt": "ultrasound image of {cls} tumor in breast", "preset": "paper"}


def test_paper_preset_matches_the_authors_field_by_field():
    cfg = P2P.from_preset("paper").config.to_dict()
    for key, value in AUTHORS.items():
        assert cfg[key] == pytest.approx(value) if isinstance(value, float) else cfg[key] == value, key
    assert parse_words(cfg["class_words"]) == {"benign": "benign", "malignant": "malignant", "normal": "no"}
    diff = DiffPGD.from_preset("paper").config
    assert (diff.eps, diff.alpha, diff.steps, diff.strength, diff.ddim_steps) == (
        pytest.approx(16 / 255), pytest.approx(2 / 255), 10, 0.06, 3)
    assert (diff.resolution, diff.output, diff.dtype, diff.noise, diff.variant) == (224, "decoded", "fp32", "fresh",
                                                                                    "fast")


def parse_words(text):
    from p2p_desktop.attacks.p2p import parse_class_words

    return parse_class_words(text)


def test_fast_preset_is_bounded_for_the_10x_goal():
    fast = P2P.from_preset("fast").config
    assert fast.early_stop and fast.steps * fast.batch_timesteps <= P2P.from_preset("paper").config.steps // 10


# -- resolution ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [P2PConfig, DiffPGDConfig])
def test_resolution_must_be_a_multiple_of_8(cls):
    with pytest.raises(InputError, match="multiple of 8"):
        cls(resolution=100)
    assert cls(resolution=224).resolution == 224 and cls().resolution == 0


def test_attacks_work_at_the_requested_resolution(bb, clf):
    x = phantom(48, 1)
    out = P2P.from_preset("fast", steps=2, early_stop=False, resolution=40).run(x, _ctx(clf, bb))
    assert tuple(out.adversarial.shape) == (1, 1, 40, 40) and out.info["resolution"] == 40
    out = DiffPGD(steps=1, resolution=24).run(x, _ctx(clf, bb))
    assert tuple(out.adversarial.shape) == (1, 1, 24, 24) and out.info["resolution"] == 24
    out = DiffPGD(steps=1).run(x, _ctx(clf, bb))
    assert out.info["resolution"] == bb.resolution == 32


# -- output mode -----------------------------------------------------------------------------------
class _Recording(P2P):
    """P2P that keeps its raw output (the decoded candidate it chose)."""

    def run(self, x, ctx):
        self.last = super().run(x, ctx)
        return self.last


def _checker_study(size=64):
    from p2p_desktop.io.study import Study

    yy, xx = np.mgrid[:size, :size]
    img = (0.3 + 0.4 * ((yy + xx) % 2)).astype(np.float32)  # detail far above the 32 px working resolution
    return Study(path=Path("checker.png"), image=img[:, :, None], kind="image", label="benign")


@pytest.mark.parametrize("size", [32, 64])
def test_decoded_mode_writes_the_decoded_candidate(bb, clf, size):
    import torch
    import torch.nn.functional as F

    from p2p_desktop.attacks.runner import run_attack
    from p2p_desktop.models.classifier import to_numpy

    study = _checker_study(size)
    attack = _Recording(P2P.from_preset("fast", steps=2, early_stop=False, output="decoded").config)
    res = run_attack(study, clf, attack, backbone=bb, true_label="benign")
    cand = attack.last.adversarial.float()
    assert tuple(cand.shape[-2:]) == (32, 32)
    if size != 32:
        cand = F.interpolate(cand, size=(size, size), mode="bilinear", align_corners=False)
    expected = study.quantise(to_numpy(cand.clamp(0, 1)))
    assert np.array_equal(res.adversarial, expected)  # pixel for pixel
    assert res.info["output"] == "decoded" and res.procedure["output"] == "decoded"
    if size == 64:  # residual mode puts the source's detail back: a different image
        res_r = run_attack(study, clf, P2P.from_preset("fast", steps=2, early_stop=False), backbone=bb,
                           true_label="benign")
        assert not np.array_equal(res_r.adversarial, res.adversarial)
        detail = lambda a: float(np.abs(np.diff(a[:, :, 0], axis=1)).mean())  # noqa: E731
        assert detail(res_r.adversarial) > 2 * detail(res.adversarial)
        assert torch.is_tensor(cand)


# -- learnable parameters, loss scale --------------------------------------------------------------
@pytest.mark.parametrize("learn", ["text_encoder", "token_embeddings"])
def test_learnable_text_parameters_change_and_get_gradients(bb, clf, learn):
    out = P2P.from_preset("fast", steps=3, early_stop=False, learn=learn).run(phantom(32, 1), _ctx(clf, bb))
    assert out.info["grad_norm_min"] > 0 and out.info["grad_norm_first"] > 0
    assert out.info["parameter_change"] > 0
    tiny = P2P.from_preset("fast", steps=3, early_stop=False, learn=learn, lr=1e-12).run(phantom(32, 1),
                                                                                        _ctx(clf, bb))
    assert tiny.info["parameter_change"] < 1e-6 < out.info["parameter_change"]


def test_cls_scale_is_not_a_no_op_under_adamw(bb, clf):
    x = phantom(32, 1, seed=2)
    a = P2P.from_preset("paper", steps=4, resolution=0).run(x, _ctx(clf, bb))
    b = P2P.from_preset("paper", steps=4, resolution=0, cls_scale=1.0).run(x, _ctx(clf, bb))
    assert a.info["cls_scale"] == 1e10 and b.info["cls_scale"] == 1.0
    assert a.info["parameter_change"] != pytest.approx(b.info["parameter_change"], rel=1e-3)


# -- precision -------------------------------------------------------------------------------------
def test_dtype_checks_and_force_upcast(tiny_sd_dir, bb, clf):
    import torch

    from p2p_desktop.device import check_dtype

    with pytest.raises(InputError, match="fp16 cannot run on the CPU"):
        check_dtype("cpu", "fp16")
    with pytest.raises(InputError, match="unknown dtype"):
        check_dtype("cpu", "fp8")
    assert check_dtype("cpu", "bf16") == "bf16"
    half = load_backbone(tiny_sd_dir, device="cpu", dtype="float16")  # loading only: the VAE stays fp32
    assert half.vae.config.force_upcast and next(half.vae.parameters()).dtype == torch.float32
    assert next(half.unet.parameters()).dtype == torch.float16
    out = P2P.from_preset("fast", steps=1, early_stop=False, dtype="bf16").run(phantom(32, 1), _ctx(clf, bb))
    assert out.info["precision"] == "bf16"
    assert P2P.from_preset("fast", steps=1, early_stop=False).run(phantom(32, 1), _ctx(clf, bb)).info[
        "precision"] == "fp32"


# -- Diff-PGD as its authors run it ----------------------------------------------------------------
def test_diff_pgd_calls_the_unet_at_every_ddim_step_down_to_zero(bb, clf):
    seen = []
    hook = bb.unet.register_forward_hook(lambda m, args, kwargs_out: seen.append(int(args[1].flatten()[0])))
    try:
        DiffPGD(steps=1).run(phantom(32, 1), _ctx(clf, bb))
    finally:
        hook.remove()
    assert seen == [60, 40, 20, 0] * 2  # one purification per step, plus the final one


def test_diff_pgd_draws_fresh_noise_on_every_call(bb, clf):
    x = phantom(32, 1, seed=5)
    tiny = dict(steps=3, eps=1e-9, alpha=1e-9)  # δ stays ~0: only the SDEdit noise can change the image
    probs = lambda out, ctx: [list(e.probs.values()) for e in ctx.history]  # noqa: E731
    ctx_f = _ctx(clf, bb)
    DiffPGD(noise="fixed", **tiny).run(x, ctx_f)
    ctx_n = _ctx(clf, bb)
    DiffPGD(**tiny).run(x, ctx_n)
    fixed, fresh = np.array(probs(None, ctx_f)), np.array(probs(None, ctx_n))
    assert np.abs(fixed - fixed[0]).max() < 1e-5
    assert np.abs(fresh - fresh[0]).max() > 1e-4
    again = _ctx(clf, bb)
    DiffPGD(**tiny).run(x, again)
    assert np.array_equal(np.array(probs(None, again)), fresh)  # seeded: reproducible


def test_diff_pgd_full_variant_starts_at_random(bb, clf):
    x = phantom(32, 3, seed=6)
    full = DiffPGD(variant="full", steps=1).run(x, _ctx(clf, bb))
    plain = DiffPGD(variant="full", steps=1, random_start="off").run(x, _ctx(clf, bb))
    assert full.info["random_start"] and not plain.info["random_start"]
    assert not DiffPGD(steps=1).run(x, _ctx(clf, bb)).info["random_start"]
    assert not np.array_equal(full.adversarial.numpy(), plain.adversarial.numpy())


# -- cheaper() --------------------------------------------------------------------------------------
def test_cheaper_is_the_same_method_at_lower_memory(bb, clf):
    import torch

    fast = P2P.from_preset("fast", batch_timesteps=2, steps=2, early_stop=False)
    c1 = fast.cheaper()
    assert c1.config.batch_timesteps == 1 and c1.config.low_memory
    assert c1.cheaper() is None
    assert DiffPGD().cheaper().config.low_memory and DiffPGD(low_memory=True).cheaper() is None
    x = phantom(32, 1, seed=8)
    plain = P2P.from_preset("fast", steps=2, early_stop=False).run(x, _ctx(clf, bb))
    saving = P2P.from_preset("fast", steps=2, early_stop=False, low_memory=True).run(x, _ctx(clf, bb))
    assert torch.allclose(plain.adversarial, saving.adversarial, atol=1e-5)  # checkpointing changes no result
    assert not bb.unet.is_gradient_checkpointing  # the shared backbone is restored


class _OOMOnce(P2P):
    calls = 0

    def run(self, x, ctx):
        import torch

        type(self).calls += 1
        if type(self).calls == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().run(x, ctx)


def test_runner_retries_p2p_at_lower_cost_after_out_of_memory(bb, clf):
    from p2p_desktop.attacks.runner import run_attack
    from p2p_desktop.io.study import Study

    study = Study(path=Path("p.png"), image=phantom(32, 1)[0].permute(1, 2, 0).numpy(), kind="image",
                  label="benign")
    res = run_attack(study, clf, _OOMOnce(P2P.from_preset("fast", steps=2, early_stop=False).config), backbone=bb,
                     true_label="benign")
    assert _OOMOnce.calls == 2 and res.config["low_memory"] is True
    assert any("retried at lower cost" in n and "low_memory" in n for n in res.notes)


def _phantom_dir(tmp_path, n=3, seed=7_500_000):
    from p2p_desktop.phantoms import write_png_dataset

    write_png_dataset(tmp_path / "data", n, seed)
    return tmp_path / "data"


def test_evaluate_paper_metrics_and_procedure_labels(tmp_path):
    import csv

    from skimage.metrics import structural_similarity

    from p2p_desktop.io import load_study
    from p2p_desktop.jobs.evaluate import adversarial_path, evaluate
    from p2p_desktop.metrics import paper_view

    data = _phantom_dir(tmp_path)
    res = evaluate(data, ["fgsm"], ["demo-squeezenet1_1"], tmp_path / "out", metrics="paper")
    (row,) = res.summary
    assert row["procedure"] == "fgsm[default, source px, direct, fp32]" and row["metrics"] == "paper"
    wins = [r for r in res.rows if r.get("success")]
    assert wins, "fgsm fooled nothing: nothing to measure"

    def ref(r):
        va = paper_view(load_study(data / r["image"], attach_mask=False).image)[0].numpy().transpose(1, 2, 0)
        adv = adversarial_path(tmp_path / "out", "demo-squeezenet1_1", "fgsm", r["image"])
        vb = paper_view(load_study(adv, attach_mask=False).image)[0].numpy().transpose(1, 2, 0)
        return structural_similarity(va.astype(np.float64), vb.astype(np.float64), data_range=1.0, channel_axis=2,
                                     gaussian_weights=True, sigma=1.5, use_sample_covariance=False)

    assert row["ssim"] == pytest.approx(np.mean([ref(r) for r in wins]), abs=1e-5)
    assert row["ssim"] != pytest.approx(np.mean([r["ssim"] for r in wins]), abs=1e-4)  # not the native value
    assert row["lpips"] is None and row["fid"] is None  # no AlexNet / Inception weights here: null with a reason
    assert any("LPIPS not computed" in n for n in res.notes) and any("FID" in n for n in res.notes)
    with open(tmp_path / "out" / "per_image.csv", newline="") as fh:
        assert {r["procedure"] for r in csv.DictReader(fh)} == {row["procedure"]}
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "Metric protocol: **paper**" in md and row["procedure"] in md
    js = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert js["metrics"]["protocol"] == "paper" and js["summary"][0]["procedure"] == row["procedure"]
    native = evaluate(data, ["fgsm"], ["demo-squeezenet1_1"], tmp_path / "out", metrics="native")
    assert native.attacked == 0 and native.summary[0]["metrics"] == "native"  # same attacks, other protocol
    assert native.summary[0]["ssim"] == pytest.approx(np.mean([r["ssim"] for r in wins]))
    with pytest.raises(InputError, match="--metrics"):
        evaluate(data, ["fgsm"], ["demo-squeezenet1_1"], tmp_path / "out2", metrics="fancy")


def test_evaluate_dtype_is_checked_before_any_write(tmp_path):
    from p2p_desktop.jobs.evaluate import evaluate

    data = _phantom_dir(tmp_path, n=1, seed=7_650_000)
    with pytest.raises(InputError, match="applies to the diffusion attacks"):
        evaluate(data, ["fgsm"], ["demo-squeezenet1_1"], tmp_path / "o", dtype="bf16")
    with pytest.raises(InputError, match="fp16 cannot run on the CPU"):
        evaluate(data, ["fgsm", "diff-pgd"], ["demo-squeezenet1_1"], tmp_path / "o", dtype="fp16", device="cpu")
    assert not (tmp_path / "o").exists()


def test_evaluate_runs_p2p_paper_unless_told_otherwise():
    from p2p_desktop.jobs.evaluate.params import build_attacks, default_presets

    def presets(preset):
        return {a.name: a.config.preset for a in build_attacks(["fgsm", "p2p", "diff-pgd"],
                                                               preset=default_presets(["fgsm", "p2p", "diff-pgd"],
                                                                                       preset))
                if hasattr(a.config, "preset")}

    assert presets(None) == {"p2p": "paper", "diff-pgd": "default"}
    assert presets("fast") == {"p2p": "fast", "diff-pgd": "default"}
    assert presets("diff-pgd=paper") == {"p2p": "paper", "diff-pgd": "paper"}
    assert presets("paper") == {"p2p": "paper", "diff-pgd": "paper"}


def test_demo_backbone_off_its_phantoms_is_said_plainly(tmp_path):
    import shutil

    from p2p_desktop.jobs.evaluate import evaluate

    data = _phantom_dir(tmp_path, n=1, seed=7_600_000)
    kw = dict(params={"diff-pgd.steps": 1}, metrics="native")
    res = evaluate(data, ["diff-pgd"], ["demo-squeezenet1_1"], tmp_path / "o1", **kw)
    assert res.warnings == []
    other = tmp_path / "other"
    shutil.copytree(data, other, ignore=shutil.ignore_patterns("phantoms_seed*"))
    res = evaluate(other, ["diff-pgd"], ["demo-squeezenet1_1"], tmp_path / "o2", **kw)
    assert len(res.warnings) == 1 and "not the project's phantoms" in res.warnings[0]
    assert res.notes[0] == res.warnings[0]
    first = (tmp_path / "o2" / "summary.md").read_text().splitlines()[2]
    assert first.startswith("**Warning:**") and "DEMO backbone" in first


# -- the CLI ---------------------------------------------------------------------------------------
def _phantom_png(tmp_path, seed=7_700_000):
    from p2p_desktop.phantoms import write_png_dataset

    return write_png_dataset(tmp_path / "ph", 1, seed)[0]


def test_cli_attack_paper_preset_says_what_it_ran(tmp_path, capsys, monkeypatch):
    from p2p_desktop.cli.main import main

    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(tmp_path / "audit.log"))
    img = _phantom_png(tmp_path)
    code = main(["attack", str(img), "--attack", "p2p", "--preset", "paper", "--steps", "2", "--backbone", "demo",
                 "--classifier", "demo-squeezenet1_1", "--device", "cpu", "--out", str(tmp_path / "out"), "--json",
                 "--export-dicom"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["procedure"]["label"] == "p2p[paper, steps=2, 224 px, decoded, fp32]"
    assert (out["config"]["resolution"], out["config"]["output"], out["config"]["dtype"],
            out["config"]["cls_scale"]) == (224, "decoded", "fp32", 1e10)
    assert out["info"]["resolution"] == 224 and out["info"]["precision"] == "fp32"
    prov = next(Path(o["path"]) for o in out["outputs"] if o["kind"] == "provenance")
    record = json.loads(prov.read_text())
    assert record["attack"]["procedure"]["label"] == out["procedure"]["label"]
    import pydicom

    dcm = pydicom.dcmread(next(Path(o["path"]) for o in out["outputs"] if o["kind"] == "dicom"))
    assert f"procedure {out['procedure']['label']}" in dcm.DerivationDescription


@pytest.mark.parametrize("extra, message", [
    (["--param", "resolution=100"], "not a multiple of 8"),
    (["--dtype", "fp16"], "fp16 cannot run on the CPU"),
])
def test_cli_bad_settings_one_line_exit_2(tmp_path, capsys, extra, message):
    from p2p_desktop.cli.main import main

    img = _phantom_png(tmp_path)
    with pytest.raises(SystemExit) as err:
        code = main(["attack", str(img), "--attack", "p2p", "--backbone", "demo", "--classifier",
                     "demo-squeezenet1_1", "--device", "cpu", "--out", str(tmp_path / "out"), *extra])
        raise SystemExit(code)
    assert err.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "out").exists()


# -- end to end on the demo bundle: tests that fail for the right reason ---------------------------
TEST_SEEDS = range(3_000_000, 3_000_060)  # the unit-test seed range: never trained on


@pytest.fixture(scope="module")
def demo():
    from p2p_desktop.io.study import Study
    from p2p_desktop.models import registry
    from p2p_desktop.models.classifier import load_classifier
    from p2p_desktop.phantoms import CLASSES, generate_phantom

    if registry.find("demo") is None or registry.find("demo-squeezenet1_1") is None:
        pytest.skip("demo bundle (resources/models/demo, demo-squeezenet1_1) is not installed")
    bb = load_backbone("demo", device="cpu")
    clf = load_classifier("demo-squeezenet1_1", device="cpu")
    studies = []
    for seed in TEST_SEEDS:  # the first three phantoms the clean classifier gets right
        ph = generate_phantom(seed, CLASSES[seed % 3], size=bb.resolution)
        img = (np.round(ph.image * 255) / 255).astype(np.float32)[:, :, None]
        if clf.predict(img)[0] == ph.label:
            studies.append((Study(path=Path(f"phantom-{seed}.png"), image=img, kind="image"), ph.label))
        if len(studies) == 3:
            break
    assert len(studies) == 3
    return bb, clf, studies, CLASSES


def _next_class(classes, label):
    return classes[(classes.index(label) + 1) % len(classes)]


@pytest.mark.slow
def test_lr_zero_control_fools_none_of_what_p2p_fools(demo):
    from p2p_desktop.attacks.runner import run_attack
    from p2p_desktop.io.study import Study
    from p2p_desktop.phantoms import CLASSES, generate_phantom

    bb, clf, _, _ = demo
    # On the appearance-only demo backbone P2P fast fools about a third of the phantoms: take the
    # first two it fools among up to 12 test phantoms the clean classifier gets right.
    fooled, attacked = [], 0
    for seed in TEST_SEEDS:
        ph = generate_phantom(seed, CLASSES[seed % 3], size=bb.resolution)
        img = (np.round(ph.image * 255) / 255).astype(np.float32)[:, :, None]
        if clf.predict(img)[0] != ph.label:
            continue
        st, attacked = Study(path=Path(f"phantom-{seed}.png"), image=img, kind="image"), attacked + 1
        if run_attack(st, clf, P2P.from_preset("fast"), backbone=bb, true_label=ph.label).success:
            fooled.append((st, ph.label))
        if len(fooled) == 2 or attacked == 12:
            break
    assert len(fooled) == 2, f"P2P fast fooled {len(fooled)} of {attacked} demo phantoms: too few for the control"
    for st, lab in fooled:  # the same procedure with (almost) no learning: the prompt must be what fools
        res = run_attack(st, clf, P2P.from_preset("fast", lr=1e-12), backbone=bb, true_label=lab)
        assert not res.success, (st.path.name, res.adversarial_label)
        assert res.info["parameter_change"] < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["p2p", "diff-pgd"])
def test_targeted_attacks_reach_their_target(demo, attack):
    from p2p_desktop.attacks.runner import run_attack

    bb, clf, studies, classes = demo
    reached = 0
    for st, lab in studies:
        target = _next_class(classes, lab)
        atk = P2P.from_preset("fast", target=target) if attack == "p2p" else DiffPGD(target=target)
        res = run_attack(st, clf, atk, backbone=bb, true_label=lab)
        assert res.success == (res.adversarial_label == target)  # success means the target, not any wrong class
        reached += res.success
    # Diff-PGD reaches its target on most phantoms; P2P on the appearance-only demo backbone, whose prompt
    # steers only gain, contrast and speckle, fools about a third of them untargeted (README's demo table):
    # one target reached shows the targeted loss is the one optimised
    assert reached >= (2 if attack == "diff-pgd" else 1), f"{attack} reached its target on {reached} of 3 demo phantoms"


@pytest.mark.slow
def test_diff_pgd_succeeds_on_demo_phantoms(demo):
    from p2p_desktop.attacks.runner import run_attack

    bb, clf, studies, _ = demo
    results = [run_attack(st, clf, DiffPGD(), backbone=bb, true_label=lab) for st, lab in studies]
    assert sum(r.success for r in results) >= 2, [r.adversarial_label for r in results]
    assert all(r.metrics["linf"] <= 1.0 and r.info["ddim_timesteps"] == [60, 40, 20, 0] for r in results)


def test_rerun_dtype_is_recorded_and_checked(tmp_path, capsys, monkeypatch):
    from p2p_desktop.cli.main import main

    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(tmp_path / "audit.log"))
    img = _phantom_png(tmp_path, seed=7_800_000)
    assert main(["attack", str(img), "--attack", "p2p", "--steps", "1", "--backbone", "demo", "--classifier",
                 "demo-squeezenet1_1", "--device", "cpu", "--out", str(tmp_path / "a"), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["procedure"]["label"] == "p2p[fast, steps=1, 128 px, residual, fp32]"
    prov = next(o["path"] for o in first["outputs"] if o["kind"] == "provenance")
    assert main(["rerun", prov, "--out", str(tmp_path / "b"), "--dtype", "bf16", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["config"]["dtype"] == "bf16" and again["procedure"]["precision"] == "bf16"
    with pytest.raises(SystemExit) as err:
        raise SystemExit(main(["rerun", prov, "--out", str(tmp_path / "c"), "--dtype", "fp16"]))
    assert err.value.code == 2 and "fp16 cannot run on the CPU" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
