"""DICOM loading on pydicom's own test files, and refusal of bad DICOM input."""

from __future__ import annotations

import random
import shutil
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from p2p_desktop.errors import InputError
from p2p_desktop.io import load_study, n_frames, probe_study
from p2p_desktop.io.dicom import SUPPORTED_TRANSFER_SYNTAXES, load_dicom, read_dicom_header

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _reference(path: Path, frame: int = 0) -> np.ndarray:
    """pydicom's own decoded frame (YBR -> RGB by pydicom, palette applied), in [0, 1]; palette
    entries scaled by the LUT's bit depth as viewers do (16-bit: >> 8)."""
    ds = dcmread(path)
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[frame]
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        arr = (arr >> (int(ds.RedPaletteColorLookupTableDescriptor[2]) - 8)).astype(np.uint8)
    return arr.astype(np.float64) / np.iinfo(arr.dtype).max


def _assert_one_line_error(exc: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg
    assert str(path) in msg, msg
    for w in words:
        assert w.lower() in msg.lower(), msg


def _write(path: Path, ds: Dataset) -> Path:
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def _synthetic(rows: int, cols: int, ts: str = ExplicitVRLittleEndian, **attrs) -> Dataset:
    """A small US header with a tiny (possibly inconsistent) pixel data element."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for k, v in attrs.items():
        setattr(ds, k, v)
    if UID(ts).is_compressed:
        ds.PixelData = encapsulate([b"\0" * 64])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = b"\0" * 64
    return ds


# --- the ultrasound files pydicom ships -----------------------------------------------

US_FILES = [
    # name, shape, source photometric, transfer syntax
    ("examples_rgb_color.dcm", (240, 320, 3), "RGB", "1.2.840.10008.1.2.1"),
    ("examples_palette.dcm", (350, 800, 3), "PALETTE COLOR", "1.2.840.10008.1.2.1"),
    ("examples_ybr_color.dcm", (240, 320, 3), "YBR_FULL_422", "1.2.840.10008.1.2.4.50"),
    ("examples_jpeg2k.dcm", (480, 640, 3), "YBR_RCT", "1.2.840.10008.1.2.4.90"),
    ("ExplVR_BigEnd.dcm", (60, 80, 3), "RGB", "1.2.840.10008.1.2.2"),
]


@pytest.mark.parametrize("name,shape,photometric,ts", US_FILES, ids=[u[0] for u in US_FILES])
def test_ultrasound_files_load_as_pydicom_decodes_them(pydicom_file, name, shape, photometric, ts):
    path = pydicom_file(name)
    study = load_study(path)
    assert study.kind == "dicom"
    assert study.image.shape == shape and study.image.dtype == np.float32
    assert 0.0 <= study.image.min() and study.image.max() <= 1.0
    assert study.photometric == photometric
    assert study.metadata.modality == "US"
    assert study.metadata.transfer_syntax == ts
    assert study.frame_index == 0
    np.testing.assert_allclose(study.image, _reference(path), atol=1e-6)
    # the header is kept for export, without the pixel data
    assert study.dataset.SOPInstanceUID == study.metadata.sop_instance_uid != ""
    assert "PixelData" not in study.dataset
    # stored + value_range reproduce the image; quantise keeps an 8-bit source as it is
    lo, hi = study.value_range
    np.testing.assert_allclose((study.stored - lo) / (hi - lo), study.image, atol=1e-6)
    if study.bits_stored == 8:
        np.testing.assert_allclose(study.quantise(study.image), study.image, atol=1e-6)


def test_palette_16_bit_lut_is_scaled_by_its_depth(pydicom_file):
    """A 16-bit LUT entry is shown by viewers as its high byte (0xFF00 -> 255, not 254)."""
    study = load_study(pydicom_file("examples_palette.dcm"))
    assert study.bits_stored == 8 and study.value_range == (0.0, 255.0)
    assert study.stored.dtype == np.uint8 and int(study.stored.max()) == 0xFF00 >> 8


def test_ultrasound_calibration_gives_pixel_spacing_in_mm(pydicom_file):
    path = pydicom_file("examples_ybr_color.dcm")
    region = dcmread(path, stop_before_pixels=True).SequenceOfUltrasoundRegions[0]
    assert region.PhysicalUnitsXDirection == 3  # cm
    study = load_study(path)
    assert study.pixel_spacing_mm == pytest.approx(
        (region.PhysicalDeltaY * 10, region.PhysicalDeltaX * 10))
    # PixelSpacing is the fallback (CT), and a file with neither has none
    assert load_study(pydicom_file("CT_small.dcm")).pixel_spacing_mm == pytest.approx((0.661468, 0.661468))
    assert load_study(pydicom_file("examples_rgb_color.dcm")).pixel_spacing_mm is None


def test_region_units_other_than_cm_are_ignored(pydicom_file, tmp_path):
    ds = dcmread(pydicom_file("examples_ybr_color.dcm"))
    for region in ds.SequenceOfUltrasoundRegions:
        region.PhysicalUnitsXDirection = 4  # seconds
    study = load_study(_write(tmp_path / "x.dcm", ds))
    assert study.pixel_spacing_mm is None


def test_metadata_burned_in_annotation_and_laterality(pydicom_file, tmp_path):
    ds = dcmread(pydicom_file("examples_rgb_color.dcm"))
    ds.BurnedInAnnotation = "YES"
    ds.ImageLaterality = "L"
    ds.PatientID = "P-42"
    study = load_study(_write(tmp_path / "x.dcm", ds))
    md = study.metadata
    assert (md.burned_in_annotation, md.laterality, md.patient_id) == ("YES", "L", "P-42")
    assert md.sop_class_uid == ds.SOPClassUID and md.study_uid == ds.StudyInstanceUID
    del ds.ImageLaterality
    ds.Laterality = "R"
    del ds.BurnedInAnnotation
    md = load_study(_write(tmp_path / "y.dcm", ds)).metadata
    assert (md.burned_in_annotation, md.laterality) == ("", "R")


# --- frames ---------------------------------------------------------------------------


def test_cine_frames_are_chosen_and_checked(pydicom_file):
    path = pydicom_file("examples_ybr_color.dcm")  # US cine, 30 frames, JPEG baseline
    assert n_frames(path) == 30
    probe = probe_study(path)
    assert (probe.kind, probe.rows, probe.columns, probe.channels) == ("dicom", 240, 320, 3)
    study = load_study(path, frame=7)
    assert (study.frame_index, study.n_frames) == (7, 30)
    assert study.name.endswith("[frame 7]")
    np.testing.assert_allclose(study.image, _reference(path, 7), atol=1e-6)
    assert not np.array_equal(study.image, load_study(path, frame=0).image)
    for bad in (30, -1):
        with pytest.raises(InputError) as exc:
            load_study(path, frame=bad)
        _assert_one_line_error(exc, path, f"frame {bad}", "0..29")


def test_multiframe_rle_rgb(pydicom_file):
    path = pydicom_file("SC_rgb_rle_2frame.dcm")
    study = load_study(path, frame=1)
    assert study.image.shape == (100, 100, 3) and study.n_frames == 2
    np.testing.assert_allclose(study.image, _reference(path, 1), atol=1e-6)


# --- grey: signed, rescaled, MONOCHROME1, RLE, big endian -----------------------------


def test_signed_16_bit_ct_applies_modality_lut(pydicom_file):
    path = pydicom_file("CT_small.dcm")
    ds = dcmread(path)
    assert ds.PixelRepresentation == 1
    hu = apply_modality_lut(ds.pixel_array, ds)
    study = load_study(path)
    assert study.image.shape == (128, 128, 1) and study.bits_stored == 16
    np.testing.assert_array_equal(study.stored, hu)
    assert study.value_range == (hu.min(), hu.max())
    assert study.image.min() == 0.0 and study.image.max() == 1.0
    # quantising to the source's levels is lossless on the source image
    np.testing.assert_allclose(study.quantise(study.image), study.image, atol=1e-6)


def test_window_is_converted_to_unit_range(pydicom_file):
    path = pydicom_file("MR_small.dcm")
    ds = dcmread(path)
    study = load_study(path)
    lo, hi = study.value_range
    center, width = study.window
    assert center == pytest.approx((float(ds.WindowCenter) - lo) / (hi - lo))
    assert width == pytest.approx(float(ds.WindowWidth) / (hi - lo))


@pytest.mark.parametrize("name", ["MR_small.dcm", "image_dfl.dcm"])  # 16-bit; 8-bit deflated
def test_monochrome1_is_inverted(pydicom_file, tmp_path, name):
    ds = dcmread(pydicom_file(name))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter, ds.WindowWidth = 100, 50
    mono1 = load_study(_write(tmp_path / "mono1.dcm", ds))
    ds.PhotometricInterpretation = "MONOCHROME2"
    mono2 = load_study(_write(tmp_path / "mono2.dcm", ds))
    assert mono1.photometric == "MONOCHROME1"
    np.testing.assert_allclose(mono1.image, 1.0 - mono2.image, atol=1e-6)
    assert mono1.window[0] == pytest.approx(1.0 - mono2.window[0])
    assert mono1.window[1] == pytest.approx(mono2.window[1])


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_bigendian.dcm",
                                  "MR_small_implicit.dcm", "MR_small_jp2klossless.dcm"])
def test_encodings_of_one_image_agree(pydicom_file, name):
    ref = load_study(pydicom_file("MR_small.dcm"))
    study = load_study(pydicom_file(name))
    np.testing.assert_array_equal(study.image, ref.image)


def test_planar_configuration_1_rgb(pydicom_file, tmp_path):
    path = pydicom_file("ExplVR_BigEnd.dcm")
    assert dcmread(path, stop_before_pixels=True).PlanarConfiguration == 1
    big = load_study(path)
    # the same pixels written colour-by-plane little endian load identically
    ds = dcmread(path)
    rgb = ds.pixel_array
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PlanarConfiguration = 1
    ds.PixelData = np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes()
    little = load_study(_write(tmp_path / "pc1.dcm", ds))
    np.testing.assert_array_equal(little.image, big.image)
    ds.PlanarConfiguration = 0
    ds.PixelData = rgb.tobytes()
    np.testing.assert_array_equal(load_study(_write(tmp_path / "pc0.dcm", ds)).image, big.image)


def test_ybr_full_422_native_is_converted_to_rgb(pydicom_file):
    path = pydicom_file("SC_ybr_full_422_uncompressed.dcm")
    study = load_study(path)
    assert study.photometric == "YBR_FULL_422" and study.channels == 3
    np.testing.assert_allclose(study.image, _reference(path), atol=1e-6)


# --- bad input ------------------------------------------------------------------------


def test_empty_file(tmp_path, unchanged):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    with unchanged(tmp_path), pytest.raises(InputError) as exc:
        load_study(path)
    _assert_one_line_error(exc, path, "empty")


def test_png_renamed_dcm(tmp_path, unchanged):
    from PIL import Image

    path = tmp_path / "scan.dcm"
    Image.new("L", (8, 8)).save(path, format="PNG")
    with unchanged(tmp_path):
        for loader in (load_study, load_dicom):
            with pytest.raises(InputError) as exc:
                loader(path)
            _assert_one_line_error(exc, path, "not a DICOM file", "PNG")


def test_non_dicom_text(pydicom_file, tmp_path, unchanged):
    path = tmp_path / "notes.dcm"
    shutil.copy(pydicom_file("README.txt"), path)
    with unchanged(tmp_path), pytest.raises(InputError) as exc:
        load_study(path)
    _assert_one_line_error(exc, path, "DICM")


def test_truncated_dicom(pydicom_file, tmp_path, unchanged):
    data = pydicom_file("examples_rgb_color.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) // 2])
    with unchanged(tmp_path), pytest.raises(InputError) as exc:
        load_study(path)
    _assert_one_line_error(exc, path, "truncated")
    # pydicom's own truncated file: a few bytes short
    with pytest.raises(InputError) as exc:
        load_study(pydicom_file("MR_truncated.dcm"))
    assert "truncated" in str(exc.value)


def test_dicom_without_pixel_data(pydicom_file, tmp_path, unchanged):
    ds = dcmread(pydicom_file("examples_rgb_color.dcm"))
    del ds.PixelData
    path = _write(tmp_path / "nopixels.dcm", ds)
    with unchanged(tmp_path), pytest.raises(InputError) as exc:
        load_study(path)
    _assert_one_line_error(exc, path, "no pixel data")
    with pytest.raises(InputError) as exc:  # a structured report is not an image
        load_study(pydicom_file("reportsi.dcm"))
    assert "not an image" in str(exc.value)


def test_wrong_vr_value_is_refused(pydicom_file):
    path = pydicom_file("badVR.dcm")  # NumberOfFrames '1A'
    with pytest.raises(InputError) as exc:
        load_study(path)
    _assert_one_line_error(exc, path, "NumberOfFrames")


def test_huge_geometry_refused_quickly_without_allocating(tmp_path, unchanged):
    path = _write(tmp_path / "huge.dcm", _synthetic(65535, 65535, SamplesPerPixel=3,
                                                    PhotometricInterpretation="RGB",
                                                    PlanarConfiguration=0))
    assert path.stat().st_size < 2000
    with unchanged(tmp_path):
        tracemalloc.start()
        t0 = time.perf_counter()
        with pytest.raises(InputError) as exc:
            load_study(path)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    _assert_one_line_error(exc, path, "65535x65535")
    assert elapsed < 1.0 and peak < 20e6


def test_frame_and_total_byte_caps(tmp_path):
    # within the dimension limit, but one frame is over the byte cap
    path = _write(tmp_path / "big.dcm", _synthetic(16384, 16384, SamplesPerPixel=3,
                                                   PhotometricInterpretation="RGB",
                                                   PlanarConfiguration=0, BitsAllocated=16,
                                                   BitsStored=16, HighBit=15))
    with pytest.raises(InputError, match="frame too large"):
        load_study(path)
    # small frames, but too many of them
    path = _write(tmp_path / "cine.dcm", _synthetic(4096, 4096, NumberOfFrames=200))
    with pytest.raises(InputError, match="pixel data too large"):
        load_study(path)
    # a consistent header whose file is far too short for its pixels
    path = _write(tmp_path / "short.dcm", _synthetic(1024, 1024))
    with pytest.raises(InputError, match="truncated"):
        load_study(path)


def test_unsupported_transfer_syntax_names_its_uid(tmp_path, unchanged):
    uid = "1.2.840.10008.1.2.4.100"  # MPEG2 video
    assert uid not in SUPPORTED_TRANSFER_SYNTAXES
    path = _write(tmp_path / "video.dcm", _synthetic(8, 8, uid))
    with unchanged(tmp_path), pytest.raises(InputError) as exc:
        load_study(path)
    _assert_one_line_error(exc, path, uid, "unsupported transfer syntax")


def test_missing_decoder_names_the_uid(pydicom_file, monkeypatch):
    """A listed syntax whose decoder plugin is not installed is refused by UID."""
    from pydicom.pixels import get_decoder

    decoder = get_decoder("1.2.840.10008.1.2.4.90")
    monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))
    path = pydicom_file("examples_jpeg2k.dcm")
    with pytest.raises(InputError) as exc:
        load_study(path)
    _assert_one_line_error(exc, path, "1.2.840.10008.1.2.4.90", "decoder")


def test_header_is_read_without_pixels(pydicom_file):
    ds, geo = read_dicom_header(pydicom_file("examples_ybr_color.dcm"))
    assert (geo.rows, geo.columns, geo.n_frames, geo.samples) == (240, 320, 30, 3)
    assert "PixelData" not in ds


def _mutants(data: bytes, rng: random.Random, n: int):
    for _ in range(n):
        b = bytearray(data)
        kind = rng.randrange(4)
        i = rng.randrange(132, len(b) - 4)
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(132, len(b))] = rng.randrange(256)
        elif kind == 1:
            del b[rng.randrange(133, len(b)):]
        elif kind == 2:
            b[i:i + 4] = struct.pack("<I", rng.choice([0xFFFFFFFF, 0x7FFFFFFF, rng.randrange(1 << 32)]))
        else:
            b[i:i + 2] = struct.pack("<H", rng.choice([0xFFFF, 0, rng.randrange(1 << 16)]))
        yield bytes(b)


def test_corrupt_mutants_load_or_fail_cleanly_and_fast(pydicom_file, tmp_path):
    """A small deterministic fuzz: every mutant loads with pixels or gives one InputError."""
    rng = random.Random(1234)
    names = ["examples_rgb_color.dcm", "examples_ybr_color.dcm", "ExplVR_BigEnd.dcm",
             "SC_rgb_rle.dcm", "MR_small_RLE.dcm", "CT_small.dcm", "examples_palette.dcm"]
    outcomes = {"loaded": 0, "refused": 0}
    for name in names:
        data = pydicom_file(name).read_bytes()
        for k, mutant in enumerate(_mutants(data, rng, 12)):
            path = tmp_path / f"{k}_{name}"
            path.write_bytes(mutant)
            t0 = time.perf_counter()
            try:
                study = load_study(path)
            except InputError as exc:
                assert "\n" not in str(exc) and str(exc).isprintable()
                outcomes["refused"] += 1
            else:
                assert np.isfinite(study.image).all()
                assert 0.0 <= study.image.min() and study.image.max() <= 1.0
                outcomes["loaded"] += 1
            assert time.perf_counter() - t0 < 1.0, name
    assert outcomes["refused"] > 0


def _first_frame(ds: Dataset) -> bytes:
    from pydicom.encaps import generate_frames

    return next(generate_frames(ds.PixelData, number_of_frames=1))


def test_jp2_box_of_length_zero_is_refused_not_hung(pydicom_file, tmp_path):
    """pydicom's JP2 box walk never ends on a box of length 0; we refuse it first."""
    ds = dcmread(pydicom_file("examples_jpeg2k.dcm"))
    jp2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x00ftyp" + b"\0" * 12
    ds.PixelData = encapsulate([jp2 + _first_frame(ds)])
    path = _write(tmp_path / "jp2.dcm", ds)
    t0 = time.perf_counter()
    with pytest.raises(InputError) as exc:
        load_study(path)
    assert time.perf_counter() - t0 < 1.0
    _assert_one_line_error(exc, path, "JPEG 2000")


def test_codestream_larger_than_header_is_refused(pydicom_file, tmp_path):
    ds = dcmread(pydicom_file("MR_small_jp2klossless.dcm"))
    frame = bytearray(_first_frame(ds))
    frame[8:16] = (60000).to_bytes(4, "big") * 2  # SIZ Xsiz, Ysiz
    ds.PixelData = encapsulate([bytes(frame)])
    path = _write(tmp_path / "j2k.dcm", ds)
    with pytest.raises(InputError) as exc:
        load_study(path)
    _assert_one_line_error(exc, path, "60000x60000", "64x64")
