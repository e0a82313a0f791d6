"""End to end on the embedded demo bundle: P2P ``fast`` fools demo-squeezenet1_1 on phantoms.

Skipped when the bundle (resources/models/demo and demo-squeezenet1_1) is not installed.
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


def test_p2p_fast_fools_demo_squeezenet_on_phantoms():
    _bundle_or_skip()
    from p2p_desktop.attacks.p2p import P2P
    from p2p_desktop.attacks.runner import run_attack
    from p2p_desktop.io.study import Study
    from p2p_desktop.models.backbone import load_backbone
    from p2p_desktop.models.classifier import load_classifier
    from p2p_desktop.phantoms import CLASSES, generate_phantom

    bb = load_backbone("demo", device="cpu")
    clf = load_classifier("demo-squeezenet1_1", device="cpu")
    studies = []
    for seed in TEST_SEEDS:  # phantoms the clean classifier gets right (only those are attacked)
        ph = generate_phantom(seed, CLASSES[seed % 3], size=bb.resolution)
        img = (np.round(ph.image * 255) / 255).astype(np.float32)[:, :, None]
        label, _ = clf.predict(img)
        if label == ph.label:
            studies.append(Study(path=Path(f"phantom-{seed}.png"), image=img, kind="image"))
        if len(studies) == N_IMAGES:
            break
    assert len(studies) == N_IMAGES, "the demo classifier gets too few test phantoms right"
    for study in studies:
        res = run_attack(study, clf, P2P.from_preset("fast"), backbone=bb, true_label=None)
        assert res.success, (study.path.name, res.summary()["adversarial"], res.info["probs"])
        assert res.metrics["ssim"] >= 0.8, (study.path.name, res.metrics)
