"""The contract every registered attack keeps (torchattacks' one test over ``__all__``).

For every built-in attack (controls included): its registry row and its class agree (name, summary,
control), its config is a frozen, validated dataclass, its module cites its paper. For those that need
no diffusion backbone, a run on a small trained classifier: one ``ctx.step`` per iteration with the
class probabilities, an output in [0, 1] in the source's geometry, the same output for the same
seed, and a cancel honoured at the first step with nothing returned (an attack that runs on phantoms
only, ``requires_phantom``, is given a phantom of the simulator).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from p2p_desktop.attacks import registry
from p2p_desktop.attacks.base import Attack, AttackConfig
from p2p_desktop.attacks.runner import run_attack
from p2p_desktop.cancel import CancelToken
from p2p_desktop.errors import Cancelled
from p2p_desktop.io.study import Study
from tests.toy import toy_image, trained_toy_classifier

NAMES = [s.name for s in registry.BUILTIN]
GRADIENT_ONLY = [s.name for s in registry.BUILTIN if not s.requires_backbone]


@pytest.fixture(scope="module")
def clf():
    return trained_toy_classifier()


def _study(label: int = 0, seed: int = 5) -> Study:
    img = np.round(toy_image(np.random.RandomState(seed), label) * 255) / 255
    return Study(path=Path(f"toy{label}.png"), image=img.astype(np.float32), kind="image")


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory):
    from p2p_desktop.io import load_study
    from p2p_desktop.phantoms import write_png_dataset

    path = write_png_dataset(tmp_path_factory.mktemp("phantoms"), 1, 1100001, size=32)[0]
    return load_study(path)


def _study_for(name, phantom_study):
    return phantom_study if getattr(registry.get(name), "requires_phantom", False) else _study()


@pytest.mark.parametrize("name", NAMES)
def test_registry_row_and_class_agree(name):
    import sys

    cls = registry.get(name)
    assert issubclass(cls, Attack) and cls.name == name
    assert cls.summary and registry.spec(name).summary == cls.summary
    assert registry.spec(name).requires_backbone is bool(cls.requires_backbone)
    assert registry.spec(name).control is bool(getattr(cls, "control", False))
    assert issubclass(cls.Config, AttackConfig) and cls.Config.__dataclass_params__.frozen
    config = cls.Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]
    assert cls(config).config == cls().config
    assert cls().total_steps() >= 1
    doc = sys.modules[cls.__module__].__doc__ or ""
    assert "et al." in doc  # names its paper


@pytest.mark.parametrize("name", GRADIENT_ONLY)
def test_a_run_reports_every_step_and_is_reproducible(clf, name, phantom_study):
    study = _study_for(name, phantom_study)
    events = []
    attack = registry.get(name)(seed=3)
    res = run_attack(study, clf, attack, on_step=events.append)
    assert events and [e.step for e in events] == list(range(1, len(events) + 1))
    assert all(e.total == attack.total_steps() and set(e.probs) == set(clf.classes) for e in events)
    assert res.iterations == len(events) == len(res.history)
    assert res.adversarial.shape == study.image.shape
    assert 0.0 <= res.adversarial.min() and res.adversarial.max() <= 1.0
    again = run_attack(study, clf, registry.get(name)(seed=3))
    np.testing.assert_array_equal(again.adversarial, res.adversarial)


@pytest.mark.parametrize("name", GRADIENT_ONLY)
def test_a_cancel_is_honoured_at_the_first_step(clf, name, phantom_study):
    cancel = CancelToken()
    events = []

    def on_step(event):
        events.append(event)
        cancel.cancel()

    with pytest.raises(Cancelled):
        run_attack(_study_for(name, phantom_study), clf, registry.get(name)(seed=0), on_step=on_step, cancel=cancel)
    assert len(events) == 1
