"""Folders of phantoms in BUSI layout: ``benign/``, ``malignant/``, ``normal/``.

Each phantom ``X`` is written as ``<class>/X.png`` (8-bit grey) or ``<class>/X.dcm``, with its
mask ``<class>/X_mask.png`` (0/255), and the run adds a manifest pair
``phantoms_seed<S>_n<N>.json`` / ``.csv`` listing, per phantom, the files, label, seed,
BI-RADS descriptors and prompt (the JSON also holds the sampled parameters).

Phantom ``i`` of a run uses seed ``S + i`` with its label from the seed (balanced thirds).
Existing files are never overwritten: if any target name is taken the run stops before
writing; a failed or cancelled run removes what it wrote.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from p2p_desktop.errors import InputError, OutputError

__all__ = ["DatasetResult", "write_dataset", "write_png_dataset", "write_dicom_dataset",
           "phantom_name", "manifest_name", "FORMATS", "MAX_PHANTOMS"]

FORMATS = ("png", "dcm")
MAX_PHANTOMS = 1_000_000


@dataclass
class DatasetResult:
    """What one run wrote."""

    out_dir: Path
    images: list[Path] = field(default_factory=list)
    masks: list[Path] = field(default_factory=list)
    manifests: list[Path] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)  # {"kind", "path", "sha256"} per file


def phantom_name(seed: int, label: str) -> str:
    """File stem of the phantom with ``seed`` (BUSI-like: ``benign_000042``)."""
    return f"{label}_{seed:06d}"


def manifest_name(seed: int, n: int) -> str:
    """The file stem of the manifests of ``n`` phantoms from ``seed``."""
    return f"phantoms_seed{seed}_n{n}"


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _grey8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def _check_args(n, seed, size, fmt) -> None:
    from p2p_desktop.phantoms import _check_seed, _check_size

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= int(n) <= MAX_PHANTOMS:
        raise InputError(f"number of phantoms must be an integer in 1..{MAX_PHANTOMS}, got {n!r}")
    _check_seed(seed)
    _check_seed(int(seed) + int(n) - 1)
    _check_size(size)
    if fmt not in FORMATS:
        raise InputError(f"unknown phantom format {fmt!r}; expected one of {', '.join(FORMATS)}")


def write_dataset(out_dir: str | Path, n: int, seed: int, size: int = 256, fmt: str = "png", *,
                  progress: Callable[[int, int], None] | None = None, cancel=None,
                  variants: tuple[str, ...] | str = ()) -> DatasetResult:
    """Write ``n`` phantoms (seeds ``seed .. seed+n-1``) in BUSI layout under ``out_dir``.

    ``fmt`` is "png" or "dcm". ``progress(done, total)`` is called after each phantom;
    ``cancel`` (a :class:`~p2p_desktop.cancel.CancelToken`) is checked before each file.
    ``variants`` (kinds of :mod:`p2p_desktop.phantoms.variants`: acquisition, descriptor, class,
    noise) also writes each labelled variant of each phantom beside it, ``X__VARIANT.png`` with
    the sidecar ``X__VARIANT.json`` = ``{"source": "X.png", "kind", "truth", ...}``: a validation
    set for the label-preservation oracle (not a dataset to evaluate classifiers on).
    """
    from p2p_desktop.io.outputs import OutputSet
    from p2p_desktop.phantoms import CLASSES, generate_phantom

    _check_args(n, seed, size, fmt)
    from p2p_desktop.phantoms.variants import parse_kinds, variant_names

    kinds = parse_kinds(variants) if variants else ()
    n, seed, size = int(n), int(seed), int(size)
    seeds = range(seed, seed + n)
    labels = [CLASSES[s % 3] for s in seeds]
    out = Path(out_dir).expanduser()

    # 1. Every target name must be free before anything is written.
    stem = manifest_name(seed, n)
    targets = [out / f"{stem}.json", out / f"{stem}.csv"]
    for s, lab in zip(seeds, labels):
        name = phantom_name(s, lab)
        targets += [out / lab / f"{name}.{fmt}", out / lab / f"{name}_mask.png"]
        for v in variant_names(s, lab, kinds):
            targets += [out / lab / f"{name}__{v}.png", out / lab / f"{name}__{v}.json"]
    taken = [t for t in targets if t.exists() or t.is_symlink()]
    if taken:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise OutputError(f"{taken[0]} already exists{more}; phantoms never overwrite files: "
                          "choose an empty folder or another --seed")

    result = DatasetResult(out_dir=out)
    created_dirs = [d for d in [out, *(out / c for c in CLASSES)] if not d.exists()]
    try:
        with OutputSet(out, cancel=cancel) as outs:
            rows = []
            for i, (s, lab) in enumerate(zip(seeds, labels)):
                ph = generate_phantom(s, lab, size)
                name = phantom_name(s, lab)
                if fmt == "png":
                    data, kind = _png_bytes(_grey8(ph.image)), "png"
                else:
                    from p2p_desktop.phantoms.dicom_writer import phantom_dicom_bytes

                    data, kind = phantom_dicom_bytes(ph), "dicom"
                img = outs.write_bytes(f"{lab}/{name}.{fmt}", data, kind=kind)
                msk = outs.write_bytes(f"{lab}/{name}_mask.png", _png_bytes(ph.mask.astype(np.uint8) * 255),
                                       kind="mask")
                result.images.append(img)
                result.masks.append(msk)
                rows.append({"image": str(img.relative_to(outs.out_dir)), "mask": str(msk.relative_to(outs.out_dir)),
                             "label": lab, "seed": s, "size": size, "descriptors": list(ph.descriptors),
                             "prompt": ph.prompt, "params": ph.params})
                if kinds:
                    rows[-1]["variants"] = _write_variants(outs, s, lab, size, name, img.name, kinds)
                if progress is not None:
                    progress(i + 1, n)
            counts = Counter(labels)
            result.counts = {c: counts.get(c, 0) for c in CLASSES}
            manifest = {"generator": "p2p-desktop phantoms", "format": fmt, "seed": seed, "n": n,
                        "size": size, "counts": result.counts, "phantoms": rows}
            result.manifests.append(outs.write_bytes(
                f"{stem}.json", (json.dumps(manifest, indent=1) + "\n").encode("utf-8"), kind="manifest"))
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(["image", "mask", "label", "seed", "descriptors", "prompt"])
            for r in rows:
                writer.writerow([r["image"], r["mask"], r["label"], r["seed"], "; ".join(r["descriptors"]),
                                 r["prompt"]])
            result.manifests.append(outs.write_bytes(f"{stem}.csv", buf.getvalue().encode("utf-8"), kind="manifest"))
            result.records = list(outs.records)
    except BaseException:
        for d in reversed(created_dirs):  # folders this run made, if left empty
            try:
                d.rmdir()
            except OSError:
                pass
        raise
    return result


def _write_variants(outs, seed: int, label: str, size: int, name: str, source: str, kinds) -> list[dict]:
    """Each variant of one phantom as ``name__VARIANT.png`` + its sidecar JSON; their manifest rows."""
    from p2p_desktop.phantoms.variants import make_variants

    rows = []
    for v in make_variants(seed, label, size, kinds):
        png = outs.write_bytes(f"{label}/{name}__{v.name}.png", _png_bytes(_grey8(v.image)), kind="variant")
        side = {"source": source, "kind": v.kind, "truth": v.truth, "variant": v.name,
                "phantom": {"seed": seed, "label": label, "size": size}, "detail": v.detail}
        outs.write_bytes(f"{label}/{name}__{v.name}.json", (json.dumps(side, indent=1) + "\n").encode("utf-8"),
                         kind="variant-sidecar")
        rows.append({"image": str(png.relative_to(outs.out_dir)), "kind": v.kind, "truth": v.truth})
    return rows


def write_png_dataset(out_dir: str | Path, n: int, seed: int, size: int = 256) -> list[Path]:
    """Write ``n`` phantoms as PNG + mask PNG in BUSI layout; returns the image paths."""
    return write_dataset(out_dir, n, seed, size, "png").images


def write_dicom_dataset(out_dir: str | Path, n: int, seed: int, size: int = 256) -> list[Path]:
    """Write ``n`` phantoms as US DICOM files (+ mask PNGs) in BUSI layout; returns the DICOM paths."""
    return write_dataset(out_dir, n, seed, size, "dcm").images
