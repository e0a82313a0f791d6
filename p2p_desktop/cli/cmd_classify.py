"""``p2p-desktop classify INPUT... --classifier MODEL [--frame N] [--json]``"""

from __future__ import annotations

import sys
from pathlib import Path

from p2p_desktop.cli.common import add_device_arg, emit_json, progress_bar, split_list

__all__ = ["add_parser", "run", "add_classifier_args", "classifier_from_args"]


def add_classifier_args(p) -> None:
    """Add the options that choose a classifier (``--classifier`` and, for bare weights, its details)."""
    p.add_argument("--classifier", required=True, metavar="MODEL",
                   help="registered name (e.g. demo-squeezenet1_1), model card .json, or weights file")
    p.add_argument("--arch", help="architecture of a bare weights file (e.g. squeezenet1_1)")
    p.add_argument("--classes", help="comma-separated class names of a bare weights file")
    p.add_argument("--input-size", type=int, help="input size of a bare weights file (default 224)")


def classifier_from_args(args, device: str):
    """Load the classifier that the :func:`add_classifier_args` options name, on ``device``."""
    from p2p_desktop.models.classifier import load_classifier

    return load_classifier(args.classifier, arch=args.arch, classes=split_list(args.classes) or None,
                           input_size=args.input_size, device=device)


def add_parser(sub) -> None:
    """Register the ``classify`` sub-command and its options."""
    p = sub.add_parser("classify", help="classify images, DICOM files or folders")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="DICOM/PNG/JPEG/BMP/TIFF file or folder")
    add_classifier_args(p)
    p.add_argument("--frame", type=int, help="frame of a multi-frame (cine) DICOM (default 0)")
    add_device_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run)


def _expand(inputs: list[str]) -> tuple[list[Path], list[dict]]:
    """Files to classify, plus unreadable entries of folders (reported, not fatal)."""
    from p2p_desktop.errors import InputError
    from p2p_desktop.io import scan_folder

    files: list[Path] = []
    skipped: list[dict] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            scan = scan_folder(path)
            files += [e.path for e in scan.entries]
            skipped += [{"input": str(e.path), "error": e.reason} for e in scan.skipped]
        elif path.exists():
            files.append(path)
        else:
            raise InputError(f"{item}: no such file or folder")
    return files, skipped


def run(args) -> int:
    """Classify the given images, DICOM files and folders and print the predictions; the exit code."""
    from p2p_desktop.device import resolve_device
    from p2p_desktop.errors import InputError
    from p2p_desktop.io import load_study

    device = resolve_device(args.device)
    files, skipped = _expand(args.inputs)
    if not files:
        raise InputError("no readable image found in the given input(s)")
    clf = classifier_from_args(args, device)
    results = []
    single = len(args.inputs) == 1 and len(files) == 1 and not Path(args.inputs[0]).is_dir()
    with progress_bar(len(files), "classify", unit="img") as bar:
        for f in files:
            try:
                study = load_study(f, frame=args.frame)
            except InputError as exc:
                if single:
                    raise
                skipped.append({"input": str(f), "error": str(exc)})
                bar.update(1)
                continue
            label, probs = clf.predict(study.image)
            results.append({"input": str(f), "label": label, "probs": probs,
                            **({"frame": study.frame_index} if study.n_frames > 1 else {})})
            bar.update(1)
    if args.json:
        out = {"results": results, "classifier": clf.identity()}
        if skipped:
            out["skipped"] = skipped
        emit_json(out)
    else:
        for r in results:
            probs = "  ".join(f"{c}={p:.3f}" for c, p in r["probs"].items())
            print(f"{r['input']}: {r['label']}  ({probs})")
        for s in skipped:
            print(f"{s['input']}: skipped: {s['error']}", file=sys.stderr)
    return 0
