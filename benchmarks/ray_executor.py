#!/usr/bin/env python
"""`evaluate --executor ray` against the serial executor on the same phantoms and attacks.

    python benchmarks/ray_executor.py [--n 8] [--attacks pgd,p2p] [--preset fast] [--workers 2]
                                      [--classifier demo-squeezenet1_1] [--ray-address HOST:PORT]

Runs the serial executor, then Ray with N workers (a local instance unless --ray-address), on
the same N phantoms (seeds 5000000..), and prints the wall times, their ratio, the time until
every worker had its models loaded, and the executor's per-task overhead: the driver's round trip
per job minus the attack's own seconds (transfer of the image bytes and the result, decoding,
the clean classification and the PNG encoding, which the serial loop also does, and Ray's
scheduling). Checks that both wrote the same rows.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--attacks", default="pgd,p2p")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--classifier", default="demo-squeezenet1_1")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ray-address")
    args = ap.parse_args()

    from p2p_desktop.executors.ray_executor import RayExecutor
    from p2p_desktop.jobs.evaluate import evaluate
    from p2p_desktop.phantoms import write_png_dataset

    tmp = Path(tempfile.mkdtemp(prefix="raybench-"))
    write_png_dataset(tmp / "data", args.n, seed=5000000, size=128)
    attacks = args.attacks.split(",")
    kw = dict(preset=args.preset)
    t0 = time.perf_counter()
    evaluate(tmp / "data", attacks, [args.classifier], tmp / "serial", **kw)
    serial = time.perf_counter() - t0
    ex = RayExecutor(address=args.ray_address, workers=args.workers)
    t0 = time.perf_counter()
    evaluate(tmp / "data", attacks, [args.classifier], tmp / "ray", executor=ex, **kw)
    ray_wall = time.perf_counter() - t0

    def rows(p):
        with open(p / "per_image.csv", newline="") as fh:
            return {(r["image"], r["attack"]): (r["success"], r["adv_pred"]) for r in csv.DictReader(fh)}

    same = rows(tmp / "serial") == rows(tmp / "ray")
    over = [rtt - sec for rtt, sec in ex.round_trips]
    print(f"{args.n} phantoms x {len(attacks)} attacks ({args.attacks}, preset {args.preset}), {args.classifier}")
    print(f"serial           {serial:7.1f} s")
    print(f"ray, {args.workers} workers   {ray_wall:7.1f} s   (serial/ray = {serial / ray_wall:.2f}x; "
          f"workers ready after {ex.ready_s:.1f} s)")
    print(f"per-task overhead {statistics.mean(over):.2f} s mean, {statistics.median(over):.2f} s median over "
          f"{len(over)} tasks (round trip minus attack seconds)")
    print(f"same rows as serial: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
