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


def _ultrasound_like(rows: int = 96, cols: int = 128) -> np.ndarray:
    """A smooth speckled [0, 1] field: a bright band and a dark lesion over noise."""
    rng = np.random.RandomState(0)
    y, x = np.mgrid[0:rows, 0:cols]
    field = 0.25 + 0.45 * np.exp(-((y - rows * 0.4) / (rows * 0.15)) ** 2)
    field -= 0.2 * (((y - rows * 0.6) ** 2 + (x - cols * 0.5) ** 2) < (rows * 0.12) ** 2)
    return np.clip(field * rng.gamma(4.0, 0.25, size=field.shape), 0.0, 1.0)


# -- item 9: 16-bit and float plain images ----------------------------------------------------
def _write_16bit(path: Path, values: np.ndarray) -> None:
    if path.suffix == ".png":
        from PIL import Image

        Image.fromarray(values).save(path)
    else:
        import tifffile

        tifffile.imwrite(path, values)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_image_exports_as_16_bit_dicom_within_eps_of_the_source(suffix, tmp_path):
    from pydicom import dcmread

    src = tmp_path / "in" / f"us16{suffix}"
    src.parent.mkdir()
    values = np.round(1000 + _ultrasound_like() * 40000).astype(np.uint16)  # a 16-bit range, not 0..255
    _write_16bit(src, values)
    dcm = _attack(src, tmp_path / "out")

    ds = dcmread(dcm)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 0)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and "RescaleSlope" not in ds
    written = ds.pixel_array.astype(np.int64)
    assert written.shape == values.shape
    # the source's units: the change is within ε of the source's 16-bit range, and there is one
    diff = np.abs(written - values.astype(np.int64))
    assert diff.max() <= math.ceil(EPS * 65535), diff.max()
    assert np.count_nonzero(diff) > values.size // 2
    assert written.max() > 255 and np.count_nonzero(written == 255) < values.size // 100  # not squeezed to 8 bits
    # the adversarial PNG written beside it holds the same values
    from PIL import Image

    (png,) = (tmp_path / "out").glob("*_adv.png")
    with Image.open(png) as im:
        assert np.array_equal(np.asarray(im).astype(np.int64), written)
    assert not _dciodvfy_errors(dcm)


def test_float_tiff_exports_with_a_rescale_that_reproduces_the_source_range(tmp_path):
    import tifffile
    from pydicom import dcmread
    from pydicom.pixels import apply_modality_lut

    src = tmp_path / "in" / "envelope.tif"
    src.parent.mkdir()
    values = (-12.5 + _ultrasound_like() * 80.0).astype(np.float32)  # e.g. log-compressed dB, negative too
    tifffile.imwrite(src, values)
    lo, hi = float(values.min()), float(values.max())
    dcm = _attack(src, tmp_path / "out")

    ds = dcmread(dcm)
    assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 16, 0)
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    assert math.isclose(intercept, lo, rel_tol=0, abs_tol=1e-6 * (hi - lo))
    assert math.isclose(intercept + 65535 * slope, hi, rel_tol=0, abs_tol=1e-6 * (hi - lo))
    modality = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)
    # within ε of the source range, plus half a 16-bit step for the source's own quantisation
    diff = np.abs(modality - values.astype(np.float64))
    assert diff.max() <= EPS * (hi - lo) + 0.5 * slope + 1e-6 * (hi - lo), (diff.max(), EPS * (hi - lo))
    assert diff.max() > 0.5 * EPS * (hi - lo)  # the attack did change it
    assert lo - 1e-6 <= modality.min() and modality.max() <= hi + 1e-6
    assert not _dciodvfy_errors(dcm)


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


# -- a Modality LUT Sequence whose output needs more bits than the source stores ----------------
def test_modality_lut_values_are_written_at_a_depth_that_holds_them(pydicom_file, tmp_path, capsys):
    """The export writes modality values (the LUT becomes identity): 8 stored bits mapped by a
    16-bit LUT to 0..51000 were all clipped to 255 with a warning; they need 16 bits."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    arr = np.round(ds.pixel_array.astype(np.float64) / ds.pixel_array.max() * 255).astype("<u2")
    ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = arr.tobytes(), 8, 7, 0
    lut = Dataset()
    lut.LUTDescriptor, lut.ModalityLUTType = [256, 0, 16], "US"
    lut.LUTData = (np.arange(256, dtype="<u2") * 200).tobytes()
    lut["LUTData"].VR = "OW"
    ds.ModalityLUTSequence = [lut]
    for kw in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if kw in ds:
            delattr(ds, kw)
    src = tmp_path / "in" / "mr_lut.dcm"
    src.parent.mkdir()
    ds.save_as(src)
    modality = np.asarray(apply_modality_lut(pydicom.dcmread(src).pixel_array, ds)).astype(np.int64)

    dcm = _attack(src, tmp_path / "out")
    assert "clipped" not in capsys.readouterr().err
    out = pydicom.dcmread(dcm)
    assert "ModalityLUTSequence" not in out and (out.BitsAllocated, out.BitsStored, out.HighBit) == (16, 16, 15)
    written = out.pixel_array.astype(np.int64)
    span = int(modality.max() - modality.min())
    diff = np.abs(written - modality)
    assert diff.max() <= math.ceil(EPS * span) and np.count_nonzero(diff) > 0
    assert not (_dciodvfy_errors(dcm) - _dciodvfy_errors(src))
