"""Plain images, masks and BUSI-layout folders; refusal of bad images and bombs."""

from __future__ import annotations

import random
import shutil
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from p2p_desktop.cancel import CancelToken
from p2p_desktop.errors import Cancelled, InputError
from p2p_desktop.io import detect_kind, load_dataset, load_study, n_frames, probe_study, scan_folder
from p2p_desktop.io.images import MAX_IMAGE_PIXELS, find_masks, is_mask_file, load_mask

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def us_rgb(pydicom_file) -> np.ndarray:
    """A real ultrasound frame (pydicom's examples_rgb_color.dcm), uint8 (240, 320, 3)."""
    from pydicom import dcmread

    return dcmread(pydicom_file("examples_rgb_color.dcm")).pixel_array


@pytest.fixture
def us_grey(us_rgb) -> np.ndarray:
    return us_rgb[..., 1].copy()


def _one_line(exc: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), msg


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _one_colour_png(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit PNG of one colour, written row by row (small file, never in memory)."""
    row = b"\0" * (1 + (width + 7) // 8)
    co = zlib.compressobj(9)
    idat = b"".join(co.compress(row) for _ in range(height)) + co.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


# --- formats and modes ----------------------------------------------------------------


def test_grey_png(tmp_path, us_grey):
    path = tmp_path / "grey.png"
    Image.fromarray(us_grey).save(path)
    study = load_study(path)
    assert study.kind == "image" and study.image.shape == (240, 320, 1)
    assert (study.bits_stored, study.photometric, study.value_range) == (8, "MONOCHROME2", (0.0, 255.0))
    np.testing.assert_array_equal(study.image[..., 0], us_grey.astype(np.float32) / 255)
    assert study.dataset is None and study.mask is None and study.n_frames == 1


def test_16_bit_png_keeps_its_depth(tmp_path, pydicom_file):
    from pydicom import dcmread

    ct = dcmread(pydicom_file("CT_small.dcm")).pixel_array.astype(np.int32)
    arr = ((ct - ct.min()) * 16).astype(np.uint16)  # real data spread over 16 bits
    path = tmp_path / "ct16.png"
    Image.fromarray(arr).save(path)
    study = load_study(path)
    assert study.bits_stored == 16 and study.value_range == (0.0, 65535.0)
    np.testing.assert_array_equal(study.stored, arr)
    np.testing.assert_allclose(study.image[..., 0], arr / 65535.0, atol=1e-7)
    np.testing.assert_allclose(study.quantise(study.image), study.image, atol=1e-6)


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("BMP", ".bmp"), ("TIFF", ".tif")])
def test_lossless_colour_formats(tmp_path, us_rgb, fmt, suffix):
    path = tmp_path / f"us{suffix}"
    Image.fromarray(us_rgb).save(path, format=fmt)
    study = load_study(path)
    assert study.image.shape == (240, 320, 3) and study.photometric == "RGB"
    np.testing.assert_array_equal(study.stored, us_rgb)


def test_jpeg(tmp_path, us_rgb):
    path = tmp_path / "us.jpg"
    Image.fromarray(us_rgb).save(path, quality=95)
    study = load_study(path)
    assert study.image.shape == (240, 320, 3)
    assert np.abs(study.stored.astype(int) - us_rgb).mean() < 3


def test_alpha_is_dropped_and_palette_becomes_rgb(tmp_path, us_rgb, us_grey):
    rgba = np.dstack([us_rgb, np.full(us_rgb.shape[:2], 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    study = load_study(tmp_path / "rgba.png")
    np.testing.assert_array_equal(study.stored, us_rgb)
    Image.fromarray(np.dstack([us_grey, us_grey])).convert("LA").save(tmp_path / "la.png")
    assert load_study(tmp_path / "la.png").image.shape == (240, 320, 1)
    pal = Image.fromarray(us_rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.save(tmp_path / "pal.png")
    study = load_study(tmp_path / "pal.png")
    assert study.image.shape == (240, 320, 3) and study.photometric == "RGB"
    np.testing.assert_array_equal(study.stored, np.asarray(pal.convert("RGB")))


def test_multipage_tiff_frames(tmp_path, us_grey):
    pages = [Image.fromarray(us_grey), Image.fromarray(255 - us_grey)]
    path = tmp_path / "pages.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert n_frames(path) == 2
    study = load_study(path, frame=1)
    assert (study.frame_index, study.n_frames) == (1, 2)
    np.testing.assert_array_equal(study.stored, 255 - us_grey)
    with pytest.raises(InputError, match=r"frame 2 out of range 0\.\.1"):
        load_study(path, frame=2)


def test_dispatch_on_content_not_suffix(tmp_path, us_rgb, pydicom_file):
    png_as_jpg = tmp_path / "really_png.jpg"
    Image.fromarray(us_rgb).save(png_as_jpg, format="PNG")
    assert detect_kind(png_as_jpg) == "image"
    assert load_study(png_as_jpg).image.shape == (240, 320, 3)
    dicom_no_suffix = tmp_path / "IM0001"
    shutil.copy(pydicom_file("examples_rgb_color.dcm"), dicom_no_suffix)
    assert detect_kind(dicom_no_suffix) == "dicom"
    assert load_study(dicom_no_suffix).kind == "dicom"
    assert probe_study(dicom_no_suffix).channels == 3


# --- bad images -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [(20000, 20000), (8000, 8000)])
def test_decompression_bomb_is_refused_quickly_in_bounded_memory(tmp_path, unchanged, size):
    path = _one_colour_png(tmp_path / "bomb.png", *size)
    assert path.stat().st_size < 200_000 and size[0] * size[1] > MAX_IMAGE_PIXELS
    with unchanged(tmp_path):
        tracemalloc.start()
        t0 = time.perf_counter()
        with pytest.raises(InputError) as exc:
            load_study(path)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    _one_line(exc, path, "too large")
    assert elapsed < 1.0 and peak < 20e6


def test_truncated_and_garbage_images(tmp_path, us_rgb, unchanged):
    Image.fromarray(us_rgb).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.png").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "anim.gif").write_bytes(b"GIF89a" + b"\0" * 64)
    cases = {"cut.png": "decode", "noise.png": "neither", "empty.png": "empty",
             "anim.gif": "neither"}
    with unchanged(tmp_path):
        for name, word in cases.items():
            with pytest.raises(InputError) as exc:
                load_study(tmp_path / name)
            _one_line(exc, tmp_path / name, word)
        with pytest.raises(InputError, match="no such file"):
            load_study(tmp_path / "missing.png")
        with pytest.raises(InputError, match="folder"):
            load_study(tmp_path)


def test_corrupt_image_mutants_fail_cleanly(tmp_path, us_rgb):
    rng = random.Random(7)
    for fmt in ("PNG", "JPEG", "BMP", "TIFF"):
        src = tmp_path / f"src.{fmt.lower()}"
        Image.fromarray(us_rgb[:64, :64]).save(src, format=fmt)
        data = src.read_bytes()
        for k in range(25):
            b = bytearray(data)
            for _ in range(rng.randint(1, 6)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            if k % 3 == 0:
                b = b[: rng.randrange(8, len(b))]
            path = tmp_path / f"m{k}.{fmt.lower()}"
            path.write_bytes(bytes(b))
            t0 = time.perf_counter()
            try:
                study = load_study(path)
            except InputError as exc:
                assert "\n" not in str(exc)
            else:
                assert 0.0 <= study.image.min() and study.image.max() <= 1.0
            assert time.perf_counter() - t0 < 1.0


# --- masks and BUSI folders -----------------------------------------------------------


def _mask(shape, box) -> Image.Image:
    m = np.zeros(shape, np.uint8)
    r0, r1, c0, c1 = box
    m[r0:r1, c0:c1] = 255
    return Image.fromarray(m)


def test_masks_are_attached_as_bool_union(tmp_path, us_rgb):
    Image.fromarray(us_rgb).save(tmp_path / "benign (1).png")
    _mask((240, 320), (10, 20, 10, 20)).save(tmp_path / "benign (1)_mask.png")
    _mask((240, 320), (100, 110, 200, 220)).save(tmp_path / "benign (1)_mask_1.png")
    assert is_mask_file(tmp_path / "benign (1)_mask_1.png")
    assert not is_mask_file(tmp_path / "benign (1).png")
    assert [p.name for p in find_masks(tmp_path / "benign (1).png")] == [
        "benign (1)_mask.png", "benign (1)_mask_1.png"]
    study = load_study(tmp_path / "benign (1).png")
    assert study.mask.dtype == bool and study.mask.shape == (240, 320)
    assert study.mask.sum() == 100 + 200
    assert load_study(tmp_path / "benign (1).png", attach_mask=False).mask is None
    single = load_mask(tmp_path / "benign (1)_mask.png")
    assert single.sum() == 100
    with pytest.raises(InputError, match="does not match"):
        load_mask(tmp_path / "benign (1)_mask.png", shape=(10, 10))


def test_mask_of_wrong_size_is_not_attached(tmp_path, us_rgb):
    Image.fromarray(us_rgb).save(tmp_path / "a.png")
    _mask((10, 10), (0, 5, 0, 5)).save(tmp_path / "a_mask.png")
    assert load_study(tmp_path / "a.png").mask is None


@pytest.fixture
def busi(tmp_path, us_rgb, us_grey, pydicom_file) -> Path:
    """A small BUSI-layout folder built from real ultrasound pixels, with problems."""
    root = tmp_path / "busi"
    for d in ("benign", "malignant", "normal"):
        (root / d).mkdir(parents=True)
    Image.fromarray(us_rgb).save(root / "benign" / "benign (1).png")
    _mask((240, 320), (10, 20, 10, 20)).save(root / "benign" / "benign (1)_mask.png")
    _mask((240, 320), (30, 40, 10, 20)).save(root / "benign" / "benign (1)_mask_1.png")
    Image.fromarray(us_grey).save(root / "benign" / "benign (2).png")
    Image.fromarray(us_grey).save(root / "malignant" / "malignant (1).png")
    _mask((240, 320), (50, 90, 50, 90)).save(root / "malignant" / "malignant (1)_mask.png")
    Image.fromarray(us_grey).save(root / "normal" / "normal (1).png")
    shutil.copy(pydicom_file("examples_ybr_color.dcm"), root / "normal" / "cine.dcm")
    (root / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    _mask((240, 320), (0, 5, 0, 5)).save(root / "normal" / "lost_mask.png")
    (root / ".hidden.png").write_bytes(b"junk")
    return root


def test_scan_busi_folder(busi, unchanged):
    with unchanged(busi):
        scan = scan_folder(busi)
    names = [e.path.name for e in scan.entries]
    assert names == ["benign (1).png", "benign (2).png", "malignant (1).png", "cine.dcm",
                     "normal (1).png"]
    assert not any("_mask" in n for n in names)
    by_name = {e.path.name: e for e in scan.entries}
    assert [p.name for p in by_name["benign (1).png"].mask_paths] == [
        "benign (1)_mask.png", "benign (1)_mask_1.png"]
    assert by_name["malignant (1).png"].mask_path.name == "malignant (1)_mask.png"
    assert by_name["benign (2).png"].mask_path is None
    assert by_name["cine.dcm"].kind == "dicom" and by_name["cine.dcm"].n_frames == 30
    assert by_name["normal (1).png"].label == "normal"
    assert scan.labels == ("benign", "malignant", "normal")
    skipped = {s.path.name: s.reason for s in scan.skipped}
    assert set(skipped) == {"broken.png", "lost_mask.png"}
    assert all("\n" not in r and r for r in skipped.values())
    assert "mask without" in skipped["lost_mask.png"]


def test_load_dataset_items(busi):
    items = load_dataset(busi)
    assert len(items) == 5
    item = next(i for i in items if i.path.name == "malignant (1).png")
    assert item.label == "malignant" and item.mask_path.name == "malignant (1)_mask.png"
    study = load_study(item.path, label=item.label)
    assert study.label == "malignant" and study.mask.sum() == 40 * 40


def test_verify_decodes_every_file(busi, us_rgb):
    data = (busi / "benign" / "benign (2).png").read_bytes()
    (busi / "benign" / "benign (2).png").write_bytes(data[: len(data) // 3])
    assert "benign (2).png" in [e.path.name for e in scan_folder(busi).entries]
    scan = scan_folder(busi, verify=True)
    assert "benign (2).png" not in [e.path.name for e in scan.entries]
    assert "benign (2).png" in [s.path.name for s in scan.skipped]


def test_scan_progress_and_cancel(busi):
    seen = []
    scan_folder(busi, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (6, 6) and len(seen) == 6  # masks and hidden files are not studies
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        scan_folder(busi, cancel=token)


def test_bad_dataset_folders(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no loadable images"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(InputError, match="not a folder"):
        scan_folder(tmp_path / "file.png")
