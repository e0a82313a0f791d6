#!/usr/bin/env python
"""P2P `paper` preset against `fast`, on the same phantoms, backbone and classifier, in one run.

    python benchmarks/p2p_presets.py [--n 4] [--classifier demo-squeezenet1_1] [--backbone demo]

Prints, per preset: seconds per attacked image, success rate, mean SSIM (over successes, over
all attacked images, and over the images BOTH presets fooled), iterations; then the speed ratio
paper/fast and whether `fast` meets the target (≥ 5× quicker, success rate and SSIM no worse than
`paper`'s within 0.02). SSIM is compared on the images both presets fooled: a failed attack that
barely touched its image has a high SSIM, so "over all" favours the preset that fails more.
Only phantoms the clean classifier gets right are attacked (as in the paper).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--n", type=int, default=4, help="correctly classified phantoms to attack")
    ap.add_argument("--seed", type=int, default=7_000_000, help="first phantom seed (never used in training)")
    ap.add_argument("--classifier", default="demo-squeezenet1_1")
    ap.add_argument("--backbone", default="demo")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    import numpy as np
    import torch

    from p2p_desktop.attacks.registry import get
    from p2p_desktop.attacks.runner import run_attack
    from p2p_desktop.io.study import Study
    from p2p_desktop.models.backbone import load_backbone
    from p2p_desktop.models.classifier import load_classifier
    from p2p_desktop.phantoms import generate_phantom

    clf = load_classifier(args.classifier, device=args.device)
    bb = load_backbone(args.backbone, device=args.device)
    studies = []
    seed = args.seed
    while len(studies) < args.n:
        ph = generate_phantom(seed, size=256)
        seed += 1
        st = Study(path=Path(f"phantom_{ph.seed}.png"), image=ph.image[:, :, None].copy(), kind="image",
                   label=ph.label)
        if clf.predict(st.image)[0] == ph.label:
            studies.append(st)
    print(f"{args.n} correctly classified phantoms (seeds {args.seed}..{seed - 1}), classifier {args.classifier}, "
          f"backbone {args.backbone}, device {args.device}, torch threads {torch.get_num_threads()}", flush=True)

    P2P = get("p2p")
    figures, per_image = {}, {}
    for preset in ("fast", "paper"):
        rows = []
        for st in studies:
            attack = P2P.from_preset(preset, seed=0)
            t0 = time.perf_counter()
            res = run_attack(st, clf, attack, backbone=bb)
            rows.append({"seconds": time.perf_counter() - t0, "success": res.success, "ssim": res.metrics["ssim"],
                         "iterations": res.iterations})
            print(f"  {preset:<5} {st.path.name}: {'success' if res.success else 'failed '} "
                  f"SSIM {res.metrics['ssim']:.3f} {rows[-1]['seconds']:.1f} s {res.iterations} it", flush=True)
        per_image[preset] = rows
        succ = [r for r in rows if r["success"]]
        figures[preset] = {
            "seconds_per_image": statistics.mean(r["seconds"] for r in rows),
            "success_rate": len(succ) / len(rows),
            "ssim_mean_successes": statistics.mean(r["ssim"] for r in succ) if succ else None,
            "ssim_mean_all": statistics.mean(r["ssim"] for r in rows),
            "iterations_mean": statistics.mean(r["iterations"] for r in rows),
        }
    both = [i for i, (a, b) in enumerate(zip(per_image["fast"], per_image["paper"])) if a["success"] and b["success"]]
    for name, v in figures.items():
        v["ssim_mean_both_fooled"] = (statistics.mean(per_image[name][i]["ssim"] for i in both) if both else None)
    f, p = figures["fast"], figures["paper"]
    ratio = p["seconds_per_image"] / f["seconds_per_image"]
    fmt = lambda v: "   n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"\npreset  s/image  success  SSIM(succ)  SSIM(all)  SSIM(both fooled, n={len(both)})  iterations")
    for name, v in figures.items():
        print(f"{name:<7} {v['seconds_per_image']:7.1f}  {v['success_rate']:7.2f}  {fmt(v['ssim_mean_successes']):>10}"
              f"  {v['ssim_mean_all']:9.3f}  {fmt(v['ssim_mean_both_fooled']):>24}  {v['iterations_mean']:10.1f}")
    ok_speed = ratio >= 5
    ok_success = f["success_rate"] >= p["success_rate"] - 0.02
    ok_ssim = bool(both) and f["ssim_mean_both_fooled"] >= p["ssim_mean_both_fooled"] - 0.02
    print(f"\nspeed ratio paper/fast: {ratio:.1f}x (target ≥ 5x: {'met' if ok_speed else 'NOT met'}); "
          f"success {'no worse' if ok_success else 'WORSE'}; SSIM on images both fooled "
          f"{'no worse' if ok_ssim else ('WORSE' if both else 'n/a (none fooled by both)')} (±0.02)")
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": figures, "per_image": per_image, "ratio": ratio, "n": args.n,
                                               "classifier": args.classifier, "cpu_count": os.cpu_count()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
