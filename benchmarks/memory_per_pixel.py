#!/usr/bin/env python
"""Peak working memory of the whole pipeline per pixel of the frame: the figure behind
:data:`p2p_desktop.io.memory.BYTES_PER_PIXEL`.

    python benchmarks/memory_per_pixel.py [--sizes 1024,2048,3072] [--attacks fgsm,pgd,p2p]
                                          [--classifier demo-squeezenet1_1] [--json FILE]

For each attack and frame side, one child process runs ``p2p-desktop attack`` on a generated
one-frame RLE Lossless DICOM of ``side`` x ``side`` (8-bit, as a PACS sends a large ultrasound
frame) with the DICOM export (``--export-dicom``), i.e. decode, classify, attack, metrics, PNG,
DICOM and JSON outputs. The child reports its own peak resident memory (``VmHWM``, not the
forking parent's) and its resident memory when the decode budget is checked (just before the
frame is decoded: what the cgroup already counts as used then).

Printed per run: the peak, the memory at the budget check, the peak above it and that divided
by the pixel count; then per attack the slope between the smallest and the largest side (bytes
per pixel: what grows with the frame) and the intercept (what does not: the classifier, the
backbone, torch's buffers, loaded after the check). ``BYTES_PER_PIXEL`` and ``FIXED_BYTES`` of
:mod:`p2p_desktop.io.memory` are the largest of these with a margin.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

_CHILD = r"""
import sys
from p2p_desktop.io import memory

def _rss():
    with open('/proc/self/status') as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith('VmRSS:'))

_seen = []
_orig = memory.check_decode_budget
def _probe(w, h):
    _seen.append(_rss())
    return None  # measure: never refuse
memory.check_decode_budget = _probe
from p2p_desktop.cli.main import main
code = main(sys.argv[1:])
hwm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:'))
print('MEASURE', code, hwm, _seen[0] if _seen else 0, flush=True)
"""


def rle_dicom(path: Path, side: int) -> Path:
    """A one-frame 8-bit RLE Lossless DICOM of ``side`` x ``side`` zeros (a few hundred KB)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless, SecondaryCaptureImageStorage, generate_uid

    n = side * side
    if n % 128:
        raise SystemExit(f"side {side}: side * side must be a multiple of 128")
    segment = b"\x81\x00" * (n // 128)  # PackBits: repeat the next byte 128 times
    frame = struct.pack("<16L", 1, 64, *([0] * 14)) + segment
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName = "BENCH", "Bench^Memory"
    ds.Modality = "US"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def measure(attack: str, side: int, classifier: str, tmp: Path) -> dict:
    """One child run: its peak and its resident memory at the budget check (bytes)."""
    (tmp / "in").mkdir(exist_ok=True)
    src = rle_dicom(tmp / "in" / f"{side}.dcm", side)
    out = tmp / "out" / f"{attack}-{side}"
    argv = ["attack", str(src), "--attack", attack, "--classifier", classifier, "--out", str(out),
            "--export-dicom", "--audit-log", str(tmp / "audit.jsonl")]
    if attack != "fgsm":
        argv += ["--steps", "3"]  # the peak does not grow with the iterations
    if attack == "p2p":
        argv += ["--backbone", "demo"]
    env = {**os.environ, "P2P_DESKTOP_HOME": str(tmp / "home"), "PYTHONPATH": str(REPO)}
    env.pop("P2P_DESKTOP_MEMORY_BUDGET", None)
    proc = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("MEASURE")), None)
    if line is None or proc.returncode != 0 or line.split()[1] != "0":
        raise SystemExit(f"{attack} at {side}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
    _tag, code, hwm, at_check = line.split()
    px = side * side
    return {"attack": attack, "side": side, "pixels": px, "exit": int(code), "peak": int(hwm),
            "at_check": int(at_check), "above_check": int(hwm) - int(at_check),
            "per_pixel": (int(hwm) - int(at_check)) / px}


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print the table and the per-attack figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1024,2048,3072")
    p.add_argument("--attacks", default="fgsm,pgd,p2p")
    p.add_argument("--classifier", default="demo-squeezenet1_1")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rows = []
    with tempfile.TemporaryDirectory(prefix="mem-per-px-") as d:
        for attack in args.attacks.split(","):
            for side in sizes:
                r = measure(attack, side, args.classifier, Path(d))
                rows.append(r)
                print(f"{attack:<6} {side:>5}² peak {r['peak'] / 2**20:7.0f} MiB, at the check "
                      f"{r['at_check'] / 2**20:5.0f} MiB, above it {r['above_check'] / 2**20:7.0f} MiB "
                      f"= {r['per_pixel']:6.1f} B/px", flush=True)
    print()
    slopes, fixed = [], []
    for attack in args.attacks.split(","):
        rs = [r for r in rows if r["attack"] == attack]
        lo, hi = rs[0], rs[-1]
        if hi is lo:
            continue
        slope = (hi["above_check"] - lo["above_check"]) / (hi["pixels"] - lo["pixels"])
        intercept = lo["above_check"] - slope * lo["pixels"]
        slopes.append(slope)
        fixed.append(intercept)
        print(f"{attack:<6} {slope:6.1f} bytes per pixel (slope {lo['side']}²..{hi['side']}²), "
              f"fixed {intercept / 2**20:5.0f} MiB above the check")
    if slopes:
        print(f"\nlargest: {max(slopes):.1f} bytes per pixel, {max(fixed) / 2**20:.0f} MiB fixed")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "bytes_per_pixel": max(slopes, default=None),
                                               "fixed_bytes": max(fixed, default=None)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
