#!/usr/bin/env python
"""Retrain the whole embedded demo bundle from scratch, on this project's synthetic phantoms.

    python scripts/train_demo_bundle.py --out resources/models      (or: make retrain-demo)

1. the demo diffusion backbone (resources/models/demo)            — p2p_desktop.training.backbone,
   then its appearance-only text-conditioning phase                — p2p_desktop.training.appearance
   and the measure of what its prompt steers (stored in its card)  — p2p_desktop.training.appearance_eval
   (no cross-class targets: the prompt steers how the same finding is imaged; the earlier
   counterfactual phase, p2p_desktop.training.counterfactual, taught class edits and is no
   longer part of the bundle)
2. the three demo classifiers (resources/models/demo-<arch>)      — p2p_desktop.training.classifiers
   (runs beside step 1, one CPU thread each)
3. the example classifier plugin's weights (plugins/phantom_cnn)  — plugins/phantom_cnn/train.py
4. the sample studies shown on first start (resources/samples)    — p2p_desktop.phantoms

Existing model folders are replaced only when their training finished (each trainer writes
to a temporary folder and moves it into place).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--out", type=Path, default=ROOT / "resources" / "models")
    p.add_argument("--minutes", type=float, default=35.0, help="time budget of the backbone's base training")
    p.add_argument("--appearance-minutes", type=float, default=40.0,
                   help="time budget of the backbone's appearance-only text-conditioning phase")
    p.add_argument("--classifier-minutes", type=float,
                   help="CPU-time budget of the three classifiers together (default: each architecture's "
                        "own, p2p_desktop.training.classifiers.RECIPES)")
    p.add_argument("--skip", default="", help="comma list of steps to skip: backbone,classifiers,plugin,samples")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    t0 = time.time()
    py = sys.executable
    procs = []
    if "backbone" not in skip:
        demo = str(args.out / "demo")
        # Base denoiser first, then the appearance phase on top of it (one shell chain, so it
        # runs beside the classifiers).
        chain = (f"{shlex.quote(py)} -m p2p_desktop.training.backbone --out {shlex.quote(demo)} "
                 f"--minutes {args.minutes} && {shlex.quote(py)} -m p2p_desktop.training.appearance "
                 f"--base {shlex.quote(demo)} --out {shlex.quote(demo)} --minutes {args.appearance_minutes} "
                 f"&& {shlex.quote(py)} -m p2p_desktop.training.appearance_eval {shlex.quote(demo)} --write-card")
        procs.append(("backbone", subprocess.Popen(["/bin/sh", "-c", chain], cwd=ROOT)))
    if "classifiers" not in skip:
        budget = ["--minutes", str(args.classifier_minutes)] if args.classifier_minutes is not None else []
        procs.append(("classifiers", subprocess.Popen(
            [py, "-m", "p2p_desktop.training.classifiers", "--out", str(args.out), *budget], cwd=ROOT)))
    failed = [name for name, proc in procs if proc.wait() != 0]
    if "plugin" not in skip and not failed:
        if subprocess.call([py, str(ROOT / "plugins" / "phantom_cnn" / "train.py")], cwd=ROOT) != 0:
            failed.append("plugin")
    if "samples" not in skip and not failed:
        if subprocess.call([py, str(ROOT / "scripts" / "make_samples.py")], cwd=ROOT) != 0:
            failed.append("samples")
    print(f"demo bundle: {'FAILED: ' + ', '.join(failed) if failed else 'done'} in {(time.time() - t0) / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
