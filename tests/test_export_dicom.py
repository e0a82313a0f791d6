"""Adversarial DICOM export, de-identification and safe writing, on real DICOM files.

Sources: pydicom's own ultrasound test files (RGB, YBR JPEG multi-frame, PALETTE COLOR,
JPEG 2000, big endian), a 16-bit MR and CT, a phantom DICOM, a MONOCHROME1 variant and a
plain PNG. Results come from a real FGSM run (seeded SqueezeNet at 64 px). ``dciodvfy`` and
``dcm2pnm`` checks run when those tools are installed.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.tools import require_tool

CLASSES = ("benign", "malignant", "normal")


# -- helpers shared with test_report / test_provenance -------------------------------------
def tiny_classifier(seed: int = 0, arch: str = "squeezenet1_1"):
    """A seeded, untrained torchvision classifier at 64 px (fast on CPU)."""
    import torch

    from p2p_desktop.models.classifier import Classifier, ModelCard, build_architecture

    torch.manual_seed(seed)
    module = build_architecture(arch, len(CLASSES))
    card = ModelCard(name=f"tiny-{arch}", architecture=arch, classes=CLASSES, weights="x", input_size=64)
    return Classifier(module, card)


def load(path, frame=None):
    from p2p_desktop.io import load_study

    return load_study(Path(path), frame=frame)


def attack_result(study, attack: str = "fgsm", clf=None, **config):
    """A real AttackResult: FGSM (or PGD) through ``run_attack``."""
    from p2p_desktop.attacks.registry import get
    from p2p_desktop.attacks.runner import run_attack

    cls = get(attack)
    return run_attack(study, clf or tiny_classifier(), cls(**({"eps": 0.03} | config)))


def dciodvfy_errors(path) -> set[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return {line.strip() for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")}


def assert_valid_derived(source: Path, exported: Path, tmp_path: Path) -> None:
    """No dciodvfy error beyond the source's own, and DCMTK renders it. Call it last in a test:
    a missing tool skips the rest of the test, with the reason."""
    require_tool("dciodvfy")
    new = dciodvfy_errors(exported) - dciodvfy_errors(source)
    assert not new, f"dciodvfy errors introduced by the export: {new}"
    require_tool("dcm2pnm")
    png = tmp_path / f"{exported.stem}_dcmtk.png"
    out = subprocess.run(["dcm2pnm", "--write-png", str(exported), str(png)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert png.stat().st_size > 100


@pytest.fixture(scope="module")
def clf():
    return tiny_classifier()


@pytest.fixture
def outs_dir(tmp_path):
    return tmp_path / "out"


def _export(result, study, out_dir, **kw):
    from p2p_desktop.export.dicom import export_dicom
    from p2p_desktop.io.outputs import OutputSet

    with OutputSet(out_dir, [study.path]) as outs:
        path = export_dicom(result, study, outs, **kw)
    assert outs.records[-1]["kind"] == "dicom" and outs.records[-1]["path"] == str(path)
    return path


# -- derived DICOM from pydicom's ultrasound files ------------------------------------------
US_FILES = ["examples_rgb_color.dcm", "examples_ybr_color.dcm", "examples_palette.dcm", "examples_jpeg2k.dcm",
            "ExplVR_BigEnd.dcm"]


@pytest.mark.parametrize("name", US_FILES)
def test_export_ultrasound_sources(name, pydicom_file, clf, outs_dir, tmp_path):
    from pydicom import dcmread

    source = pydicom_file(name)
    src = dcmread(source, stop_before_pixels=True)
    study = load(source)
    result = attack_result(study, clf=clf)
    path = _export(result, study, outs_dir)
    ds = dcmread(path)

    # identity: new instance and series in the same study, ultrasound class kept
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.6.1"
    assert ds.SOPInstanceUID != src.SOPInstanceUID and ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert "ADVERSARIAL" in ds.SeriesDescription and "RESEARCH" in ds.SeriesDescription
    assert result.attack in ds.DerivationDescription and "eps" in ds.DerivationDescription
    assert ds.DerivationCodeSequence[0].CodeValue == "113042"
    ref = ds.SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID and ref.ReferencedSOPClassUID == src.SOPClassUID
    assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    if study.n_frames > 1:
        assert ref.ReferencedFrameNumber == study.frame_index + 1
    equipment = ds.ContributingEquipmentSequence[-1]
    assert equipment.Manufacturer == "p2p-desktop"
    assert any("p2p-desktop" in str(v) for v in equipment.SoftwareVersions)
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109103"
    assert "ContributionDateTime" in equipment

    # one uncompressed RGB frame in the source's geometry, pixels as attacked
    assert "NumberOfFrames" not in ds and "FrameTime" not in ds and "FrameIncrementPointer" not in ds
    assert (ds.Rows, ds.Columns) == (src.Rows, src.Columns)
    assert ds.PhotometricInterpretation == "RGB" and ds.PlanarConfiguration == 0 and ds.BitsAllocated == 8
    expected = np.round(np.clip(result.adversarial, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(ds.pixel_array, expected)
    assert_valid_derived(source, path, tmp_path)


def test_export_of_unchanged_pixels_reproduces_the_source(pydicom_file, clf, outs_dir):
    """adversarial == original -> the exported frame equals the source's decoded frame."""
    from pydicom import dcmread

    for name in ("examples_rgb_color.dcm", "ExplVR_BigEnd.dcm"):
        source = pydicom_file(name)
        study = load(source)
        result = dataclasses.replace(attack_result(study, clf=clf), adversarial=study.image.copy())
        path = _export(result, study, outs_dir / name)
        assert np.array_equal(dcmread(path).pixel_array, dcmread(source).pixel_array)


def test_export_16_bit_grey_keeps_depth_and_becomes_secondary_capture(pydicom_file, clf, outs_dir, tmp_path):
    from pydicom import dcmread

    source = pydicom_file("MR_small.dcm")
    src = dcmread(source)
    study = load(source)
    result = attack_result(study, clf=clf)
    path = _export(result, study, outs_dir)
    ds = dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.ConversionType == "WSD"
    assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == \
           (src.BitsAllocated, src.BitsStored, src.PixelRepresentation)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    # the written values are the attacked image in the source's value range
    lo, hi = study.value_range
    assert np.array_equal(ds.pixel_array, np.round(lo + result.adversarial[..., 0] * (hi - lo)).astype(np.int64))
    unchanged = dataclasses.replace(result, adversarial=study.image.copy())
    assert np.array_equal(dcmread(_export(unchanged, study, outs_dir / "same")).pixel_array, src.pixel_array)
    assert_valid_derived(source, path, tmp_path)


def test_export_signed_ct_with_rescale(pydicom_file, clf, outs_dir, tmp_path):
    from pydicom import dcmread

    source = pydicom_file("CT_small.dcm")
    study = load(source)
    result = dataclasses.replace(attack_result(study, clf=clf), adversarial=study.image.copy())
    path = _export(result, study, outs_dir)
    assert np.array_equal(dcmread(path).pixel_array, dcmread(source).pixel_array)
    assert_valid_derived(source, path, tmp_path)


@pytest.fixture(scope="module")
def phantom_dicom(tmp_path_factory):
    from p2p_desktop import phantoms

    paths = phantoms.write_dicom_dataset(tmp_path_factory.mktemp("phantoms"), 1, 0, size=64)
    return Path(paths[0])


def test_export_phantom_and_monochrome1(phantom_dicom, clf, tmp_path):
    from pydicom import dcmread

    study = load(phantom_dicom)
    result = attack_result(study, clf=clf)
    path = _export(result, study, tmp_path / "out")
    ds = dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.6.1" and ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.BurnedInAnnotation == dcmread(phantom_dicom).BurnedInAnnotation

    # MONOCHROME1: written back as MONOCHROME1 with the source's stored values
    src = dcmread(phantom_dicom)
    src.PhotometricInterpretation = "MONOCHROME1"
    mono1 = tmp_path / "in" / "mono1.dcm"
    mono1.parent.mkdir()
    src.save_as(mono1)
    study1 = load(mono1)
    same = dataclasses.replace(attack_result(study1, clf=clf), adversarial=study1.image.copy())
    ds1 = dcmread(_export(same, study1, tmp_path / "out1"))
    assert ds1.PhotometricInterpretation == "MONOCHROME1"
    assert np.array_equal(ds1.pixel_array, src.pixel_array)
    assert_valid_derived(phantom_dicom, path, tmp_path)


def test_export_plain_image_as_secondary_capture(tmp_path, clf):
    from PIL import Image
    from pydicom import dcmread

    png = tmp_path / "in" / "plain.png"
    png.parent.mkdir()
    Image.fromarray((np.random.RandomState(0).rand(48, 64) * 255).astype(np.uint8)).save(png)
    study = load(png)
    result = attack_result(study, clf=clf)
    path = _export(result, study, tmp_path / "out")
    ds = dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.ConversionType == "WSD"
    assert str(ds.PatientName) == "" and "SourceImageSequence" not in ds
    assert np.array_equal(ds.pixel_array, np.round(result.adversarial[..., 0] * 255).astype(np.uint8))
    require_tool("dciodvfy")
    assert not dciodvfy_errors(path)


# -- de-identification -----------------------------------------------------------------------
IDENTIFYING = {"PatientName": "DOE^JANE", "PatientID": "PID-778899", "PatientBirthDate": "19700101",
               "AccessionNumber": "ACC-5566", "InstitutionName": "SAINT EXAMPLE HOSPITAL",
               "ReferringPhysicianName": "HOUSE^GREGORY", "StudyID": "STUDY-4242", "OtherPatientIDs": "OTHER-1122",
               "InstitutionAddress": "1 EXAMPLE ROAD", "OperatorsName": "SONOGRAPHER^ANNA",
               "StudyDate": "20240102", "SeriesDate": "20240102", "AcquisitionDate": "20240102",
               "ContentDate": "20240102", "StudyTime": "101010", "PatientAddress": "2 PRIVATE LANE",
               "StudyDescription": "BREAST US DOE", "DeviceSerialNumber": "SN-998877"}


@pytest.fixture
def identified_source(pydicom_file, tmp_path):
    """examples_rgb_color with the profile's attributes, private tags and nested UIDs filled in."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset

    ds = dcmread(pydicom_file("examples_rgb_color.dcm"))
    for kw, value in IDENTIFYING.items():
        setattr(ds, kw, value)
    ds.FrameOfReferenceUID = "1.2.3.4.5.6.7.8"
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = ds.StudyInstanceUID  # the same UID in two places
    ds.ReferencedInstanceSequence = [ref]  # not in the profile's table: kept, its UIDs remapped
    block = ds.private_block(0x0011, "EXAMPLE PRIVATE", create=True)
    block.add_new(0x01, "LO", "PRIVATE DOE DATA")
    item = Dataset()
    item.add_new(0x00130010, "LO", "NESTED PRIVATE")
    item.add_new(0x00131001, "LO", "NESTED DOE")
    item.CodeValue = "X"
    ds.AnatomicRegionSequence = [item]
    ds.BurnedInAnnotation = "YES"
    path = tmp_path / "in" / "identified.dcm"
    path.parent.mkdir()
    ds.save_as(path)
    return path


def test_deidentified_export_applies_basic_profile(identified_source, clf, tmp_path):
    from pydicom import dcmread

    src = dcmread(identified_source, stop_before_pixels=True)
    study = load(identified_source)
    result = attack_result(study, clf=clf)
    path = _export(result, study, tmp_path / "out", deidentify=True)
    ds = dcmread(path)
    raw = path.read_bytes()

    for kw in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "ReferringPhysicianName",
               "StudyID", "StudyDate", "StudyTime", "ContentDate"):
        assert kw in ds and str(ds[kw].value) == "", kw  # Z: present, empty (Type 2)
    for kw in ("InstitutionName", "InstitutionAddress", "OtherPatientIDs", "OperatorsName", "PatientAddress",
               "StudyDescription", "SeriesDate", "AcquisitionDate", "DeviceSerialNumber"):
        assert kw not in ds, kw  # X
    for value in IDENTIFYING.values():
        if len(value) > 8:
            assert value.encode() not in raw, value
    assert b"DOE" not in raw and b"PRIVATE" not in raw
    assert not any(e.tag.is_private for e in ds.iterall())
    # UIDs: new study, consistent remapping, source reference remapped too
    assert ds.StudyInstanceUID != src.StudyInstanceUID
    assert ds.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == ds.StudyInstanceUID
    assert ds.FrameOfReferenceUID != src.FrameOfReferenceUID
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID != src.SOPInstanceUID
    # the profile's own attributes
    assert ds.PatientIdentityRemoved == "YES"
    assert "Basic Profile" in ds.DeidentificationMethod
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert ds.DeidentificationMethodCodeSequence[0].CodingSchemeDesignator == "DCM"
    assert ds.BurnedInAnnotation == "YES"
    assert any(e.PurposeOfReferenceCodeSequence[0].CodeValue == "109104" for e in ds.ContributingEquipmentSequence)
    assert "ContributionDateTime" not in ds.ContributingEquipmentSequence[0]
    # the burned-in text warning
    assert any("BurnedInAnnotation is YES" in n for n in result.notes)
    assert_valid_derived(identified_source, path, tmp_path)


def test_burned_in_warning_every_time_unless_no(pydicom_file):
    from pydicom.dataset import Dataset

    from p2p_desktop.export.deidentify import apply_basic_profile, burned_in_warning

    for value, warns in (("YES", True), (None, True), ("NO", False), ("", True)):
        ds = Dataset()
        if value is not None:
            ds.BurnedInAnnotation = value
        assert (burned_in_warning(ds) is not None) == warns
        ds.PatientName = "DOE^J"
        assert bool(apply_basic_profile(ds).warnings) == warns


def test_basic_profile_action_table():
    from pydicom.datadict import tag_for_keyword as tag

    from p2p_desktop.export.deidentify import BASIC_PROFILE, action_for

    assert len(BASIC_PROFILE) > 300
    assert action_for(tag("PatientName")) == "Z" and action_for(tag("PatientID")) == "Z"
    assert action_for(tag("OtherPatientIDs")) == "X" and action_for(tag("PatientAge")) == "X"
    assert action_for(tag("StudyInstanceUID")) == "U" and action_for(tag("SOPInstanceUID")) == "U"
    assert action_for(tag("InstitutionName")) == "X"  # X/Z/D, Type 3 here
    assert action_for(tag("ContentDate")) == "Z"  # Z/D, Type 2C here
    assert action_for(tag("AcquisitionDate")) == "X" and action_for(tag("AcquisitionDate"), top_level=False) == "X"
    assert action_for(tag("Modality")) is None and action_for(tag("Rows")) is None
    assert action_for(0x00191001) == "X"  # private
    assert action_for(0x60003000) == "X" and action_for(0x60020010) == "X"  # overlay plane


# -- safe writing: rollback, disk full, refusal, collisions ------------------------------------
def test_failed_or_cancelled_export_leaves_nothing(pydicom_file, clf, tmp_path, monkeypatch, unchanged):
    from p2p_desktop.cancel import CancelToken
    from p2p_desktop.errors import Cancelled, OutputError
    from p2p_desktop.export.dicom import export_dicom
    from p2p_desktop.export.images import write_image_outputs
    from p2p_desktop.io.outputs import OutputSet

    source = pydicom_file("examples_rgb_color.dcm")
    study = load(source)
    result = attack_result(study, clf=clf)
    out = tmp_path / "out"

    real_fsync = os.fsync
    calls = {"n": 0}

    def full_disk(fd):
        calls["n"] += 1
        if calls["n"] >= 3:  # PNG and .npy fit; the DICOM does not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with unchanged(source.parent):
        with pytest.raises(OutputError, match="disk full"):
            with OutputSet(out, [source]) as outs:
                write_image_outputs(result, study, outs)
                export_dicom(result, study, outs)
    assert not out.exists()
    monkeypatch.setattr(os, "fsync", real_fsync)

    token = CancelToken()
    out.mkdir()
    with pytest.raises(Cancelled):
        with OutputSet(out, [source], cancel=token) as outs:
            write_image_outputs(result, study, outs)
            token.cancel()
            export_dicom(result, study, outs)
    assert list(out.iterdir()) == []


def test_export_refuses_the_input_folder_and_never_overwrites(tmp_path, pydicom_file, clf):
    from p2p_desktop.errors import OutputError
    from p2p_desktop.io.outputs import OutputSet

    source = tmp_path / "in" / "us.dcm"
    source.parent.mkdir()
    shutil.copy(pydicom_file("examples_rgb_color.dcm"), source)
    with pytest.raises(OutputError, match="inside the input"):
        OutputSet(source.parent / "adversarial", [source])
    study = load(source)
    result = attack_result(study, clf=clf)
    first = _export(result, study, tmp_path / "out")
    second = _export(result, study, tmp_path / "out")
    assert first != second and first.exists() and second.exists()
    assert second.name == first.stem + "-1.dcm"
