"""End to end on the embedded demo bundle: P2P ``fast`` against demo-squeezenet1_1 on phantoms.

Skipped when the bundle (resources/models/demo and demo-squeezenet1_1) is not installed.

Two claims, kept apart. The engine works: every attacked phantom is fooled with SSIM ≥ 0.8.
And the goal of the demo: each is a *valid* success, fooled with the finding kept (phantom
label-preservation oracle, p2p_desktop/phantoms/oracle.py). The shipped demo backbone does not
reach the second: it was fine-tuned on cross-class counterfactual targets, so P2P on it redraws
the finding as another class (see the xfail's reason); retraining it with appearance-only text
conditioning (issue 13, item 2) is what makes that test pass, and then ``strict`` makes it fail
until the xfail is removed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from p2p_desktop.models import registry

pytestmark = pytest.mark.slow

N_IMAGES = 3
TEST_SEEDS = range(3_000_000, 3_000_060)  # the unit-test seed range: never trained on


def _bundle_or_skip():
    if registry.find("demo") is None or registry.find("demo-squeezenet1_1") is None:
        pytest.skip("demo bundle (resources/models/demo, demo-squeezenet1_1) is not installed")


@pytest.fixture(scope="module")
def p2p_runs():
    """P2P ``fast`` on the first N_IMAGES test phantoms the clean classifier gets right:
    [(seed, label, source image, AttackResult)]."""
    _bundle_or_skip()
    from p2p_desktop.attacks.p2p import P2P
    from p2p_desktop.attacks.runner import run_attack
    from p2p_desktop.io.study import Study
    from p2p_desktop.models.backbone import load_backbone
    from p2p_desktop.models.classifier import load_classifier
    from p2p_desktop.phantoms import CLASSES, generate_phantom

    bb = load_backbone("demo", device="cpu")
    clf = load_classifier("demo-squeezenet1_1", device="cpu")
    runs = []
    for seed in TEST_SEEDS:  # phantoms the clean classifier gets right (only those are attacked)
        ph = generate_phantom(seed, CLASSES[seed % 3], size=bb.resolution)
        img = (np.round(ph.image * 255) / 255).astype(np.float32)[:, :, None]
        label, _ = clf.predict(img)
        if label == ph.label:
            study = Study(path=Path(f"phantom-{seed}.png"), image=img, kind="image")
            runs.append((seed, ph.label, img, run_attack(study, clf, P2P.from_preset("fast"), backbone=bb,
                                                         true_label=None)))
        if len(runs) == N_IMAGES:
            break
    assert len(runs) == N_IMAGES, "the demo classifier gets too few test phantoms right"
    return runs


def test_p2p_fast_fools_demo_squeezenet_on_phantoms(p2p_runs):
    for seed, _label, _img, res in p2p_runs:
        assert res.success, (seed, res.summary()["adversarial"], res.info["probs"])
        assert res.metrics["ssim"] >= 0.8, (seed, res.metrics)


@pytest.mark.xfail(strict=True, reason=(
    "the shipped demo backbone was fine-tuned on cross-class counterfactual targets "
    "(p2p_desktop/training/counterfactual.py): P2P fast on it redraws the finding as another class; on these "
    "test phantoms the oracle calls 2 of 3 successes semantic changes (the cyst of benign 3000000 faded away, "
    "a mass drawn into normal 3000002). Remove this xfail once the demo backbone is retrained with "
    "appearance-only text conditioning (issue 13, item 2)"))
def test_p2p_fast_valid_success_on_demo_squeezenet_phantoms(p2p_runs):
    from p2p_desktop.phantoms.oracle import LABEL_KEPT, PhantomRecord, judge

    for seed, label, img, res in p2p_runs:
        assert res.success, seed
        v = judge(PhantomRecord(seed, label, img.shape[0]), img[:, :, 0], np.asarray(res.adversarial))
        assert v.verdict == LABEL_KEPT, (seed, label, v.reason)
