"""Decode budgets (issue 15 item 7): small files that decode to gigabytes are refused with one line,
before decoding, by the memory the whole pipeline needs (about 150 bytes per pixel)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from p2p_desktop.io import load_study
from p2p_desktop.io.memory import BYTES_PER_PIXEL, check_decode_budget, memory_budget


def _png_bomb(path: Path, side: int = 5000) -> Path:
    from PIL import Image

    Image.new("L", (side, side), 0).save(path, optimize=True)  # 25 MP in a few tens of KB
    return path


def _rle_bomb(path: Path, side: int = 8192) -> Path:
    """A one-frame 8-bit RLE Lossless DICOM of ``side`` x ``side`` zeros, written by hand (about 1 MB)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless, SecondaryCaptureImageStorage, generate_uid

    n = side * side
    segment = b"\x81\x00" * (n // 128)  # PackBits: repeat the next byte 128 times
    frame = struct.pack("<16L", 1, 64, *([0] * 14)) + segment
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_budget_arithmetic(monkeypatch):
    monkeypatch.setenv("P2P_DESKTOP_MEMORY_BUDGET", "1G")
    assert memory_budget() == 2**30
    assert check_decode_budget(2000, 2000) is None  # 4 MP * 150 B = 0.56 GiB
    reason = check_decode_budget(5000, 5000)
    assert "5000x5000" in reason and "3.5 GiB" in reason and "1.0 GiB" in reason
    assert BYTES_PER_PIXEL == 150
    monkeypatch.delenv("P2P_DESKTOP_MEMORY_BUDGET")
    assert memory_budget() and memory_budget() > 0  # the system's own figure


@pytest.mark.parametrize("make,size_limit", [(_png_bomb, 200_000), (_rle_bomb, 1_200_000)])
def test_bombs_under_the_pixel_cap_are_refused_before_decoding(tmp_path, make, size_limit):
    path = make(tmp_path / ("bomb.png" if make is _png_bomb else "bomb.dcm"))
    assert path.stat().st_size < size_limit
    code = (
        "import resource, sys\n"
        "from p2p_desktop.io import load_study\n"
        "from p2p_desktop.errors import InputError\n"
        "try:\n"
        f"    load_study({str(path)!r})\n"
        "    print('LOADED')\n"
        "except InputError as exc:\n"
        "    print('REFUSED', exc)\n"
        # VmHWM: this process's own peak (ru_maxrss would include the forking parent's)
        "print('PEAK_KB', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))\n")
    env = {**os.environ, "P2P_DESKTOP_MEMORY_BUDGET": "1G"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout
    assert "REFUSED" in out and "refused before decoding" in out, out + proc.stderr
    peak_mb = int(out.split("PEAK_KB")[1].split()[0]) / 1024
    assert peak_mb < 600, f"{peak_mb:.0f} MB used: it was decoded"  # a decoded frame alone is 25-64 MB * 150


def test_cli_refusal_is_one_line_exit_2(tmp_path, monkeypatch):
    path = _png_bomb(tmp_path / "bomb.png")
    env = {**os.environ, "P2P_DESKTOP_MEMORY_BUDGET": "1G", "P2P_DESKTOP_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "p2p_desktop", "classify", str(path), "--classifier",
                           "demo-squeezenet1_1"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "working memory" in proc.stderr


def test_address_space_limit_is_part_of_the_budget(tmp_path):
    # no override: a process limited to 2 GiB more address space refuses the 25 MP PNG by itself
    path = _png_bomb(tmp_path / "bomb.png")
    code = (
        "import resource\n"
        "from p2p_desktop.io import load_study\n"
        "from p2p_desktop.io.memory import available_memory\n"
        "size = int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmSize:'))) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (size + 2 * 2**30, resource.RLIM_INFINITY))\n"
        "print('AVAIL', available_memory())\n"
        "try:\n"
        f"    load_study({str(path)!r}); print('LOADED')\n"
        "except Exception as exc:\n"
        "    print('REFUSED', type(exc).__name__, exc)\n")
    env = {k: v for k, v in os.environ.items() if k != "P2P_DESKTOP_MEMORY_BUDGET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc")
    assert "REFUSED InputError" in proc.stdout and "working memory" in proc.stdout, proc.stdout + proc.stderr


def test_ordinary_images_still_load(pydicom_file):
    study = load_study(pydicom_file("examples_rgb_color.dcm"))
    assert study.width == 320
