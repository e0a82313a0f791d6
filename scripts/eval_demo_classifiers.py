#!/usr/bin/env python
"""Accuracy of the demo classifiers on phantoms they never saw, with 95 % intervals.

    python scripts/eval_demo_classifiers.py [--models resources/models] [--n-extra 900]

Two sets: the cards' own test seeds (2000000.., the figure each card records) and a larger
extra set (2100000.., used by nothing else), so the card figure can be checked against a
second, independent draw. Prints accuracy, the Wilson 95 % interval and the confusion matrix
(rows: true class, columns: predicted) for every demo classifier, as served (fp16 weights,
the card's preprocessing).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRA_SEED_START = 2_100_000


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main() -> int:
    import torch

    from p2p_desktop.models.classifier import load_classifier
    from p2p_desktop.training import classifiers as tc

    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--models", type=Path, default=ROOT / "resources" / "models")
    p.add_argument("--arch", default=",".join(tc.DEMO_ARCHITECTURES))
    p.add_argument("--n-test", type=int, default=300, help="phantoms from the cards' test seeds")
    p.add_argument("--n-extra", type=int, default=900, help=f"phantoms from seeds {EXTRA_SEED_START}..")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    sets = [("card test", tc.phantom_set(tc.TEST_SEED_START, args.n_test))]
    if args.n_extra > 0:
        sets.append(("extra", tc.phantom_set(EXTRA_SEED_START, args.n_extra)))
    print(f"{'classifier':<20} {'set':<10} {'seeds':<17} {'accuracy':>8}  {'95% interval':<15} confusion")
    for arch in (a.strip() for a in args.arch.split(",") if a.strip()):
        clf = load_classifier(args.models / f"demo-{arch}" / "card.json")
        for name, data in sets:
            with torch.no_grad():
                pred = torch.cat([clf.logits(data.images[i:i + 64]).argmax(1)
                                  for i in range(0, len(data), 64)])
            k = int((pred == data.labels).sum())
            lo, hi = wilson(k, len(data))
            confusion = torch.zeros(3, 3, dtype=torch.long)
            confusion.index_put_((data.labels, pred), torch.ones_like(pred), accumulate=True)
            print(f"{clf.card.name:<20} {name:<10} {data.seed_range:<17} {k / len(data):>8.3f}  "
                  f"[{lo:.3f}, {hi:.3f}]  {confusion.tolist()}")
    print("classes:", ", ".join(tc.DEMO_CLASSES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
