"""DeepFool (one new file + one registry row) fools the real demo classifier with a small L2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from p2p_desktop.attacks import registry
from p2p_desktop.attacks.runner import run_attack

SAMPLES = Path(__file__).resolve().parent.parent / "resources" / "samples" / "busi"
DEMO = "demo-squeezenet1_1"


@pytest.fixture(scope="module")
def demo_classifier():
    from p2p_desktop.models import registry as models
    from p2p_desktop.models.classifier import load_classifier

    if models.find(DEMO) is None:
        pytest.skip(f"the demo classifier {DEMO} is not bundled")
    return load_classifier(DEMO)


def test_deepfool_is_registered_by_its_row_with_the_papers_defaults():
    cls = registry.get("deepfool")
    assert registry.spec("deepfool").summary == cls.summary and not registry.spec("deepfool").requires_backbone
    config = cls().config
    assert (config.steps, config.overshoot) == (50, 0.02)


def test_deepfool_fools_a_sample_phantom_with_a_small_l2(demo_classifier):
    from p2p_desktop.io import load_study

    fooled = []
    for path in sorted(SAMPLES.glob("*/*[0-9].png"))[:3]:
        study = load_study(path)
        events = []
        res = run_attack(study, demo_classifier, registry.get("deepfool")(), on_step=events.append)
        assert [e.step for e in events] == list(range(1, res.iterations + 1))
        l2 = float(np.sqrt((res.perturbation.astype(np.float64) ** 2).sum()))
        if res.success:
            fooled.append((path.name, l2, res.metrics["ssim"]))
            assert res.iterations < 50 and res.adversarial_label != res.original_label
            break  # one is enough (each run takes seconds on a CPU)
    assert fooled, "DeepFool fooled none of the sample phantoms"
    # small: an L2 of about one [0,1] unit over a 256 × 256 image, the image structurally unchanged
    assert min(l2 for _n, l2, _s in fooled) < 2.0, fooled
    assert max(s for _n, _l2, s in fooled) > 0.9, fooled
