"""The controls of issue 25 (item 4): ``random-prompt``, ``p2p-lr0`` and ``rerender`` — as attacks on
the tiny seeded SD folder and the simulator's phantoms, and named as controls by ``evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from p2p_desktop.attacks.p2p import P2P
from p2p_desktop.attacks.p2p_lr0 import P2PLr0
from p2p_desktop.attacks.random_prompt import RandomPrompt
from p2p_desktop.attacks.rerender import Rerender
from p2p_desktop.attacks.runner import run_attack
from p2p_desktop.errors import InputError
from p2p_desktop.io.study import Study
from tests.tiny_sd import context as _ctx
from tests.tiny_sd import phantom, tiny_classifier


@pytest.fixture(scope="module")
def clf():
    return tiny_classifier()


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory):
    from p2p_desktop.phantoms import write_png_dataset

    return write_png_dataset(tmp_path_factory.mktemp("ph"), 1, 1100002, size=32)[0]


def test_controls_are_registered_and_marked():
    from p2p_desktop.attacks import registry

    for name in ("random-prompt", "p2p-lr0", "rerender"):
        assert registry.spec(name).control and registry.get(name).control_for == "p2p"
    assert not any(registry.spec(n).control for n in ("p2p", "fgsm", "pgd", "diff-pgd", "deepfool"))


def test_random_prompt_moves_the_text_parameters_by_the_configured_norm_without_gradient(bb, clf):
    events = []
    att = RandomPrompt.from_preset("fast", steps=3, early_stop=False, norm=2.5)
    out = att.run(phantom(32, 1), _ctx(clf, bb, on_step=events.append))
    assert out.iterations == 3 and [e.step for e in events] == [1, 2, 3] and all(e.total == 3 for e in events)
    assert out.info["parameter_change"] == pytest.approx(2.5, rel=1e-4)
    assert out.info["norm_source"] == "configured norm" and out.info["control"] is True
    assert out.info["draws"] == 3 and out.info["gradient"].startswith("none")
    assert tuple(out.adversarial.shape) == (1, 1, 32, 32)
    again = RandomPrompt.from_preset("fast", steps=3, early_stop=False, norm=2.5).run(phantom(32, 1), _ctx(clf, bb))
    assert np.array_equal(again.adversarial.numpy(), out.adversarial.numpy())  # same seed, same draws


def test_random_prompt_takes_the_norm_and_budget_of_p2p_on_the_same_image(bb, clf):
    ctx = _ctx(clf, bb)
    ctx.reference = {"parameter_change": 0.75, "iterations": 2}
    out = RandomPrompt.from_preset("fast", steps=5, early_stop=False).run(phantom(32, 1), ctx)
    assert out.iterations == 2 and out.info["parameter_change"] == pytest.approx(0.75, rel=1e-4)
    assert out.info["norm_source"] == "P2P's learned change on this image"
    ctx = _ctx(clf, bb)
    ctx.reference = {"parameter_change": 0.75, "iterations": 2}
    out = RandomPrompt.from_preset("fast", steps=2, early_stop=False, match_reference=False, norm=1.5).run(
        phantom(32, 1), ctx)
    assert out.info["parameter_change"] == pytest.approx(1.5, rel=1e-4)


def test_p2p_lr0_runs_p2p_without_moving_the_prompt(bb, clf):
    from p2p_desktop.attacks.procedure import describe

    lr0 = P2PLr0.from_preset("fast", steps=3, early_stop=False).run(phantom(32, 1), _ctx(clf, bb))
    learned = P2P.from_preset("fast", steps=3, early_stop=False).run(phantom(32, 1), _ctx(clf, bb))
    assert lr0.info["parameter_change"] == 0.0 and lr0.info["control"] is True
    assert learned.info["parameter_change"] > 0.0
    assert lr0.iterations == learned.iterations == 3
    with pytest.raises(InputError):
        P2PLr0(lr=1e-3)
    assert describe(P2PLr0.from_preset("paper"))["label"] == "p2p-lr0[paper, 224 px, decoded, fp32]"
    assert describe(P2PLr0.from_preset("paper"))["control"] is True


def test_rerender_refuses_a_non_phantom_in_one_line(clf):
    img = np.full((32, 32, 1), 0.5, dtype=np.float32)
    study = Study(path=Path("scan.png"), image=img, kind="image")
    with pytest.raises(InputError) as err:
        run_attack(study, clf, Rerender(steps=2))
    text = str(err.value)
    assert "phantoms only" in text and "scan.png" in text and "\n" not in text


def test_rerender_keeps_the_finding_and_the_ssim_floor(clf, phantom_file):
    from p2p_desktop.io import load_study

    study = load_study(phantom_file)
    events = []
    res = run_attack(study, clf, Rerender(steps=6, ssim_floor=0.3), on_step=events.append)
    info = res.info
    assert len(events) == 6 and info["control"] is True and info["ssim_floor"] == 0.3
    assert info["ssim_floor_source"] == "ssim_floor" and info["draws_above_floor"] >= 1
    assert info["chosen"] is not None and res.metrics["ssim"] >= 0.3
    assert res.metrics["ssim"] == pytest.approx(info["chosen"]["ssim"], abs=1e-9)  # judged as written
    assert not np.array_equal(res.adversarial, res.original)  # another acquisition, not the source
    # nothing reaches a floor of 1: the source itself comes back, not a success
    none = run_attack(study, clf, Rerender(steps=2, ssim_floor=1.0))
    assert none.info["chosen"] is None and not none.success and np.array_equal(none.adversarial, none.original)


def test_rerender_floor_follows_p2ps_success_on_the_same_image(clf, phantom_file):
    from p2p_desktop.io import load_study

    res = run_attack(load_study(phantom_file), clf, Rerender(steps=2), reference={"success": True, "ssim": 0.42})
    assert res.info["ssim_floor"] == 0.42 and res.info["ssim_floor_source"].startswith("SSIM of P2P")


def test_evaluate_names_controls_and_keeps_the_validity_columns(tmp_path, tiny_sd_dir, monkeypatch):
    from p2p_desktop.jobs.evaluate import evaluate
    from p2p_desktop.phantoms import write_png_dataset
    from tests.test_evaluate import _save_classifier

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    data = tmp_path / "busi"
    write_png_dataset(data, 3, seed=1100010, size=32)
    models = tmp_path / "models"
    models.mkdir()
    card = _save_classifier(models, "squeezenet1_1", 0, "sq")
    res = evaluate(data, ["rerender", "p2p", "random-prompt"], [str(card)], tmp_path / "out", backbone=tiny_sd_dir,
                   preset="fast", params={"steps": 2}, device="cpu", report="html")
    by = {r["attack"]: r for r in res.summary}
    assert {a: r["control"] for a, r in by.items()} == {"rerender": True, "p2p": False, "random-prompt": True}
    assert by["random-prompt"]["procedure"].startswith("random-prompt[fast, steps=2, ")
    doc = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    for r in doc["summary"]:
        assert "valid_success_rate" in r and "semantic_change_rate" in r and r["control"] is (r["attack"] != "p2p")
    md = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert "random-prompt[fast, steps=2, 32 px, residual, fp32] (control)" in md
    assert "rerender[default, steps=2, source px, direct, fp32] (control)" in md
    assert "p2p[fast, steps=2, 32 px, residual, fp32] (control)" not in md
    # the validity table names the procedures as the main table does
    valid = md.split("## Valid success")[1].split("## Transfer")[0]
    assert "| sq | p2p[fast, steps=2, 32 px, residual, fp32] |" in valid
    assert "| sq | random-prompt[fast, steps=2, 32 px, residual, fp32] (control) |" in valid
    transfer = (tmp_path / "out" / "transfer.csv").read_text(encoding="utf-8").splitlines()
    assert transfer[0].startswith("attack,procedure,control,source,target")
    html = (tmp_path / "out" / "evaluation_report.html").read_text(encoding="utf-8")
    assert "<th>control</th>" in html
    # issue 25 item 5: FID described right under the metric protocol; the protocol's details in summary.json
    from p2p_desktop.attacks.procedure import FID_TEXT

    head = [line for line in md.split("## Attack results")[0].splitlines() if line]
    at = next(i for i, line in enumerate(head) if line.startswith("Metric protocol: **native**"))
    assert head[at + 1] == FID_TEXT["native"] + "."
    import html as _html

    assert _html.escape(FID_TEXT["native"]) in html
    assert doc["metrics"]["ssim"] == {"window": "7×7 uniform", "data_range": 1.0,
                                      "on": "the images as written (source geometry)"}
    assert doc["warnings"] == []  # tiny SD: 32 px, as it was built
    assert any(n.startswith("random-prompt (control): ") for n in doc["notes"])
    assert any(n.startswith("rerender (control): ") for n in doc["notes"])


def test_a_run_off_the_backbones_training_resolution_says_so(bb, clf, tmp_path):
    """Issue 25 item 5: one warning line and provenance; the run's metric protocol in its JSON."""
    from p2p_desktop.attacks.procedure import RESOLUTION_WARNING_PREFIX, describe, training_resolution
    from p2p_desktop.export.provenance import provenance_record
    from p2p_desktop.paths import models_dir

    class Demo:  # the demo backbone's folder: its card.json names its training resolution
        name, path, resolution, dtype = "demo", str(models_dir() / "demo"), 128, "torch.float32"

    assert training_resolution(Demo()) == (128, "demo card.json")
    paper = describe(P2P.from_preset("paper"), None, Demo())
    assert paper["training_resolution"] == 128 and paper["resolution_warning"].startswith(RESOLUTION_WARNING_PREFIX)
    assert "224 px" in paper["resolution_warning"] and "128 px" in paper["resolution_warning"]
    assert "resolution_warning" not in describe(P2P.from_preset("fast"), None, Demo())

    img = np.round(phantom(32, 1)[0].permute(1, 2, 0).numpy() * 255) / 255
    study = Study(path=Path("p.png"), image=img.astype(np.float32), kind="image")
    res = run_attack(study, clf, P2P.from_preset("fast", steps=1, resolution=48), backbone=bb)
    warned = [n for n in res.notes if n.startswith(RESOLUTION_WARNING_PREFIX)]
    assert len(warned) == 1 and "48 px" in warned[0] and "32 px" in warned[0] and "\n" not in warned[0]
    assert res.procedure["training_resolution"] == 32 and res.procedure["resolution_warning"] == warned[0]
    summary = res.summary()  # what attack --json and the result JSON carry
    assert summary["metric_protocol"]["protocol"] == "native"
    assert summary["metric_protocol"]["ssim"] == {"window": "7×7 uniform", "data_range": 1.0,
                                                  "on": "the images as written (source geometry)"}
    prov = provenance_record(res, study)
    assert prov["attack"]["metric_protocol"] == summary["metric_protocol"]
    assert prov["attack"]["procedure"]["resolution_warning"] == warned[0]


def test_evaluate_runs_the_controls_at_p2ps_preset():
    from p2p_desktop.jobs.evaluate.params import build_attacks, default_presets

    def presets(names, preset):
        return {a.name: a.config.preset for a in build_attacks(names, preset=default_presets(names, preset))
                if hasattr(a.config, "preset")}

    both = ["p2p", "random-prompt", "p2p-lr0", "rerender"]
    assert presets(both, None) == {"p2p": "paper", "random-prompt": "paper", "p2p-lr0": "paper"}
    assert presets(both, "p2p=fast") == {"p2p": "fast", "random-prompt": "fast", "p2p-lr0": "fast"}
    assert presets(both, "p2p=fast,p2p-lr0=paper") == {"p2p": "fast", "random-prompt": "fast", "p2p-lr0": "paper"}
    assert presets(["random-prompt"], None) == {"random-prompt": "paper"}  # evaluate's P2P default
