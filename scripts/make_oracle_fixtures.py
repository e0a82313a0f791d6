"""Keep a few outputs of P2P ``fast`` with the shipped demo backbone as small test fixtures.

The label-preservation oracle's test (tests/test_oracle.py) checks that it flags the class
edits the first demo backbone makes (that backbone was fine-tuned on cross-class
counterfactual targets, so P2P on it tends to redraw the lesion as another class). Running
P2P in every test run is slow on a CPU, so this script runs it once and writes, per attacked
phantom, the adversarial image as an 8-bit PNG and a JSON record (phantom record, classifier,
preset, backbone and classifier hashes, P2P's result) under ``tests/data/oracle/``.

    python scripts/make_oracle_fixtures.py [--n 4] [--classifier demo-squeezenet1_1] [--out tests/data/oracle]

Phantoms: the first ``n`` of seeds 3_000_000.. (the unit-test range, never trained on; the
same phantoms as tests/test_p2p_demo.py) that the classifier gets right. Every attacked
phantom is kept, whatever the oracle says about it: the fixtures are P2P's outputs, not a
selection.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

TEST_SEEDS = range(3_000_000, 3_000_060)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--classifier", default="demo-squeezenet1_1")
    p.add_argument("--preset", default="fast")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data" / "oracle")
    args = p.parse_args(argv)

    from PIL import Image

    from p2p_desktop.attacks.p2p import P2P
    from p2p_desktop.attacks.runner import run_attack
    from p2p_desktop.io.study import Study
    from p2p_desktop.models.backbone import load_backbone
    from p2p_desktop.models.classifier import load_classifier
    from p2p_desktop.phantoms import CLASSES, generate_phantom
    from p2p_desktop.phantoms.oracle import PhantomRecord, judge

    bb = load_backbone("demo", device="cpu")
    clf = load_classifier(args.classifier, device="cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    done = 0
    for seed in TEST_SEEDS:
        if done == args.n:
            break
        label = CLASSES[seed % 3]
        ph = generate_phantom(seed, label, size=bb.resolution)
        img = (np.round(ph.image * 255) / 255).astype(np.float32)[:, :, None]
        if clf.predict(img)[0] != label:
            continue
        res = run_attack(Study(path=Path(f"phantom-{seed}.png"), image=img, kind="image"), clf,
                         P2P.from_preset(args.preset), backbone=bb, true_label=label)
        adv = np.clip(np.rint(np.asarray(res.adversarial, dtype=np.float64).squeeze() * 255), 0, 255).astype(np.uint8)
        stem = f"p2p_{args.preset}_{args.classifier}_{label}_{seed}"
        buf = io.BytesIO()
        Image.fromarray(adv).save(buf, format="PNG")
        (args.out / f"{stem}.png").write_bytes(buf.getvalue())
        record = PhantomRecord(seed=seed, label=label, size=bb.resolution)
        verdict = judge(record, img[:, :, 0], adv.astype(np.float64) / 255.0)
        meta = {"phantom": {"seed": seed, "label": label, "size": bb.resolution},
                "attack": "p2p", "preset": args.preset, "classifier": args.classifier,
                "classifier_sha256": clf.card.sha256,
                "backbone": {k: v for k, v in bb.identity().items() if k != "path"},
                "success": bool(res.success), "adversarial_label": res.adversarial_label,
                "ssim": res.metrics.get("ssim"), "oracle_when_made": verdict.to_dict()}
        (args.out / f"{stem}.json").write_text(json.dumps(meta, indent=1, default=str) + "\n", encoding="utf-8")
        print(f"{stem}: success={res.success} -> {res.adversarial_label} ssim={res.metrics.get('ssim'):.3f} "
              f"oracle: {verdict.verdict} ({verdict.reason})", file=sys.stderr)
        done += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
