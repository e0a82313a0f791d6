"""``reader-study make``: a blinded study folder and its key, from evaluate folders or attack outputs.

Layout of the study folder (everything here may be handed to readers)::

    STUDY/study.json                   design, case numbers and files, one shuffled order per reader
    STUDY/cases/<case>.dcm             single design: one image per case
    STUDY/cases/<case>/A.dcm, B.dcm    pair design: original and adversarial in random order
    STUDY/answers-template.csv         case,altered,confidence,finding (cases by number)
    STUDY/answers-template-reader-NN.csv   the same in reader NN's order
    STUDY/answers/<reader>/NNNNNN.json  answers, one new file per save (never overwritten)

The key (``KEY.json``, never inside the study folder) alone says which image is altered.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p_desktop.errors import InputError, OutputError
from p2p_desktop.readerstudy.blind import PIXEL_KEYS, BlindingError, blinded_dataset, check_blinded, read_pixels

__all__ = ["Source", "collect_sources", "make_study", "load_study", "DESIGNS", "STUDY_FILE", "KEY_FORMAT"]

DESIGNS = ("single", "pair")
STUDY_FILE = "study.json"
KEY_FORMAT = 1
_FIXED_MTIME = 946684800  # 2000-01-01: every case file gets the same time stamps


@dataclass(frozen=True)
class Source:
    """One adversarial image and the original it was made from."""

    original: Path
    adversarial: Path
    attack: str
    classifier: str
    truth: str | None
    name: str  # the source's name in the key (dataset-relative path or file name)


def _truthy(text: str) -> bool:
    return str(text).strip().lower() in ("true", "1", "yes")


def _from_evaluate(folder: Path) -> list[Source]:
    from p2p_desktop.io.outputs import safe_name

    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    dataset = Path(summary["dataset"])
    per_image = folder / summary.get("per_image", "per_image.csv")
    out = []
    with open(per_image, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if not _truthy(row.get("success", "")):
                continue
            rel, clf, attack = row["image"], row["classifier"], row["attack"]
            base = Path(safe_name(clf)) / safe_name(attack) / rel
            dcm = (folder / "dicom" / base).with_suffix(".dcm")
            # evaluate's naming (jobs/evaluate/files.adversarial_path): a PNG keeps its name, others get ".png"
            png_name = base.name if base.suffix.lower() == ".png" else base.name + ".png"
            png = folder / summary.get("adversarial_dir", "adversarial") / base.parent / png_name
            adv = dcm if dcm.is_file() else png
            if not adv.is_file():
                raise InputError(f"{folder}: the adversarial image of {rel} ({clf}, {attack}) is missing")
            orig = dataset / rel
            if not orig.is_file():
                raise InputError(f"{folder}: the original {orig} is missing (the dataset moved?)")
            out.append(Source(orig, adv, attack, clf, row.get("label") or None, rel))
    return out


def _from_attack(folder: Path) -> list[Source]:
    out = []
    for res in sorted(folder.glob("*_result.json")):
        data = json.loads(res.read_text(encoding="utf-8"))
        if not data.get("success"):
            continue
        stem = res.name[: -len("_result.json")]
        adv = next((p for p in (folder / f"{stem}_adv.dcm", folder / f"{stem}_adv.png") if p.is_file()), None)
        inp = Path(data["input"])
        orig = next((p for p in (inp, folder / inp, folder / inp.name) if p.is_file()), None)
        if adv is None or orig is None:
            raise InputError(f"{res}: its adversarial image or its input {inp} is missing")
        out.append(Source(orig.resolve(), adv, data["attack"], data["classifier"]["name"],
                          data.get("true_label"), inp.name))
    return out


def collect_sources(paths: list[str | os.PathLike]) -> list[Source]:
    """The successful adversarial images of ``evaluate`` folders (summary.json) and ``attack``
    output folders (``*_result.json``), each with its original."""
    sources: list[Source] = []
    for p in map(Path, paths):
        if (p / "summary.json").is_file():
            sources += _from_evaluate(p)
        elif p.is_dir() and any(p.glob("*_result.json")):
            sources += _from_attack(p)
        else:
            raise InputError(f"{p}: neither an evaluate folder (summary.json) nor attack outputs (*_result.json)")
    if not sources:
        raise InputError("no successful adversarial images in the sources: nothing to read")
    return sources


def _describe(desc: dict[str, Any]) -> str:
    return (f"{desc['Columns']}x{desc['Rows']}, {desc['SamplesPerPixel']} sample(s) "
            f"{desc['PhotometricInterpretation']}, "
            f"{desc['BitsStored']}/{desc['BitsAllocated']} bits, sign {desc['PixelRepresentation']}")


def _refuse_unblinding(sources: list[Source], pixels: dict[Path, tuple[Any, dict]]) -> None:
    """Refuse sources whose own properties would unblind: pixel descriptions that differ
    between an original and its adversarial image or across the study, burned-in text."""
    problems = []
    first = None
    for s in sources:
        o, a = pixels[s.original][1], pixels[s.adversarial][1]
        keys = [k for k in PIXEL_KEYS if o[k] != a[k]]
        if keys:
            problems.append(f"{s.name} ({s.attack}): the adversarial image differs from its original in "
                            f"{', '.join(keys)} ({_describe(a)} vs {_describe(o)})")
        for desc, path in ((o, s.original), (a, s.adversarial)):
            if desc.get("BurnedInAnnotation") == "YES":
                problems.append(f"{path}: BurnedInAnnotation YES; burned-in text could identify or unblind")
            ref = first[1] if first else None
            if ref is None:
                first = (path, desc)
            elif any(desc[k] != ref[k] for k in (*PIXEL_KEYS, "Modality", "SOPClassUID", "LossyImageCompression")):
                problems.append(f"{path}: {_describe(desc)} {desc['Modality']} differs from {first[0]} "
                                f"({_describe(ref)} {ref['Modality']}); mixed image properties would unblind")
    if problems:
        raise BlindingError("refused, the set would unblind: " + problems[0]
                            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


def _choose(sources: list[Source], n: int, design: str, rng: random.Random) -> list[Source]:
    """A random subset of ``sources`` that makes exactly ``n`` cases (an original and its
    adversarial image are two cases in a single-image study, one in a pair study)."""
    if n < 1:
        raise InputError(f"--cases must be at least 1, got {n}")
    pool = list(sources)
    rng.shuffle(pool)
    chosen, originals, count = [], set(), 0
    for s in pool:
        cost = 1 if design == "pair" or s.original in originals else 2
        if count + cost <= n:
            chosen.append(s)
            originals.add(s.original)
            count += cost
        if count == n:
            return chosen
    raise InputError(f"--cases {n}: the sources make at most {count} cases in a {design} study")


def _case_numbers(n: int) -> list[str]:
    numbers: set[str] = set()
    while len(numbers) < n:
        numbers.add(f"{100000 + secrets.randbelow(900000)}")
    out = list(numbers)
    secrets.SystemRandom().shuffle(out)
    return out


def _csv(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode("utf-8")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def make_study(sources: list[Source], out: str | os.PathLike, key: str | os.PathLike, *, design: str = "single",
               readers: int = 1, seed: int | None = None, cases: int | None = None, on_written=None) -> dict[str, Any]:
    """Write the study folder ``out`` and the key file ``key``; return a summary (no key content).

    ``on_written(summary)`` is called after the last write (the audit record); if it fails,
    everything is rolled back. Refuses a key inside the study folder, an existing key (a key is
    never overwritten), a non-empty study folder and any set that would unblind."""
    out, key = Path(out), Path(key)
    if design not in DESIGNS:
        raise InputError(f"--design must be one of {', '.join(DESIGNS)}, got {design!r}")
    if readers < 1:
        raise InputError(f"--readers must be at least 1, got {readers}")
    if _inside(key, out):
        raise OutputError(f"the key {key} lies inside the study folder {out}: it would unblind; put it elsewhere")
    if key.exists():
        raise OutputError(f"{key} exists; a key is never overwritten: name a new file")
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"study folder {out} is not empty; a study is never overwritten: name a new folder")
    for s in sources:
        if _inside(out, s.original.parent) or _inside(out, s.adversarial.parent):
            raise OutputError(f"study folder {out} lies inside a source folder; choose a folder outside it")
    seed = secrets.randbelow(2**63) if seed is None else int(seed)
    rng = random.Random(seed)

    if cases is not None:
        sources = _choose(sources, cases, design, rng)
    pixels = {p: read_pixels(p) for s in sources for p in (s.original, s.adversarial)}
    _refuse_unblinding(sources, pixels)

    # the cases: (files as (role, image path) in display order, key fields)
    plans: list[tuple[list[Path], dict[str, Any]]] = []
    if design == "single":
        seen: set[Path] = set()
        for s in sources:
            if s.original not in seen:
                seen.add(s.original)
                plans.append(([s.original], {"altered": False, "attack": None, "classifier": None,
                                             "source": s.name, "truth": s.truth}))
            plans.append(([s.adversarial], {"altered": True, "attack": s.attack, "classifier": s.classifier,
                                            "source": s.name, "truth": s.truth}))
    else:
        for s in sources:
            adv_first = rng.random() < 0.5
            files = [s.adversarial, s.original] if adv_first else [s.original, s.adversarial]
            plans.append((files, {"altered": True, "altered_side": "A" if adv_first else "B", "attack": s.attack,
                                  "classifier": s.classifier, "source": s.name, "truth": s.truth}))
    numbers = _case_numbers(len(plans))
    # the header template of every image comes from an original, so adversarial copies match it
    template = pixels[sources[0].original][1]
    datasets, cases, key_cases = {}, [], []
    for number, (files, info) in sorted(zip(numbers, plans), key=lambda t: t[0]):
        if design == "single":
            rels = [f"cases/{number}.dcm"]
        else:
            rels = [f"cases/{number}/A.dcm", f"cases/{number}/B.dcm"]
        for rel, src in zip(rels, files):
            datasets[rel] = blinded_dataset(pixels[src][0], template, number)
        cases.append({"case": number, "files": rels})
        entry = {"case": number, "file": rels[0] if design == "single" else f"cases/{number}/", **info}
        if design == "pair":
            entry["files"] = {"A": rels[0], "B": rels[1]}
        key_cases.append(entry)
    problems = check_blinded(datasets)
    if problems:
        raise BlindingError(f"refused, the blinded copies differ: {problems[0]}")

    ids = [c["case"] for c in cases]
    orders = []
    for _ in range(readers):
        order = list(ids)
        rng.shuffle(order)
        orders.append(order)
    study_id = secrets.token_hex(8)
    study = {"format": 1, "study_id": study_id, "design": design, "readers": readers, "cases": cases,
             "orders": orders,
             "questions": {"altered": "A/B: which image is altered" if design == "pair" else "yes/no",
                           "confidence": "1-5", "finding": "benign/malignant/normal", "birads": "1-5 (optional)"}}
    try:
        return _write(out, key, sources, datasets, ids, orders, study,
                      {"format": KEY_FORMAT, "study_id": study_id, "design": design, "seed": seed,
                       "cases": key_cases}, on_written)
    except BaseException:
        for d in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                d.rmdir()  # the empty folders of a rolled-back study
            except OSError:
                pass
        raise


def _write(out: Path, key: Path, sources, datasets, ids, orders, study, key_doc, on_written) -> dict[str, Any]:
    from pydicom.filebase import DicomBytesIO

    from p2p_desktop.io.outputs import OutputSet, atomic_write_bytes

    study_id, design, readers, cases = study["study_id"], study["design"], study["readers"], study["cases"]
    with OutputSet(out, [s.original for s in sources] + [s.adversarial for s in sources]) as outs:
        def write(rel: str, data: bytes) -> Path:
            target = outs.out_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            done = outs.write_bytes(rel, data, "reader-study")
            if done != target:
                raise OutputError(f"{target} was taken meanwhile")
            return done

        for rel, ds in datasets.items():
            buf = DicomBytesIO()
            ds.save_as(buf, enforce_file_format=True)
            os.utime(write(rel, buf.getvalue()), (_FIXED_MTIME, _FIXED_MTIME))
        header = ["case", "altered", "confidence", "finding", "birads"]
        write("answers-template.csv", _csv([header] + [[c] + [""] * 4 for c in ids]))
        for i, order in enumerate(orders, 1):
            write(f"answers-template-reader-{i:02d}.csv", _csv([header] + [[c] + [""] * 4 for c in order]))
        write(STUDY_FILE, (json.dumps(study, indent=2) + "\n").encode("utf-8"))
        key.parent.mkdir(parents=True, exist_ok=True)
        from p2p_desktop.hashing import sha256_bytes

        key_bytes = (json.dumps(key_doc, indent=2) + "\n").encode("utf-8")
        done = atomic_write_bytes(key, key_bytes, private=True,
                                  on_created=lambda p: outs.records.append(
                                      {"kind": "reader-study-key", "path": str(p), "sha256": sha256_bytes(key_bytes)}))
        if done != key:
            raise OutputError(f"{key} was taken meanwhile; a key is never overwritten")
        summary = {"study": str(out), "key": str(key), "study_id": study_id, "design": design, "cases": len(cases),
                   "images": len(datasets), "readers": readers, "files": [str(out / r) for r in datasets],
                   "outputs": list(outs.records)}
        if on_written is not None:
            on_written(summary)  # the audit record: a failure rolls everything back
    return summary


def load_study(study: str | os.PathLike) -> dict[str, Any]:
    """The study's ``study.json`` (design, cases, orders)."""
    path = Path(study) / STUDY_FILE
    if not path.is_file():
        raise InputError(f"{study}: not a reader study (no {STUDY_FILE})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
