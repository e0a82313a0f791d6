"""Out-of-memory during an attack: a clear message, one retry at lower cost, and the process stays usable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from p2p_desktop.attacks.base import Attack, AttackConfig, AttackOutput
from p2p_desktop.attacks.pgd import PGD
from p2p_desktop.attacks.runner import run_attack
from p2p_desktop.config import param
from p2p_desktop.errors import OutOfMemory
from p2p_desktop.io.study import Study
from tests.toy import toy_image, trained_toy_classifier


@dataclass(frozen=True)
class HungryConfig(AttackConfig):
    batch: int = param(8, help="candidates per step", min=1)


class Hungry(Attack):
    """Runs PGD, but 'allocates' batch × 1 GiB: more than 4 GiB raises the device's OOM error."""

    name = "hungry"
    Config = HungryConfig

    def run(self, x, ctx):
        import torch

        if self.config.batch > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        out = PGD(seed=self.config.seed, steps=3).run(x, ctx)
        return AttackOutput(out.adversarial, out.iterations, {"batch": self.config.batch})

    def cheaper(self):
        return Hungry(self.config.replace(batch=1)) if self.config.batch > 1 else None


class NoRetry(Hungry):
    def cheaper(self):
        return None


@pytest.fixture(scope="module")
def clf():
    return trained_toy_classifier()


def _study():
    return Study(path=Path("t.png"), image=toy_image(np.random.RandomState(1), 0), kind="image")


def test_oom_retries_at_lower_cost_and_says_so(clf):
    res = run_attack(_study(), clf, Hungry())
    assert res.config["batch"] == 1 and res.info["batch"] == 1
    assert any("out of memory" in n and "lower cost" in n for n in res.notes)
    assert len(res.history) == 3


def test_oom_without_cheaper_variant_is_a_clear_error_and_next_run_works(clf):
    with pytest.raises(OutOfMemory) as err:
        run_attack(_study(), clf, NoRetry())
    msg = str(err.value)
    assert "out of memory" in msg and "\n" not in msg
    ok = run_attack(_study(), clf, PGD(steps=2))  # the process stays usable
    assert ok.iterations == 2
