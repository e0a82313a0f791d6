"""End to end on the embedded demo bundle: P2P ``fast`` against demo-squeezenet1_1 on phantoms.

Skipped when the bundle (resources/models/demo and demo-squeezenet1_1) is not installed.

Two claims, kept apart. What the demo guarantees: every phantom P2P fools is a *valid* success,
fooled with the finding kept (phantom label-preservation oracle, p2p_desktop/phantoms/oracle.py)
— the shipped backbone's prompt steers appearance only (training/appearance.py), so P2P cannot
redraw the finding. And the goal it does not reach yet: that P2P ``fast`` fools (validly) every
attacked phantom; on the appearance-only backbone it fools fewer than half (see the xfail's
reason and the README's demo table), and ``strict`` makes that test fail once it passes.
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


def test_p2p_fast_on_the_demo_never_redraws_the_finding(p2p_runs):
    """Every run ends with a judged, written image; every success keeps the label (no semantic change)."""
    from p2p_desktop.phantoms.oracle import LABEL_KEPT, PhantomRecord, judge

    for seed, label, img, res in p2p_runs:
        assert res.iterations >= 1 and np.asarray(res.adversarial).shape == img.shape, seed
        assert 0.0 < res.metrics["ssim"] <= 1.0, (seed, res.metrics)
        if res.success:
            v = judge(PhantomRecord(seed, label, img.shape[0]), img[:, :, 0], np.asarray(res.adversarial))
            assert v.verdict == LABEL_KEPT, (seed, label, v.reason)


@pytest.mark.xfail(strict=True, reason=(
    "the goal of issue 13 is not reached: on the appearance-only demo backbone P2P fast fools fewer than half of "
    "the attacked phantoms (unseen seeds 5,000,100-5,000,108: 2/7 against demo-squeezenet1_1, 4/9 resnet34, 3/7 "
    "densenet121; README demo table): its steering of gain, contrast and speckle is what these classifiers were "
    "trained to ignore. Remove this xfail when P2P fast validly fools these three test phantoms"))
def test_p2p_fast_valid_success_on_demo_squeezenet_phantoms(p2p_runs):
    from p2p_desktop.phantoms.oracle import LABEL_KEPT, PhantomRecord, judge

    for seed, label, img, res in p2p_runs:
        assert res.success, seed
        v = judge(PhantomRecord(seed, label, img.shape[0]), img[:, :, 0], np.asarray(res.adversarial))
        assert v.verdict == LABEL_KEPT, (seed, label, v.reason)
