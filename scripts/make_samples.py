#!/usr/bin/env python
"""Write the sample studies shown on the app's first start (resources/samples).

Synthetic phantoms from seeds no demo model was trained on: three Ultrasound Image Storage
DICOM files (one per class) and a small BUSI-layout PNG dataset (two per class, with masks).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = 9_000_000


def main() -> int:
    from p2p_desktop.phantoms import write_dicom_dataset, write_png_dataset

    out = ROOT / "resources" / "samples"
    for sub in ("dicom", "busi"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    dcm = write_dicom_dataset(out / "dicom", n=3, seed=SEED, size=256)
    png = write_png_dataset(out / "busi", n=6, seed=SEED + 10, size=256)
    print(f"wrote {len(dcm)} DICOM and {len(png)} PNG samples to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
