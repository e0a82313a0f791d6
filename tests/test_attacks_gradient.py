"""FGSM and PGD on a small trained toy classifier: success, budget, targeting, determinism, cancel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from p2p_desktop.attacks.registry import get
from p2p_desktop.attacks.runner import run_attack
from p2p_desktop.cancel import CancelToken
from p2p_desktop.errors import Cancelled, InputError
from p2p_desktop.io.study import Study
from tests.toy import toy_image, trained_toy_classifier


@pytest.fixture(scope="module")
def clf():
    return trained_toy_classifier()


def _study(label: int, seed: int = 5) -> Study:
    img = toy_image(np.random.RandomState(seed), label)
    img = np.round(img * 255) / 255  # an 8-bit source
    return Study(path=Path(f"toy{label}.png"), image=img.astype(np.float32), kind="image")


def test_toy_classifier_is_accurate(clf):
    rng = np.random.RandomState(123)
    hits = [clf.predict(toy_image(rng, y))[0] == clf.classes[y] for y in [0, 1, 2] * 10]
    assert np.mean(hits) >= 0.9


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 2.0)])
def test_pgd_succeeds_and_respects_budget(clf, norm, eps):
    study = _study(0)
    assert clf.predict(study.image)[0] == "benign"
    attack = get("pgd")(eps=eps, alpha=eps / 4, steps=20, norm=norm, seed=3)
    res = run_attack(study, clf, attack)
    assert res.success, res.adversarial_probs
    assert res.adversarial_label != "benign"
    d = res.perturbation.astype(np.float64)
    if norm == "linf":
        assert np.abs(d).max() <= eps + 1e-6
    else:
        assert np.sqrt((d ** 2).sum()) <= eps + 1e-4
    # the written image is on the 8-bit grid
    assert np.allclose(res.adversarial * 255, np.round(res.adversarial * 255), atol=1e-3)
    assert len(res.history) == 20 and res.history[-1].step == 20


def test_fgsm_succeeds_within_eps(clf):
    study = _study(0)
    res = run_attack(study, clf, get("fgsm")(eps=0.15))
    assert res.success
    assert np.abs(res.perturbation).max() <= 0.15 + 1e-6
    assert len(res.history) == 1


def test_targeted_pgd_reaches_target(clf):
    study = _study(2)
    res = run_attack(study, clf, get("pgd")(eps=0.1, alpha=0.02, steps=30, target="malignant", seed=1))
    assert res.success
    assert res.adversarial_label == "malignant"


def test_target_equal_to_label_is_refused(clf):
    with pytest.raises(InputError, match="own class"):
        run_attack(_study(0), clf, get("pgd")(target="benign"))


def test_same_seed_same_output_and_different_seed_differs(clf):
    study = _study(1)
    a = run_attack(study, clf, get("pgd")(seed=7, steps=5))
    b = run_attack(study, clf, get("pgd")(seed=7, steps=5))
    c = run_attack(study, clf, get("pgd")(seed=8, steps=5))
    assert np.array_equal(a.adversarial, b.adversarial)
    assert not np.array_equal(a.adversarial, c.adversarial)


def test_cancel_stops_within_one_iteration(clf):
    token = CancelToken()
    seen = []

    def on_step(ev):
        seen.append(ev.step)
        if ev.step == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        run_attack(_study(0), clf, get("pgd")(steps=50), on_step=on_step, cancel=token)
    assert seen == [1, 2, 3]


@pytest.mark.parametrize("bad", [{"eps": -0.1}, {"eps": 0}, {"steps": 0}, {"norm": "l3"}, {"alpha": "x"}])
def test_bad_parameters_refused_with_field_name(bad):
    with pytest.raises(InputError) as err:
        get("pgd")(**bad)
    assert next(iter(bad)) in str(err.value)


def test_unknown_parameter_refused():
    cls = get("pgd")
    with pytest.raises(InputError, match="unknown parameter"):
        cls.Config.from_dict({"epsilon": 0.1})


def test_source_geometry_is_kept_for_non_square_rgb(clf):
    rng = np.random.RandomState(0)
    img = np.repeat(toy_image(rng, 0, size=32), 3, axis=2)
    img = np.concatenate([img, img[:, :16]], axis=1)  # 32 x 48 RGB
    study = Study(path=Path("rgb.png"), image=img, kind="image")
    res = run_attack(study, clf, get("fgsm")(eps=0.05))
    assert res.adversarial.shape == (32, 48, 3)
    assert res.perturbation.shape == (32, 48, 3)
