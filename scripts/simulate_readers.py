#!/usr/bin/env python3
"""SIMULATED readers for a reader study (a demonstration and a test aid, not a result).

Reads the KEY (which real readers never see) and writes one answers CSV per simulated reader
(``case,altered,confidence,finding,birads``) in that reader's order, for
``p2p-desktop reader-study import``. Each simulated reader spots an altered image with
probability ``--detect`` (0.5 = the perturbation is imperceptible) and names the true finding
with probability ``--finding-original`` on originals and ``--finding-adversarial`` on
adversarial images.

    python scripts/simulate_readers.py STUDY KEY.json --readers 3 --out answers/ --seed 1
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

FINDINGS = ("benign", "malignant", "normal")


def simulate(study: Path, key: Path, out: Path, *, readers: int = 3, seed: int = 0, detect: float = 0.55,
             finding_original: float = 0.85, finding_adversarial: float = 0.75) -> list[Path]:
    """Write ``readers`` answers CSVs into ``out``; return their paths."""
    meta = json.loads((study / "study.json").read_text(encoding="utf-8"))
    truth = {c["case"]: c for c in json.loads(key.read_text(encoding="utf-8"))["cases"]}
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in range(readers):
        order = meta["orders"][r % len(meta["orders"])]
        path = out / f"simulated-reader-{r + 1:02d}.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["case", "altered", "confidence", "finding", "birads"])
            for case in order:
                k = truth[case]
                right = rng.random() < detect
                if meta["design"] == "pair":
                    other = "B" if k["altered_side"] == "A" else "A"
                    altered = k["altered_side"] if right else other
                else:
                    altered = "yes" if (bool(k["altered"]) == right) else "no"
                conf = rng.randint(1, 5)  # confidence unrelated to being right
                p = finding_adversarial if k["altered"] and meta["design"] == "single" else finding_original
                finding = k["truth"] if (k["truth"] in FINDINGS and rng.random() < p) else rng.choice(FINDINGS)
                birads = {"normal": 1, "benign": 3, "malignant": 5}[finding]
                w.writerow([case, altered, conf, finding, birads])
        paths.append(path)
    return paths


def main() -> None:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", type=Path)
    p.add_argument("key", type=Path)
    p.add_argument("--readers", type=int, default=3)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--detect", type=float, default=0.55)
    p.add_argument("--finding-original", type=float, default=0.85)
    p.add_argument("--finding-adversarial", type=float, default=0.75)
    a = p.parse_args()
    for path in simulate(a.study, a.key, a.out, readers=a.readers, seed=a.seed, detect=a.detect,
                         finding_original=a.finding_original, finding_adversarial=a.finding_adversarial):
        print(path)


if __name__ == "__main__":
    main()
