"""``reader-study make|import|score|check`` (issue 29): a 20-case study made from an
``evaluate --export-dicom`` folder of DICOM phantoms, read by SIMULATED readers
(scripts/simulate_readers.py), imported and scored; the blinded copies differ in nothing but
UIDs, case number and pixels, and any other header difference is refused; the key never lies in
the study; answers are validated line by line and never overwritten; every step is audited."""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from p2p_desktop.cli.main import main
from p2p_desktop.readerstudy import check_blinded, load_answers, save_answers
from p2p_desktop.readerstudy.answers import Answer, reader_order
from p2p_desktop.readerstudy.blind import ALLOWED_DIFFERENCES

pytestmark = pytest.mark.timeout(600)
CLASSIFIER = "demo-squeezenet1_1"
ROOT = Path(__file__).resolve().parents[1]


def _simulator():
    spec = importlib.util.spec_from_file_location("simulate_readers", ROOT / "scripts" / "simulate_readers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.simulate


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("P2P_DESKTOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    """An evaluate --export-dicom folder over 14 DICOM phantoms (FGSM, demo SqueezeNet)."""
    import os

    root = tmp_path_factory.mktemp("rs")
    old = {k: os.environ.get(k) for k in ("P2P_DESKTOP_HOME", "P2P_DESKTOP_AUDIT_LOG", "TORCH_HOME")}
    os.environ.update(P2P_DESKTOP_HOME=str(root / "home"), P2P_DESKTOP_AUDIT_LOG=str(root / "audit.jsonl"),
                      TORCH_HOME=str(root / "th"))
    try:
        assert main(["phantoms", "--n", "14", "--seed", "2", "--out", str(root / "ph"), "--format", "dcm",
                     "--size", "128"]) == 0
        assert main(["evaluate", str(root / "ph"), "--attacks", "fgsm", "--classifiers", CLASSIFIER, "--out",
                     str(root / "ev"), "--device", "cpu", "--export-dicom"]) == 0
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return root / "ev"


def _audit(tmp_path: Path) -> list[dict]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _make(evaluated, tmp_path, *extra, capsys=None) -> tuple[Path, Path]:
    study, key = tmp_path / "study", tmp_path / "private" / "KEY.json"
    assert main(["reader-study", "make", str(evaluated), "--out", str(study), "--key", str(key), *extra]) == 0
    return study, key


def test_study_of_20_cases_is_made_read_and_scored(evaluated, tmp_path, capsys):
    study, key = _make(evaluated, tmp_path, "--cases", "20", "--readers", "3", "--seed", "5")
    meta = json.loads((study / "study.json").read_text())
    keydoc = json.loads(key.read_text())
    assert len(meta["cases"]) == 20 and len(keydoc["cases"]) == 20
    assert sum(c["altered"] for c in keydoc["cases"]) == 10  # each adversarial image with its original
    assert {c["case"] for c in keydoc["cases"]} == {c["case"] for c in meta["cases"]}
    # one shuffled order per reader, each a permutation of the cases
    assert len(meta["orders"]) == 3 and all(sorted(o) == sorted(c["case"] for c in meta["cases"])
                                            for o in meta["orders"])
    assert len({tuple(o) for o in meta["orders"]}) == 3
    # nothing in the study folder names the attack, the classifier, a source or the truth
    for p in study.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            for secret in (b"fgsm", b"squeezenet", b"ADVERSARIAL", b"PHANTOM", b"benign_0", b"malignant_0",
                           b"altered_side", b"\"altered\": true"):
                assert secret not in data, (p, secret)
    # every image header identical apart from UIDs, case number and pixels; same time stamps
    files = sorted((study / "cases").glob("*.dcm"))
    assert len(files) == 20
    assert check_blinded({f.name: pydicom.dcmread(f) for f in files}) == []
    assert len({f.stat().st_mtime for f in files}) == 1
    assert main(["reader-study", "check", str(study)]) == 0
    # de-identified with fresh UIDs: no source UID or identity survives
    src = pydicom.dcmread(next((evaluated.parent / "ph").glob("*/*.dcm")))
    case = pydicom.dcmread(files[0])
    assert case.StudyInstanceUID != src.StudyInstanceUID and "PHANTOM" not in str(case.PatientName)
    assert case.PatientID in {c["case"] for c in meta["cases"]} and case.PatientIdentityRemoved == "YES"
    # SIMULATED readers answer by CSV, imported
    capsys.readouterr()
    for i, path in enumerate(_simulator()(study, key, tmp_path / "sim", readers=3, seed=1), 1):
        assert main(["reader-study", "import", str(study), str(path), "--reader", f"sim{i}"]) == 0
    capsys.readouterr()
    assert main(["reader-study", "score", str(study), "--key", str(key), "--json", "--report", "html,pdf"]) == 0
    scores = json.loads(capsys.readouterr().out)
    rows = {r["attack"]: r for r in scores["attacks"]}
    assert set(rows) == {"(originals)", "fgsm"}
    fgsm = rows["fgsm"]
    for name in ("accuracy", "auc", "finding_change_rate"):
        assert 0 <= fgsm[name] <= 1
        lo, hi = fgsm[f"{name}_ci95"]
        assert lo <= fgsm[name] <= hi
    assert rows["(originals)"]["accuracy"] is not None and rows["(originals)"]["auc"] is None
    assert scores["agreement"]["altered"]["fleiss"] is not None and scores["agreement"]["altered"]["readers"] == 3
    reports = [Path(p) for p in scores["reports"]]
    assert {p.suffix for p in reports} == {".html", ".pdf"} and all(p.parent == key.parent for p in reports)
    assert reports[1].read_bytes().startswith(b"%PDF")
    assert "fgsm" in reports[0].read_text()
    # the audit log: make, three imports, score
    actions = [r["data"]["action"] for r in _audit(tmp_path) if r["event"] == "reader-study"]
    assert actions == ["make", "import", "import", "import", "score"]


def test_scores_agree_with_scikit_learn_on_known_answers(evaluated, tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    study, key = _make(evaluated, tmp_path, "--cases", "20", "--seed", "1")
    keydoc = json.loads(key.read_text())
    rng = np.random.default_rng(0)
    answers, labels, scores = [], [], []
    for c in keydoc["cases"]:
        yes = bool(rng.random() < 0.6)
        conf = int(rng.integers(1, 6))
        answers.append(Answer(c["case"], yes, conf, c["truth"], seconds=2.0))
        labels.append(int(c["altered"]))
        scores.append(conf if yes else -conf)
    save_answers(study, "r1", answers, source="test", order=0)
    capsys.readouterr()
    assert main(["reader-study", "score", str(study), "--key", str(key), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    fgsm = next(r for r in out["attacks"] if r["attack"] == "fgsm")
    assert fgsm["auc"] == pytest.approx(roc_auc_score(labels, scores))
    correct = [a.altered == bool(c["altered"]) for a, c in zip(answers, keydoc["cases"])]
    assert fgsm["accuracy"] == pytest.approx(np.mean(correct))
    assert fgsm["finding_change_rate"] == 0.0 and fgsm["seconds_mean"] == 2.0


def test_pair_design_two_alternative_forced_choice(evaluated, tmp_path, capsys):
    study, key = _make(evaluated, tmp_path, "--design", "pair", "--readers", "2", "--seed", "3")
    meta = json.loads((study / "study.json").read_text())
    keydoc = json.loads(key.read_text())
    assert all(len(c["files"]) == 2 for c in meta["cases"])
    assert {c["altered_side"] for c in keydoc["cases"]} <= {"A", "B"}
    first = keydoc["cases"][0]
    a, b = (pydicom.dcmread(study / first["files"][s]) for s in "AB")
    assert a.PatientID == b.PatientID and check_blinded({"A": a, "B": b}) == []
    assert a.PixelData != b.PixelData
    assert main(["reader-study", "check", str(study)]) == 0
    for i, path in enumerate(_simulator()(study, key, tmp_path / "sim", readers=2, seed=2), 1):
        assert main(["reader-study", "import", str(study), str(path), "--reader", f"r{i}"]) == 0
    capsys.readouterr()
    assert main(["reader-study", "score", str(study), "--key", str(key), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["attacks"]
    assert row["attack"] == "fgsm" and 0 <= row["accuracy"] <= 1 and row["finding_change_rate"] is None
    assert out["agreement"]["altered"]["cohen"] is not None


def _elements(ds, prefix=()):
    for elem in ds:
        if elem.keyword in ALLOWED_DIFFERENCES:
            continue
        yield prefix + (elem.tag,), elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                yield from _elements(item, prefix + (elem.tag, i))


def test_check_refuses_any_header_difference_but_pixels(evaluated, tmp_path, capsys):
    """Every header attribute of a blinded copy, changed in one case, is named; so is any
    attribute added (ImageType ORIGINAL, a derivation text, a source reference, a description)."""
    study, _ = _make(evaluated, tmp_path, "--cases", "4", "--seed", "2")
    files = sorted((study / "cases").glob("*.dcm"))
    sets = {f.name: pydicom.dcmread(f) for f in files}
    assert check_blinded(sets) == []
    victim = files[1].name
    for (tag,), elem in ((p, e) for p, e in _elements(sets[victim]) if len(p) == 1):
        changed = {k: copy.deepcopy(v) for k, v in sets.items()}
        e = changed[victim][tag]
        e.value = (e.value + 1) if isinstance(e.value, int) else (["X"] if e.VM > 1 else "X")
        problems = check_blinded(changed)
        assert len(problems) == 1 and (elem.keyword or str(tag)) in problems[0], (elem.keyword, problems)
    for name, value in (("ImageType", ["ORIGINAL", "PRIMARY"]), ("DerivationDescription", "adversarial fgsm"),
                        ("SeriesDescription", "ADVERSARIAL RESEARCH ONLY fgsm"), ("ContentDate", "20260101"),
                        ("BitsStored", 7), ("Rows", 64)):
        changed = {k: copy.deepcopy(v) for k, v in sets.items()}
        setattr(changed[victim], name, value)
        assert any(name in p for p in check_blinded(changed)), name
    # a SourceImageSequence added to one file on disk: `check` refuses, exit 2, names it
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(files[2])
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = "1.2.3"
    ds.SourceImageSequence = Sequence([ref])
    ds.save_as(files[2])
    capsys.readouterr()
    assert main(["reader-study", "check", str(study)]) == 2
    assert "SourceImageSequence" in capsys.readouterr().err


def _fake_attack_folder(evaluated: Path, folder: Path, change) -> Path:
    """An attack output folder whose adversarial DICOM differs from its original by ``change``."""
    folder.mkdir(parents=True)
    orig = next((evaluated.parent / "ph").glob("benign/*.dcm"))
    ds = pydicom.dcmread(orig)
    change(ds)
    ds.save_as(folder / "x_fgsm_adv.dcm")
    (folder / "x_fgsm_result.json").write_text(json.dumps(
        {"input": str(orig), "success": True, "attack": "fgsm", "classifier": {"name": CLASSIFIER},
         "true_label": "benign"}))
    return folder


def _sixteen_bit(ds):
    arr = ds.pixel_array.astype(np.uint16) * 256
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelData = arr.tobytes()


def _smaller(ds):
    arr = ds.pixel_array[:64, :64].copy()
    ds.Rows, ds.Columns = 64, 64
    ds.PixelData = arr.tobytes()


def _colour(ds):
    arr = np.repeat(ds.pixel_array[..., None], 3, axis=2)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = arr.tobytes()


def _burned_in(ds):
    ds.BurnedInAnnotation = "YES"


@pytest.mark.parametrize("change,word", [(_sixteen_bit, "Bits"), (_smaller, "Rows"), (_colour, "Photometric"),
                                         (_burned_in, "BurnedInAnnotation")])
def test_make_refuses_sources_that_would_unblind(evaluated, tmp_path, capsys, change, word):
    src = _fake_attack_folder(evaluated, tmp_path / "att", change)
    study, key = tmp_path / "study", tmp_path / "KEY.json"
    capsys.readouterr()
    assert main(["reader-study", "make", str(src), "--out", str(study), "--key", str(key)]) == 2
    err = capsys.readouterr().err
    assert "unblind" in err and word in err and err.count("\n") == 1
    assert not key.exists() and not (study / "study.json").exists()
    assert not [r for r in _audit(tmp_path) if r["event"] == "reader-study"]


def test_the_key_stays_outside_and_is_never_overwritten(evaluated, tmp_path, capsys):
    study = tmp_path / "study"
    assert main(["reader-study", "make", str(evaluated), "--out", str(study), "--key", str(study / "KEY.json")]) == 2
    assert "inside the study folder" in capsys.readouterr().err and not study.exists()
    key = tmp_path / "KEY.json"
    key.write_text("{}")
    assert main(["reader-study", "make", str(evaluated), "--out", str(study), "--key", str(key)]) == 2
    assert "never overwritten" in capsys.readouterr().err and key.read_text() == "{}"
    study2, key2 = _make(evaluated, tmp_path)
    assert (key2.stat().st_mode & 0o077) == 0  # private
    assert main(["reader-study", "make", str(evaluated), "--out", str(study2), "--key", str(tmp_path / "k3.json")]) == 2
    assert "not empty" in capsys.readouterr().err
    # the report is refused inside the study (it would unblind)
    save_answers(study2, "r", [Answer(json.loads((study2 / "study.json").read_text())["cases"][0]["case"],
                                      True, 3, "benign")], source="test")
    assert main(["reader-study", "score", str(study2), "--key", str(key2), "--report", "html",
                 "--report-dir", str(study2 / "rep")]) == 2
    # a key of another study is refused
    other = tmp_path / "o"
    _make(evaluated, other)
    assert main(["reader-study", "score", str(study2), "--key", str(other / "private" / "KEY.json")]) == 2
    assert "another study" in capsys.readouterr().err


def test_import_validates_each_line_and_keeps_every_version(evaluated, tmp_path, capsys):
    study, _ = _make(evaluated, tmp_path, "--cases", "6", "--seed", "4")
    cases = [c["case"] for c in json.loads((study / "study.json").read_text())["cases"]]
    template = list(csv.reader(open(study / "answers-template.csv")))
    assert template[0] == ["case", "altered", "confidence", "finding", "birads"]
    assert sorted(r[0] for r in template[1:]) == sorted(cases)
    bad = tmp_path / "bad.csv"
    bad.write_text("case,altered,confidence,finding,birads\n"
                   f"{cases[0]},yes,3,benign,\n"
                   "999999x,yes,3,benign,\n"
                   f"{cases[0]},no,2,normal,\n"
                   f"{cases[1]},perhaps,3,benign,\n"
                   f"{cases[2]},yes,7,benign,\n"
                   f"{cases[3]},no,2,maybe,\n"
                   f"{cases[4]},no,2,normal,6\n")
    capsys.readouterr()
    assert main(["reader-study", "import", str(study), str(bad), "--reader", "ann"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 6, lines
    for text in ("unknown case", "answered twice", "altered 'perhaps'", "confidence '7'", "finding 'maybe'",
                 "birads '6'"):
        assert sum(text in line for line in lines) == 1, text
    assert not (study / "answers").exists()
    good = tmp_path / "good.csv"
    good.write_text(f"case,altered,confidence,finding\n{cases[0]},yes,3,benign\n{cases[1]},no,5,normal\n")
    assert main(["reader-study", "import", str(study), str(good), "--reader", "ann"]) == 0
    good.write_text(f"case,altered,confidence,finding\n{cases[0]},no,4,malignant\n")
    assert main(["reader-study", "import", str(study), str(good), "--reader", "ann"]) == 0
    files = sorted((study / "answers" / "ann").iterdir())
    assert [f.name for f in files] == ["000001.json", "000002.json"]  # a new version is a new file
    latest = load_answers(study)["ann"]
    assert latest[cases[0]].finding == "malignant" and latest[cases[1]].finding == "normal"
    assert main(["reader-study", "import", str(study), str(good), "--reader", "../x"]) == 2


def test_a_reader_resumes_in_the_same_order(evaluated, tmp_path):
    study, _ = _make(evaluated, tmp_path, "--cases", "6", "--readers", "2", "--seed", "4")
    meta = json.loads((study / "study.json").read_text())
    slot, order = reader_order(study, meta, "ann")
    assert slot == 0 and order == meta["orders"][0]
    save_answers(study, "ann", [Answer(order[0], False, 2, "normal", seconds=1.5)], source="app", order=slot)
    assert reader_order(study, meta, "bob")[0] == 1
    assert reader_order(study, meta, "ann") == (0, order)
    assert list(load_answers(study)["ann"]) == [order[0]]


# -- a real node: the study sent to Orthanc, and what its web viewer shows ----------------------
@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    from tests.orthanc import WEBVIEWER_PLUGIN, orthanc_server, require_orthanc

    require_orthanc()
    plugins = (WEBVIEWER_PLUGIN,) if Path(WEBVIEWER_PLUGIN).is_file() else ()
    with orthanc_server(tmp_path_factory.mktemp("orthanc-rs"), extra_plugins=plugins) as server:
        yield server


def test_make_sends_the_blinded_cases_without_the_key(evaluated, tmp_path, capsys, orthanc):
    from tests.orthanc import OUR_AET

    assert main(["pacs", "config", "--ae-title", OUR_AET, "--storage-port", str(orthanc.storage_port)]) == 0
    study, key = tmp_path / "study", tmp_path / "KEY.json"
    capsys.readouterr()
    assert main(["reader-study", "make", str(evaluated), "--out", str(study), "--key", str(key), "--cases", "6",
                 "--send-dicom", orthanc.address, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sent"]["instances"] == 6
    for f in (study / "cases").glob("*.dcm"):
        iid = orthanc.find_instance(pydicom.dcmread(f).SOPInstanceUID)
        assert iid
        tags = orthanc.tags(iid)
        assert tags["SeriesDescription"] == "Reader study case" and "DerivationDescription" in tags
    events = [r["event"] for r in _audit(tmp_path)]
    assert events[-2:] == ["reader-study", "pacs-send"]


def _rendered(orthanc, instance: dict, out: Path) -> np.ndarray:
    """The series of ``instance`` as Orthanc's web viewer shows it in headless Chromium (grey)."""
    import subprocess

    from PIL import Image

    url = f"http://127.0.0.1:{orthanc.http_port}/web-viewer/app/viewer.html?series={instance['ParentSeries']}"
    subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={out.parent / 'chromium-profile'}", "--window-size=800,800",
                    "--virtual-time-budget=15000", f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(out).convert("L"), dtype=float)


_REGION = (slice(100, 700), slice(60, 740))  # the centre of the screenshot: no overlay text


def _place(shot: np.ndarray, pixels: np.ndarray, scale: float, windowed: bool) -> np.ndarray:
    from skimage.registration import phase_cross_correlation
    from skimage.transform import rescale

    img = np.clip((pixels - 64.0) * 2.0, 0, 255) if windowed else pixels
    big = rescale(img, scale, order=1)
    canvas = np.zeros_like(shot)
    h, w = min(big.shape[0], shot.shape[0]), min(big.shape[1], shot.shape[1])
    canvas[:h, :w] = big[:h, :w]
    shift = phase_cross_correlation(shot, canvas)[0]
    return np.roll(canvas, tuple(int(x) for x in shift), axis=(0, 1))


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a[_REGION].ravel(), b[_REGION].ravel())[0, 1])


def _geometry(shot: np.ndarray, pixels: np.ndarray) -> tuple[float, bool]:
    """How the viewer fitted the image: its scale, and whether the default window 128/128 applies."""
    best = (-1.0, 1.0, False)
    for windowed in (True, False):
        _r, coarse = max((_ncc(shot, _place(shot, pixels, s, windowed)), s) for s in np.arange(3.0, 8.0, 0.1))
        r, s = max((_ncc(shot, _place(shot, pixels, s, windowed)), s)
                   for s in np.arange(coarse - 0.1, coarse + 0.1001, 0.02))
        best = max(best, (r, s, windowed))
    return best[1], best[2]


def test_orthanc_web_viewer_shows_the_exported_pixels(evaluated, tmp_path, orthanc):
    """An adversarial DICOM as `evaluate --export-dicom` wrote it and its original, sent to a real
    Orthanc (C-STORE) and opened in its web viewer (Debian orthanc-webviewer) in headless Chromium
    (Debian chromium): each rendering matches its own DICOM's pixels, and better than the other's."""
    from p2p_desktop.pacs import resolve_node, send
    from tests.orthanc import OUR_AET, WEBVIEWER_PLUGIN
    from tests.tools import require_tool

    require_tool("chromium")
    if not Path(WEBVIEWER_PLUGIN).is_file():
        pytest.skip("Orthanc's web viewer plugin is not installed (Debian package orthanc-webviewer)")
    adv = sorted((evaluated / "dicom").rglob("*.dcm"))[0]
    rel = adv.relative_to(evaluated / "dicom").parts[2:]
    orig = evaluated.parent / "ph" / Path(*rel)
    send(resolve_node(orthanc.address), [adv, orig], ae_title=OUR_AET, audit_log=tmp_path / "audit.jsonl")
    shots, pixels = {}, {}
    for name, path in (("adversarial", adv), ("original", orig)):
        ds = pydicom.dcmread(path)
        instance = orthanc.rest(f"/instances/{orthanc.find_instance(ds.SOPInstanceUID)}")
        shots[name] = _rendered(orthanc, instance, tmp_path / f"{name}.png")
        pixels[name] = ds.pixel_array.astype(float)
    assert not np.array_equal(pixels["adversarial"], pixels["original"])
    for name, other in (("adversarial", "original"), ("original", "adversarial")):
        # one geometry for both candidates (same size, same viewer), found on the mean image
        scale, windowed = _geometry(shots[name], (pixels[name] + pixels[other]) / 2)
        own = _ncc(shots[name], _place(shots[name], pixels[name], scale, windowed))
        theirs = _ncc(shots[name], _place(shots[name], pixels[other], scale, windowed))
        assert own > 0.98, (name, own, theirs, scale, windowed)
        assert own > theirs, (name, own, theirs, scale, windowed)


def test_a_study_is_made_from_an_evaluate_folder_of_png_images(tmp_path, capsys):
    """evaluate keeps a PNG image's name for its adversarial (``X.png``, not ``X.png.png``)."""
    assert main(["phantoms", "--n", "4", "--seed", "7340000", "--out", str(tmp_path / "ph"), "--size", "96"]) == 0
    assert main(["evaluate", str(tmp_path / "ph"), "--attacks", "fgsm", "--classifiers", CLASSIFIER, "--out",
                 str(tmp_path / "ev"), "--device", "cpu"]) == 0
    successes = sorted((tmp_path / "ev" / "adversarial").rglob("*.png"))
    assert successes and not any(p.name.endswith(".png.png") for p in successes)
    capsys.readouterr()
    study, key = _make(tmp_path / "ev", tmp_path)
    cases = json.loads(key.read_text())["cases"]
    assert sum(c["altered"] for c in cases) == len(successes)
