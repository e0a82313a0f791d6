"""The adversarial DICOM keeps the source's depth and values (issue 28 items 9 and 10).

Sources are real files: 16-bit PNG written by Pillow, 16-bit and float TIFF written by tifffile,
and pydicom's scanner-written PALETTE COLOR ultrasound file (16-bit LUT entries, maximum
0xFF00). Each goes through the CLI (``attack --export-dicom``) with the bundled demo classifier;
the export is read back with pydicom, DCMTK's ``dcm2pnm`` and dicom3tools' ``dciodvfy``.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.tools import require_tool

DEMO = "demo-squeezenet1_1"
EPS = 8 / 255


def _attack(src: Path, out: Path, eps: float = EPS) -> Path:
    from p2p_desktop.cli.main import main
    from p2p_desktop.models import registry as models

    if models.find(DEMO) is None:
        pytest.skip(f"the demo classifier {DEMO} is not bundled")
    code = main([str(a) for a in ("attack", src, "--attack", "fgsm", "--eps", eps, "--classifier", DEMO,
                                  "--out", out, "--export-dicom")])
    assert code == 0
    (dcm,) = out.glob("*_adv.dcm")
    return dcm


def _dciodvfy_errors(path: Path) -> set[str]:
    require_tool("dciodvfy")
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return {line.strip() for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")}


def _dcmtk_rgb(path: Path, png: Path) -> np.ndarray:
    """The frame as DCMTK renders it (8-bit RGB), what a DICOM viewer shows."""
    from PIL import Image

    require_tool("dcm2pnm")
    out = subprocess.run(["dcm2pnm", "--write-png", str(path), str(png)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    with Image.open(png) as im:
        return np.asarray(im.convert("RGB")).astype(np.int64)


# -- item 10: palette colour with 16-bit LUT entries --------------------------------------------
def test_palette_is_decoded_as_dcmtk_renders_it(pydicom_file, tmp_path):
    """A 16-bit LUT entry is scaled by the LUT's bit depth (>> 8): 0xFF00 is 255, not 254."""
    from p2p_desktop.io import load_study

    source = pydicom_file("examples_palette.dcm")
    shown = _dcmtk_rgb(source, tmp_path / "source.png")
    study = load_study(source)
    assert study.stored.dtype == np.uint8 and study.bits_stored == 8 and study.value_range == (0.0, 255.0)
    assert np.array_equal(study.stored.astype(np.int64), shown)
    assert np.array_equal(np.round(study.image.astype(np.float64) * 255).astype(np.int64), shown)


@pytest.mark.parametrize("eps", [8 / 255, 0.05])
def test_palette_export_stays_within_eps_of_the_source_as_dcmtk_renders_it(eps, pydicom_file, tmp_path):
    """Both files through dcm2pnm: every channel within ε·255 levels (so within ceil(ε·255))."""
    source = pydicom_file("examples_palette.dcm")
    shown = _dcmtk_rgb(source, tmp_path / "source.png")
    dcm = _attack(source, tmp_path / "out", eps=eps)
    exported = _dcmtk_rgb(dcm, tmp_path / "export.png")
    per_channel = np.abs(exported - shown).max(axis=(0, 1))
    assert all(int(d) <= eps * 255 + 1e-9 for d in per_channel), (per_channel, eps * 255)
    assert all(int(d) <= math.ceil(eps * 255) for d in per_channel)
    assert per_channel.max() > 0
    assert not (_dciodvfy_errors(dcm) - _dciodvfy_errors(source))
