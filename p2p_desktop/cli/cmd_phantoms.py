"""``p2p-desktop phantoms --n N --seed S --out DIR [--format {png,dcm}] [--size 256] [--variants KINDS] [--json]``

Writes synthetic breast-ultrasound phantoms in BUSI layout (``benign/``, ``malignant/``,
``normal/``; ``X.png`` or ``X.dcm`` plus ``X_mask.png``) and a JSON/CSV manifest. With
``--variants acquisition,descriptor,class,noise`` also each labelled variant of each phantom
beside it (``X__VARIANT.png`` and the sidecar ``X__VARIANT.json`` with its source, kind and
truth): a validation set for the label-preservation oracle (``p2p-desktop oracle``).
"""

from __future__ import annotations

import sys

from p2p_desktop.cli.common import emit_json, progress_bar

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Register the ``phantoms`` sub-command and its options."""
    p = sub.add_parser("phantoms", help="write synthetic breast-ultrasound phantoms (BUSI layout)",
                       description="Write N synthetic B-mode phantoms (seeds S..S+N-1, classes balanced) "
                                   "with lesion masks and a descriptors manifest.")
    p.add_argument("--n", type=int, required=True, metavar="N", help="number of phantoms")
    p.add_argument("--seed", type=int, required=True, metavar="S", help="first seed")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (existing files are never overwritten)")
    p.add_argument("--format", default="png", choices=["png", "dcm"], help="image format (default png)")
    p.add_argument("--size", type=int, default=256, metavar="PX", help="image side in pixels (default 256)")
    p.add_argument("--variants", metavar="KINDS", default="",
                   help="also write labelled variants beside each phantom: comma-separated acquisition, descriptor, "
                        "class, noise (acquisition and noise keep the label, descriptor and class swaps change it)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args) -> int:
    """Write the synthetic phantom dataset with a progress bar and report what was written; the exit code."""
    from p2p_desktop.phantoms.dataset import write_dataset
    from p2p_desktop.phantoms.variants import parse_kinds

    kinds = parse_kinds(args.variants) if args.variants else ()
    with progress_bar(max(int(args.n), 0), "phantoms", unit="img") as bar:
        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        result = write_dataset(args.out, args.n, args.seed, args.size, args.format, progress=progress,
                               variants=kinds)
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    sys.stderr.write(f"phantoms: wrote {len(result.images)} {args.format} images ({counts}) to {result.out_dir}\n")
    if args.json:
        emit_json({"outputs": result.records, "counts": result.counts,
                   "manifest": [str(p) for p in result.manifests]})
    return 0
