"""FID of a batch evaluation (glue: the distance itself is :mod:`p2p_desktop.metrics.fid`) and
the paper's metric protocol (SSIM and LPIPS recomputed from the written images, FID per class).

Both read the adversarial images the loop wrote (:func:`~p2p_desktop.jobs.evaluate.files.adversarial_path`)
and their originals, and add a note for every value they cannot compute.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from p2p_desktop.cancel import CancelToken
from p2p_desktop.jobs.evaluate.files import ADVERSARIAL_DIR, adversarial_path
from p2p_desktop.jobs.evaluate.summary import PAPER_KEYS

__all__ = ["compute_fid", "paper_protocol"]


def compute_fid(rows, dataset_root: Path, out_dir: Path, classifiers, attacks, device: str, notes: list[str],
                 cancel: CancelToken, progress: Callable[[str], None]) -> dict[tuple[str, str], tuple]:
    """{(classifier, attack): (FID or None, pairs used)}; notes say why a value is missing."""
    import numpy as np

    from p2p_desktop.io import load_study
    from p2p_desktop.metrics import fid as fidlib

    result: dict[tuple[str, str], tuple[float | None, int]] = {}
    status = fidlib.fid_status()
    if not status.available:
        notes.append(status.note)
        return result
    if status.note:
        notes.append(status.note)
    extractor = fidlib.load_inception(device=device)
    original_features: dict[str, Any] = {}
    too_few = []
    for c in classifiers:
        for a in attacks:
            wins = [r for r in rows if r["classifier"] == c and r["attack"] == a and r.get("success") is True]
            if len(wins) < 2:
                if wins:
                    too_few.append(f"{c} × {a}")
                result[(c, a)] = (None, len(wins))
                continue
            cancel.check()
            progress(f"FID {c} × {a} ({len(wins)} pairs)")
            paths = [adversarial_path(out_dir, c, a, r["image"]) for r in wins]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                notes.append(f"FID {c} × {a} not computed: {len(missing)} adversarial image(s) are missing "
                             f"from {out_dir / ADVERSARIAL_DIR}, e.g. {missing[0]}")
                result[(c, a)] = (None, 0)
                continue
            new = [r["image"] for r in wins if r["image"] not in original_features]
            if new:
                feats = extractor([load_study(dataset_root / i, attach_mask=False).image for i in new])
                original_features.update(zip(new, feats))
            originals = np.stack([original_features[r["image"]] for r in wins])
            value = fidlib.fid_from_features(originals, extractor([load_study(p, attach_mask=False).image
                                                                   for p in paths]))
            result[(c, a)] = (value, len(wins))
    if too_few:
        notes.append(f"FID needs at least 2 successful examples; not computed for {', '.join(too_few)}")
    notes.append(fidlib.SMALL_SAMPLE_NOTE)
    return result


def paper_protocol(rows, root: Path, out: Path, classifiers, attacks, items, image_ids, device: str,
                    notes: list[str], cancel: CancelToken, progress: Callable[[str], None]):
    """Rows with ``ssim``/``lpips`` replaced by the paper's protocol (from the written adversarial images
    and their originals), and FID per class averaged over classes."""
    from p2p_desktop.io import load_study
    from p2p_desktop.metrics import paper_metrics

    out_rows, lp_notes = [], set()
    for r in rows:
        r = dict(r)
        if r.get("success") is True:
            cancel.check()
            adv_file = adversarial_path(out, r["classifier"], r["attack"], r["image"])
            if adv_file.is_file():
                m, n = paper_metrics(load_study(root / r["image"], attach_mask=False).image,
                                     load_study(adv_file, attach_mask=False).image)
                r.update({k: m[k] for k in PAPER_KEYS})
                lp_notes.update(n)
            else:
                r.update(dict.fromkeys(PAPER_KEYS))
                notes.append(f"paper metrics of {r['image']} ({r['classifier']} × {r['attack']}) not computed: the "
                             f"adversarial image {adv_file} is missing")
        out_rows.append(r)
    fid = _fid_per_class(out_rows, root, out, classifiers, attacks, dict(zip(image_ids, (i.label for i in items))),
                         device, notes, cancel, progress)
    return out_rows, fid


def _fid_per_class(rows, root: Path, out: Path, classifiers, attacks, labels: Mapping[str, str], device: str,
                   notes: list[str], cancel: CancelToken, progress: Callable[[str], None]):
    """{(classifier, attack): (mean over classes of FID(all originals of the class, its adversarials), pairs)}."""
    import numpy as np

    from p2p_desktop.io import load_study
    from p2p_desktop.metrics import fid as fidlib

    status = fidlib.fid_status()
    if not status.available:
        notes.append(status.note)
        return {}
    extractor = fidlib.load_inception(device=device)
    by_class: dict[str, list[str]] = defaultdict(list)
    for image, label in labels.items():
        by_class[label].append(image)
    cache: dict[str, Any] = {}

    def features(images):
        new = [i for i in images if i not in cache]
        if new:
            cache.update(zip(new, extractor([load_study(root / i, attach_mask=False).image for i in new])))
        return np.stack([cache[i] for i in images])

    result, skipped = {}, []
    for c in classifiers:
        for a in attacks:
            values, pairs = [], 0
            for label, images in sorted(by_class.items()):
                wins = [r for r in rows if r["classifier"] == c and r["attack"] == a and r.get("success") is True
                        and labels.get(r["image"]) == label]
                if len(wins) < 2 or len(images) < 2:
                    if wins:
                        skipped.append(f"{c} × {a} × {label}")
                    continue
                cancel.check()
                progress(f"FID {c} × {a} × {label}")
                adv = extractor([load_study(adversarial_path(out, c, a, r["image"]), attach_mask=False).image
                                 for r in wins])
                values.append(fidlib.fid_from_features(features(images), adv))
                pairs += len(wins)
            result[(c, a)] = (float(np.mean(values)) if values else None, pairs)
    if skipped:
        notes.append("FID per class needs at least 2 successful examples of the class; left out: " + ", ".join(skipped))
    notes.append(fidlib.SMALL_SAMPLE_NOTE)
    return result
