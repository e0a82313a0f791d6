"""Synthetic breast-ultrasound phantoms: API, determinism, class statistics, speckle physics,
DICOM files (pydicom, SimpleITK, dciodvfy), BUSI-layout folders and the ``phantoms`` CLI."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, gaussian_filter

from p2p_desktop.cancel import CancelToken
from p2p_desktop.cli.main import main
from p2p_desktop.errors import Cancelled, InputError, OutputError
from p2p_desktop.phantoms import (
    CLASSES,
    Phantom,
    class_prompt,
    generate_batch,
    generate_phantom,
    write_dicom_dataset,
    write_png_dataset,
)

# Seeds 3000..3044 at 128 px: 15 phantoms per class, generated once for the statistics tests.
STAT_SEEDS = range(3000, 3045)


@pytest.fixture(scope="module")
def cohort() -> list[Phantom]:
    return generate_batch(STAT_SEEDS, size=128)


def _bbox(mask: np.ndarray):
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return rows[0], rows[-1], cols[0], cols[-1]


# --------------------------------------------------------------------------- API

def test_phantom_fields_and_types():
    ph = generate_phantom(11, "benign")
    assert isinstance(ph, Phantom)
    assert ph.image.shape == (128, 128) and ph.image.dtype == np.float32
    assert 0.0 <= float(ph.image.min()) and float(ph.image.max()) <= 1.0
    assert ph.mask.dtype == bool and ph.mask.shape == (128, 128) and ph.mask.any()
    assert ph.label == "benign" and ph.seed == 11
    assert ph.prompt.startswith("ultrasound image of benign tumor in breast, ")
    assert ph.prompt == ", ".join([class_prompt("benign"), *ph.descriptors])
    assert ph.descriptors[0] in ("oval", "round", "irregular")
    assert ph.descriptors[1] in ("parallel", "not parallel")
    json.dumps(ph.params)  # JSON-serialisable
    assert ph.params["lesion"]["width_mm"] > 0


def test_normal_phantom_has_empty_mask_and_tissue_prompt():
    ph = generate_phantom(5, "normal")
    assert not ph.mask.any()
    assert ph.prompt.startswith("ultrasound image of no tumor in breast, ")
    assert any("echotexture" in d for d in ph.descriptors)
    assert "lesion" not in ph.params


def test_class_prompt():
    assert class_prompt("benign") == "ultrasound image of benign tumor in breast"
    assert class_prompt("malignant") == "ultrasound image of malignant tumor in breast"
    assert class_prompt("normal") == "ultrasound image of no tumor in breast"
    with pytest.raises(InputError):
        class_prompt("cancer")


def test_label_from_seed_is_balanced_thirds():
    labels = [generate_phantom(s, size=32).label for s in range(30, 39)]
    assert labels == [CLASSES[s % 3] for s in range(30, 39)]
    assert {c: labels.count(c) for c in CLASSES} == {c: 3 for c in CLASSES}


@pytest.mark.parametrize("kwargs", [dict(seed=1, label="cancer"), dict(seed=1, size=8), dict(seed=1, size=4096),
                                    dict(seed=-1), dict(seed=1.5), dict(seed=True), dict(seed=1, size=128.0)])
def test_bad_arguments_raise_input_error(kwargs):
    with pytest.raises(InputError):
        generate_phantom(**kwargs)


def test_generate_batch_labels():
    batch = generate_batch([1, 2, 3], labels=["normal", None, "malignant"], size=64)
    assert [p.label for p in batch] == ["normal", CLASSES[2 % 3], "malignant"]
    assert [p.label for p in generate_batch([4, 5], labels="benign", size=64)] == ["benign", "benign"]
    with pytest.raises(InputError):
        generate_batch([1, 2], labels=["benign"])


# --------------------------------------------------------------------------- determinism

def test_same_seed_same_phantom_different_seed_different():
    a, b = generate_phantom(42), generate_phantom(42)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.params == b.params and a.prompt == b.prompt
    assert generate_phantom(42).image.tobytes() == generate_phantom(42, CLASSES[42 % 3]).image.tobytes()
    c = generate_phantom(45)  # same class as 42
    assert not np.array_equal(a.image, c.image)
    assert np.abs(a.image - c.image).mean() > 0.05


def test_anatomy_is_grid_independent_and_shared_across_labels():
    small, large = generate_phantom(8, "malignant", 128), generate_phantom(8, "malignant", 256)
    ps, pl = small.params, large.params
    assert (ps["size"], pl["size"]) == (128, 256)
    for key in ("tissue", "imaging", "field_of_view_mm", "chest_wall"):  # same breast, same probe
        assert ps[key] == pl[key]
    les_s, les_l = dict(ps["lesion"]), dict(pl["lesion"])  # same mass, placed on layer curves
    np.testing.assert_allclose(les_s.pop("center_mm"), les_l.pop("center_mm"), atol=0.3)
    assert les_s == les_l
    # the mask covers the same physical area at both sizes (to within its boundary pixels)
    assert abs(small.mask.mean() - large.mask.mean()) < 0.2 * large.mask.mean()
    # the breast (tissue, probe) depends on the seed only; the mass on (seed, label)
    benign, normal = generate_phantom(8, "benign"), generate_phantom(8, "normal")
    assert benign.params["tissue"] == normal.params["tissue"] == small.params["tissue"]
    far = ~binary_dilation(benign.mask | small.mask, iterations=10)
    far[:, :] &= np.arange(128)[:, None] < _bbox(benign.mask)[0] - 4  # above the mass: no posterior effect
    if far.sum() > 200:
        np.testing.assert_allclose(benign.image[far], normal.image[far], atol=1e-4)


# --------------------------------------------------------------------------- class statistics

def test_orientation_statistics(cohort):
    ratios = {"benign": [], "malignant": []}
    for ph in cohort:
        if ph.label in ratios:
            r0, r1, c0, c1 = _bbox(ph.mask)
            ratios[ph.label].append((r1 - r0 + 1) / (c1 - c0 + 1))
    assert len(ratios["benign"]) == len(ratios["malignant"]) == 15
    assert np.mean(ratios["malignant"]) > 1.0, "malignant masses should be taller than wide on average"
    assert np.mean(ratios["benign"]) < 0.9, "benign masses should be wider than tall on average"
    assert np.mean(ratios["malignant"]) > np.mean(ratios["benign"]) + 0.25


def test_normal_masks_empty_lesion_masks_present(cohort):
    for ph in cohort:
        assert ph.mask.any() == (ph.label != "normal"), ph.seed
        if ph.label != "normal":
            assert 0.002 < ph.mask.mean() < 0.4


def test_lesions_darker_than_surroundings(cohort):
    darker = []
    for ph in cohort:
        if ph.label == "normal":
            continue
        ring = binary_dilation(ph.mask, iterations=6) & ~binary_dilation(ph.mask, iterations=2)
        darker.append(ph.image[ph.mask].mean() < ph.image[ring].mean())
    assert np.mean(darker) >= 0.9


def _below_minus_beside(ph: Phantom) -> float:
    """Mean grey in a band under the mass minus the mean at the same depth beside it."""
    r0, r1, c0, c1 = _bbox(ph.mask)
    h, w = r1 - r0 + 1, c1 - c0 + 1
    top, bottom = r1 + 2, min(ph.mask.shape[0], r1 + 2 + max(6, h // 2))
    below = ph.image[top:bottom, c0 + w // 4: c1 - w // 4 + 1]
    left = ph.image[top:bottom, max(0, c0 - w // 2): max(0, c0 - 2)]
    right = ph.image[top:bottom, c1 + 3: c1 + w // 2 + 1]
    beside = np.concatenate([left.ravel(), right.ravel()])
    return float(below.mean() - beside.mean())


def test_posterior_shadowing_and_enhancement(cohort):
    shadow = [_below_minus_beside(p) for p in cohort if "posterior shadowing" in p.descriptors]
    enhance = [_below_minus_beside(p) for p in cohort
               if "posterior enhancement" in p.descriptors and p.label == "benign"]
    assert len(shadow) >= 5 and len(enhance) >= 4
    assert np.mean(shadow) < -0.05 and np.mean(np.array(shadow) < 0) >= 0.8
    assert np.mean(enhance) > 0.05 and np.mean(np.array(enhance) > 0) >= 0.8
    cysts = [p for p in generate_batch(range(3000, 3060, 3), labels="benign") if "anechoic" in p.descriptors
             and "posterior enhancement" in p.descriptors]
    assert len(cysts) >= 3 and all(_below_minus_beside(p) > 0 for p in cysts)
    malignant_shadow = [p for p in cohort if p.label == "malignant" and "posterior shadowing" in p.descriptors]
    assert len(malignant_shadow) >= 5


def test_descriptors_follow_birads_by_class(cohort):
    benign = [p for p in cohort if p.label == "benign"]
    malignant = [p for p in cohort if p.label == "malignant"]
    assert np.mean(["circumscribed" in p.descriptors for p in benign]) >= 0.8
    not_circ = ("indistinct", "angular", "microlobulated", "spiculated")
    assert all(any(m in p.descriptors for m in not_circ) for p in malignant)
    assert np.mean(["irregular" in p.descriptors for p in malignant]) >= 0.6
    for p in cohort:
        assert all(d in p.prompt for d in p.descriptors)


# --------------------------------------------------------------------------- speckle

def test_speckle_envelope_is_rayleigh_when_fully_developed():
    from p2p_desktop.phantoms.anatomy import Grid
    from p2p_desktop.phantoms.simulate import speckle_envelope

    grid = Grid(256, 256, 40.0, 40.0)
    rng = np.random.default_rng(0)
    env = speckle_envelope(np.ones((256, 256)), np.ones((256, 256)), grid, rng)
    snr = env.mean() / env.std()
    assert 1.75 < snr < 2.05  # Rayleigh: sqrt(pi / (4 - pi)) = 1.91
    assert abs(float(np.mean(env.astype(np.float64) ** 2)) - 1.0) < 0.1  # unit-energy PSF
    sparse = speckle_envelope(np.ones((256, 256)), np.full((256, 256), 0.02), grid, rng)
    assert sparse.mean() / sparse.std() < snr - 0.2  # few scatterers per cell: not fully developed


def test_images_have_speckle_texture_not_cartoons(cohort):
    for ph in cohort[:9]:
        fine = ph.image - gaussian_filter(ph.image, 2.0)
        assert fine.std() > 0.04, ph.seed
        # the fine texture is correlated over about a PSF width: grains, not pixel noise
        dx = np.corrcoef(fine[:, :-1].ravel(), fine[:, 1:].ravel())[0, 1]
        assert 0.2 < dx < 0.99


def test_generation_is_fast():
    generate_phantom(0)
    t = time.process_time()
    for s in range(10):
        generate_phantom(s)
    per_image = (time.process_time() - t) / 10
    assert per_image < 0.15, f"{per_image * 1000:.0f} ms per 128 px phantom"


# --------------------------------------------------------------------------- DICOM

def test_dicom_phantoms_reread_by_pydicom_and_simpleitk(tmp_path):
    import pydicom
    import SimpleITK as sitk

    paths = write_dicom_dataset(tmp_path / "dcm", 3, 20, size=96)
    assert len(paths) == 3
    for path in paths:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.6.1" and ds.Modality == "US"
        assert (ds.Rows, ds.Columns) == (96, 96)
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 8 and ds.SamplesPerPixel == 1
        assert str(ds.PatientName).startswith("PHANTOM^SYNTHETIC^") and ds.PatientID.startswith("PHANTOM-")
        assert ds.BodyPartExamined == "BREAST" and ds.BurnedInAnnotation == "NO"
        seed = int(ds.PatientID.split("-")[1])
        ph = generate_phantom(seed, size=96)
        assert f"label={ph.label}" in ds.ImageComments and ph.descriptors[0] in ds.ImageComments
        assert np.array_equal(ds.pixel_array, np.rint(ph.image.astype(np.float64) * 255).astype(np.uint8))
        region = ds.SequenceOfUltrasoundRegions[0]
        assert region.PhysicalUnitsXDirection == 3 and region.PhysicalUnitsYDirection == 3
        assert region.PhysicalDeltaY == pytest.approx(ph.params["field_of_view_mm"][0] / 10 / 96, rel=1e-3)
        img = sitk.ReadImage(str(path))
        assert sitk.GetArrayFromImage(img).squeeze().shape == (96, 96)


def test_dicom_is_reproducible_and_never_overwrites(tmp_path):
    from p2p_desktop.phantoms.dicom_writer import phantom_dicom_bytes, write_phantom_dicom

    ph = generate_phantom(7, size=64)
    assert phantom_dicom_bytes(ph) == phantom_dicom_bytes(generate_phantom(7, size=64))
    other = phantom_dicom_bytes(generate_phantom(8, size=64))
    path = write_phantom_dicom(ph, tmp_path / "a.dcm")
    before = path.read_bytes()
    with pytest.raises(OutputError):
        write_phantom_dicom(generate_phantom(8, size=64), path)
    assert path.read_bytes() == before != other
    assert [p.name for p in tmp_path.iterdir()] == ["a.dcm"]  # no temp file left


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_dciodvfy_reports_no_errors(tmp_path):
    from p2p_desktop.phantoms.dicom_writer import write_phantom_dicom

    for seed, label in ((1, "benign"), (2, "malignant"), (3, "normal")):
        path = write_phantom_dicom(generate_phantom(seed, label, 64), tmp_path / f"{label}.dcm")
        proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        report = proc.stdout + proc.stderr
        assert "Error" not in report, report
        assert "Warning" not in report, report


# --------------------------------------------------------------------------- BUSI folders

def test_png_dataset_busi_layout(tmp_path):
    from PIL import Image

    out = tmp_path / "busi"
    images = write_png_dataset(out, 6, 100, size=64)
    assert len(images) == 6
    assert sorted(p.name for p in out.iterdir()) == ["benign", "malignant", "normal",
                                                     "phantoms_seed100_n6.csv", "phantoms_seed100_n6.json"]
    for img in images:
        label = img.parent.name
        mask = img.with_name(img.stem + "_mask.png")
        assert mask.exists() and img.name.startswith(label)
        a, m = np.asarray(Image.open(img)), np.asarray(Image.open(mask))
        assert a.shape == m.shape == (64, 64) and a.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 255}
        assert m.any() == (label != "normal")
    manifest = json.loads((out / "phantoms_seed100_n6.json").read_text())
    assert manifest["counts"] == {"benign": 2, "malignant": 2, "normal": 2}
    rec = manifest["phantoms"][0]
    assert rec["seed"] == 100 and rec["prompt"] == generate_phantom(100, size=64).prompt
    rows = list(csv.DictReader((out / "phantoms_seed100_n6.csv").open()))
    assert len(rows) == 6 and rows[0]["label"] == CLASSES[100 % 3]
    # the project's own folder scanner sees the phantoms and their masks
    from p2p_desktop.io.dataset import scan_folder

    scan = scan_folder(out)
    assert len(scan.entries) == 6 and all(e.mask_path is not None for e in scan.entries)


def test_dataset_never_overwrites_and_cleans_up(tmp_path, unchanged):
    out = tmp_path / "busi"
    write_png_dataset(out, 3, 0, size=48)
    with unchanged(out):
        with pytest.raises(OutputError, match="already exists"):
            write_png_dataset(out, 4, 2, size=48)  # seed 2 is taken
    write_png_dataset(out, 3, 3, size=48)  # new names in the same folder are fine
    # a cancelled run leaves nothing behind
    from p2p_desktop.phantoms.dataset import write_dataset

    token = CancelToken()
    fresh = tmp_path / "cancelled"
    with pytest.raises(Cancelled):
        write_dataset(fresh, 5, 0, 48, "png", progress=lambda done, total: token.cancel(), cancel=token)
    assert not fresh.exists()


# --------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("argv", [
    ["--n", "0", "--seed", "1"], ["--n", "2", "--seed", "-3"], ["--n", "2", "--seed", "1", "--size", "7"],
    ["--n", "2", "--seed", "1", "--format", "jpg"], ["--n", "two", "--seed", "1"]])
def test_cli_bad_arguments_exit_2(tmp_path, capsys, argv):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(main(["phantoms", *argv, "--out", str(out)]))
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("p2p-desktop: error:") and err.count("\n") == 1
    assert not out.exists()


def test_cli_writes_and_reports_json(tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["phantoms", "--n", "4", "--seed", "9", "--out", str(out), "--size", "48", "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["counts"] == {"benign": 2, "malignant": 1, "normal": 1}
    kinds = [o["kind"] for o in doc["outputs"]]
    assert kinds.count("png") == 4 and kinds.count("mask") == 4 and kinds.count("manifest") == 2
    assert "benign 2" in captured.err
    # again into the same files: refused, exit 2
    assert main(["phantoms", "--n", "4", "--seed", "9", "--out", str(out), "--size", "48"]) == 2
    assert main(["phantoms", "--n", "2", "--seed", "30", "--out", str(out), "--size", "48",
                 "--format", "dcm"]) == 0
    assert len(list(out.rglob("*.dcm"))) == 2
