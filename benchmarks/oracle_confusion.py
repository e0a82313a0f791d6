"""The label-preservation oracle's confusion table on labelled phantom variants.

For ``--n`` phantoms from ``--seed`` (labels balanced, ``CLASSES[seed % 3]``) it makes every
variant of :mod:`p2p_desktop.phantoms.variants` (acquisition re-renderings and bounded noise:
truly kept; descriptor and class swaps: truly semantic), quantises each to 8 bits as a PNG
holds it, asks :func:`p2p_desktop.phantoms.oracle.judge`, and prints the confusion table per
kind and in total (Markdown), with the misjudged variants listed.

    PYTHONPATH=. python benchmarks/oracle_confusion.py --n 30 --seed 7000000 --size 128 [--json FILE]

Use seeds no training used (resources/models/*/card.json: 0..11999, 500000.., 1000000..,
2000000.., tests 3000000..); the README's table uses 7,000,000 onwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path


def measure(n: int, seed: int, size: int, kinds=None) -> dict:
    """{"rows": [...], "table": {kind: {"kept": k, "semantic": s}}, ...} for the variants of n phantoms."""
    import numpy as np

    from p2p_desktop.phantoms import CLASSES, generate_phantom
    from p2p_desktop.phantoms.oracle import PhantomRecord, judge
    from p2p_desktop.phantoms.variants import KINDS, make_variants

    q8 = lambda a: np.rint(np.clip(np.asarray(a, np.float64), 0, 1) * 255.0) / 255.0  # noqa: E731
    rows = []
    for s in range(seed, seed + n):
        label = CLASSES[s % 3]
        rec = PhantomRecord(s, label, size)
        x = q8(generate_phantom(s, label, size).image)
        for v in make_variants(s, label, size, kinds or KINDS):
            verdict = judge(rec, x, q8(v.image))
            rows.append({"seed": s, "label": label, "variant": v.name, "kind": v.kind, "truth": v.truth,
                         "judged": "kept" if verdict.label_kept else "semantic", "reason": verdict.reason,
                         "detail": v.detail})
    table: dict[str, Counter] = {}
    for r in rows:
        table.setdefault(r["kind"], Counter())[r["judged"]] += 1
    return {"n": n, "seed": seed, "size": size, "rows": rows, "table": {k: dict(v) for k, v in table.items()}}


def render(doc: dict) -> str:
    """The confusion table as Markdown."""
    lines = ["| Variant kind | Truth | n | judged kept | judged semantic | correct |", "|---|---|---|---|---|---|"]
    totals = {"kept": [0, 0], "semantic": [0, 0]}
    truth = {"acquisition": "kept", "noise": "kept", "descriptor": "semantic", "class": "semantic"}
    for kind in ("acquisition", "noise", "descriptor", "class"):
        c = doc["table"].get(kind)
        if not c:
            continue
        k, s = c.get("kept", 0), c.get("semantic", 0)
        right = k if truth[kind] == "kept" else s
        totals[truth[kind]][0] += right
        totals[truth[kind]][1] += k + s
        lines.append(f"| {kind} | {truth[kind]} | {k + s} | {k} | {s} | {right / (k + s):.3f} |")
    for t, (right, tot) in totals.items():
        if tot:
            lines.append(f"| **all {t}** | {t} | {tot} | {right if t == 'kept' else tot - right} | "
                         f"{tot - right if t == 'kept' else right} | **{right / tot:.3f}** |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--seed", type=int, default=7_000_000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--kinds", default="acquisition,descriptor,class,noise")
    p.add_argument("--json", type=Path, help="also write every row as JSON here")
    args = p.parse_args(argv)
    t0 = time.time()
    doc = measure(args.n, args.seed, args.size, args.kinds.split(","))
    doc["seconds"] = round(time.time() - t0, 1)
    print(render(doc))
    wrong = [r for r in doc["rows"] if r["judged"] != r["truth"]]
    print(f"\n{len(doc['rows'])} variants of {args.n} phantoms (seeds {args.seed}..{args.seed + args.n - 1}, "
          f"{args.size} px) in {doc['seconds']} s; {len(wrong)} misjudged:")
    for r in wrong:
        print(f"  {r['label']} {r['seed']} {r['variant']}: truth {r['truth']}, judged {r['judged']} ({r['reason']})")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
