"""``p2p-desktop oracle SOURCE CANDIDATE [--json]``

The phantom label-preservation oracle (:mod:`p2p_desktop.phantoms.oracle`) on one image:
did ``CANDIDATE`` (an adversarial image, or a variant written by ``phantoms --variants``) keep
the diagnosis of the phantom ``SOURCE`` (a PNG listed in its phantom manifest, or a phantom
DICOM)? Prints the verdict and the quantities it measured; with a sidecar ``CANDIDATE.json``
beside the candidate (as ``phantoms --variants`` writes) also its truth and whether the oracle
agrees. Bad input (no generator record, unreadable or mis-sized image) exits 2 with one line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from p2p_desktop.cli.common import emit_json

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Register the ``oracle`` sub-command and its options."""
    p = sub.add_parser("oracle", help="did an image keep a phantom's diagnosis? (label-preservation oracle)",
                       description="Judge CANDIDATE against the phantom SOURCE with the label-preservation oracle: "
                                   "label kept (an adversarial example) or semantic change (the finding redrawn).")
    p.add_argument("source", metavar="SOURCE",
                   help="the phantom: a PNG in a phantom manifest's dataset, or a phantom DICOM")
    p.add_argument("candidate", metavar="CANDIDATE", help="the image to judge (same size as the phantom)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run)


def _sidecar(path: Path) -> dict | None:
    side = path.with_suffix(".json")
    if not side.is_file():
        return None
    try:
        doc = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("truth") in ("kept", "semantic") else None


def run(args) -> int:
    """Judge one candidate; 0 with a verdict, 2 (one line) when the oracle cannot judge it."""
    import numpy as np

    from p2p_desktop.errors import InputError
    from p2p_desktop.io import load_study
    from p2p_desktop.phantoms.oracle import NO_RECORD, judge, phantom_record

    source, candidate = Path(args.source), Path(args.candidate)
    for what, path in (("source", source), ("candidate", candidate)):
        if not path.is_file():
            raise InputError(f"{what} {path} is not a file")
    record = phantom_record(source)
    if record is None:
        raise InputError(f"{source.name}: {NO_RECORD}")
    x = np.asarray(load_study(source, attach_mask=False).image)
    a = np.asarray(load_study(candidate, attach_mask=False).image)
    verdict = judge(record, x, a)
    if verdict.verdict is None:
        raise InputError(f"{candidate.name}: not judged: {verdict.reason}")
    doc = {"source": str(source), "candidate": str(candidate), "label_kept": bool(verdict.label_kept),
           "verdict": verdict.verdict, "reason": verdict.reason, "figures": verdict.figures}
    side = _sidecar(candidate)
    if side is not None:
        doc["sidecar"] = side
        doc["truth"] = side["truth"]
        doc["agrees"] = (side["truth"] == "kept") == bool(verdict.label_kept)
    if args.json:
        emit_json(doc)
    else:
        print(f"{verdict.verdict}: {verdict.reason}")
        if side is not None:
            print(f"truth ({side.get('kind')} variant): {side['truth']}; the oracle "
                  f"{'agrees' if doc['agrees'] else 'disagrees'}")
    sys.stderr.flush()
    return 0
