"""``evaluate --export-dicom [--deidentify] [--send-dicom NODE]`` on a dataset of DICOM phantoms
(``p2p-desktop phantoms --format dcm``, class folders) with the shipped demo SqueezeNet and FGSM:
one valid derived DICOM per successful attack (DERIVED, new UIDs, the source referenced), none
for the failures, never in the dataset folder, listed in summary.json and the audit record;
a resumed run exports nothing twice; de-identified ones carry no patient identity; sent ones
arrive in a real Orthanc and the audit log records the transfer; an unreachable node is one
line, exit 2, nothing written."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pydicom
import pytest

from p2p_desktop.cli.main import main
from p2p_desktop.hashing import sha256_file
from tests.orthanc import OUR_AET, free_port, orthanc_server, require_orthanc
from tests.tools import require_tool

pytestmark = pytest.mark.timeout(300)
CLASSIFIER = "demo-squeezenet1_1"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Six DICOM phantoms in BUSI class folders, written by the CLI itself."""
    root = tmp_path_factory.mktemp("dcm-data") / "phantoms"
    assert main(["phantoms", "--n", "6", "--seed", "1", "--out", str(root), "--format", "dcm", "--size", "128"]) == 0
    assert len(list(root.glob("*/*.dcm"))) == 6
    return root


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("P2P_DESKTOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no LPIPS/FID weights: fast
    return tmp_path / "home"


def _evaluate(dataset: Path, out: Path, *extra, capsys) -> dict:
    code = main(["evaluate", str(dataset), "--attacks", "fgsm", "--classifiers", CLASSIFIER, "--out", str(out),
                 "--device", "cpu", "--json", "--export-dicom", *map(str, extra)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def _rows(out: Path) -> list[dict]:
    with open(out / "per_image.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _audit(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _dciodvfy_errors(validator: str, path) -> set[str]:
    res = subprocess.run([validator, str(path)], capture_output=True, text=True, timeout=60)
    return {line.strip() for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")}


def _check_derived(path: Path, src: pydicom.Dataset, *, deidentified: bool) -> pydicom.Dataset:
    ds = pydicom.dcmread(path)
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.SOPInstanceUID not in ("", src.SOPInstanceUID)
    assert ds.SeriesInstanceUID not in ("", src.SeriesInstanceUID)
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == src.SOPClassUID  # ultrasound stays ultrasound
    assert (ds.Rows, ds.Columns) == (src.Rows, src.Columns) and ds.PixelData != src.PixelData
    ref = ds.SourceImageSequence[0]
    assert ref.ReferencedSOPClassUID == src.SOPClassUID
    assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    assert "fgsm" in ds.DerivationDescription and CLASSIFIER in ds.DerivationDescription
    if deidentified:
        assert ds.PatientIdentityRemoved == "YES"
        assert ref.ReferencedSOPInstanceUID not in ("", src.SOPInstanceUID)  # remapped, consistently
        assert ds.StudyInstanceUID not in ("", src.StudyInstanceUID)
        raw = path.read_bytes()
        for ident in (str(src.PatientName), src.PatientID, src.StudyInstanceUID, src.SOPInstanceUID,
                      src.SeriesInstanceUID, str(src.StudyID), "PHANTOM"):
            assert ident.encode() not in raw, ident
    else:
        assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert ds.StudyInstanceUID == src.StudyInstanceUID
        assert ds.PatientID == src.PatientID and str(ds.PatientName) == str(src.PatientName)
    return ds


def test_evaluate_exports_one_derived_dicom_per_success_and_resumes_without_exporting_twice(
        dataset, home, tmp_path, capsys, unchanged, cli_error):
    out = tmp_path / "eval"
    with unchanged(dataset):
        doc = _evaluate(dataset, out, capsys=capsys)
    rows = _rows(out)
    wins = [r for r in rows if r["success"] == "true"]
    failed = [r for r in rows if r["success"] == "false"]
    assert wins and failed, "the dataset must give both outcomes for the test to mean anything"
    dicoms = [o for o in doc["outputs"] if o["kind"] == "dicom"]
    # one per success, at dicom/<classifier>/<attack>/<image>, and nothing for the failures
    expected = {str(out / "dicom" / CLASSIFIER / "fgsm" / r["image"]) for r in wins}
    assert {o["path"] for o in dicoms} == expected
    assert sorted(str(p) for p in (out / "dicom").rglob("*") if p.is_file()) == sorted(expected)
    for o in dicoms:
        assert sha256_file(o["path"]) == o["sha256"]
        image = Path(o["path"]).relative_to(out / "dicom" / CLASSIFIER / "fgsm").as_posix()
        _check_derived(Path(o["path"]), pydicom.dcmread(dataset / image), deidentified=False)
    # listed in summary.json and in the evaluation's audit record; the settings record the export
    summary = json.loads((out / "summary.json").read_text())
    assert [o for o in summary["outputs"] if o["kind"] == "dicom"] == dicoms
    assert summary["config"]["dicom_export"] == {"deidentify": False}
    record = _audit(tmp_path / "audit.jsonl")[-1]
    assert record["event"] == "evaluate"
    assert [o for o in record["data"]["outputs"] if o["kind"] == "dicom"] == dicoms
    assert any(f"{len(wins)} derived DICOM(s)" in n and f"({len(wins)} written by this run)" in n
               for n in doc["notes"])
    # resumed (nothing left to do): no DICOM written again, the same files listed
    before = {o["path"]: Path(o["path"]).stat().st_ino for o in dicoms}
    again = _evaluate(dataset, out, capsys=capsys)
    assert [o for o in again["outputs"] if o["kind"] == "dicom"] == dicoms
    assert {p: Path(p).stat().st_ino for p in before} == before
    # interrupted between a DICOM and its row: the job runs again, its DICOM is not written twice
    lines = (out / "per_image.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    last_win = max(i for i, line in enumerate(lines) if ",true," in line)
    (out / "per_image.csv").write_text("".join(lines[:last_win] + lines[last_win + 1:]), encoding="utf-8")
    third = _evaluate(dataset, out, capsys=capsys)
    assert [o for o in third["outputs"] if o["kind"] == "dicom"] == dicoms
    assert {p: Path(p).stat().st_ino for p in before} == before
    assert len([p for p in (out / "dicom").rglob("*") if p.is_file()]) == len(dicoms)
    assert len(_rows(out)) == len(rows)
    # other export settings are another evaluation: refused, one line
    assert main(["evaluate", str(dataset), "--attacks", "fgsm", "--classifiers", CLASSIFIER, "--out", str(out),
                 "--device", "cpu", "--export-dicom", "--deidentify"]) == 2
    assert "dicom_export" in cli_error()
    # valid DICOM: dciodvfy finds no error in the derived instance that its source has not
    # (last, so that a missing validator skips with its reason only after every other check)
    validator = require_tool("dciodvfy")
    for o in dicoms:
        src_path = dataset / Path(o["path"]).relative_to(out / "dicom" / CLASSIFIER / "fgsm")
        assert not _dciodvfy_errors(validator, o["path"]) - _dciodvfy_errors(validator, src_path), o["path"]


def test_deidentified_export_carries_no_identity(dataset, home, tmp_path, capsys):
    out = tmp_path / "eval"
    doc = _evaluate(dataset, out, "--deidentify", capsys=capsys)
    wins = [r for r in _rows(out) if r["success"] == "true"]
    dicoms = [o for o in doc["outputs"] if o["kind"] == "dicom"]
    assert len(dicoms) == len(wins) > 0
    sources = {pydicom.dcmread(dataset / r["image"]).SOPInstanceUID: dataset / r["image"] for r in wins}
    seen = set()
    for o in dicoms:
        path = Path(o["path"])
        assert path.parent == out / "dicom" / CLASSIFIER / "fgsm" and path.name.startswith("deid-")
        assert not any(Path(s).stem in path.name for s in sources.values())
        ds = pydicom.dcmread(path)
        # which source? the one whose pixels it perturbs (the reference itself is remapped)
        src = next(pydicom.dcmread(s) for s in sources.values()
                   if pydicom.dcmread(s).pixel_array.shape == ds.pixel_array.shape
                   and abs(pydicom.dcmread(s).pixel_array.astype(int) - ds.pixel_array.astype(int)).max() <= 16)
        _check_derived(path, src, deidentified=True)
        seen.add(path.name)
    assert len(seen) == len(dicoms)
    # the evaluation record lists the de-identified files by their pseudonymous names only
    record = _audit(tmp_path / "audit.jsonl")[-1]
    listed = [o["path"] for o in record["data"]["outputs"] if o["kind"] == "dicom"]
    assert sorted(listed) == sorted(o["path"] for o in dicoms)
    text = json.dumps(record)
    assert not [s.name for s in sources.values() if s.stem in text or sha256_file(s) in text]
    # nor the dataset: a keyed digest of its path stands in for it
    assert record["data"]["deidentified"] is True and record["data"]["dataset"] is None
    assert str(dataset) not in text and len(record["data"]["dataset_keyed_digest"]) == 64
    # the names are stable for this folder: a resumed run finds them and writes nothing new
    again = _evaluate(dataset, out, "--deidentify", capsys=capsys)
    assert [o for o in again["outputs"] if o["kind"] == "dicom"] == dicoms
    validator = require_tool("dciodvfy")  # last: a missing validator skips only this check
    assert not [o["path"] for o in dicoms if _dciodvfy_errors(validator, o["path"])]


def test_export_options_are_checked_before_any_work(dataset, home, tmp_path, capsys, cli_error):
    out = tmp_path / "eval"
    base = ["evaluate", str(dataset), "--attacks", "fgsm", "--classifiers", CLASSIFIER, "--out", str(out)]
    assert main([*base, "--deidentify"]) == 2
    assert "--export-dicom" in cli_error()
    assert main([*base, "--send-dicom", "X@127.0.0.1:104"]) == 2
    assert "--export-dicom" in cli_error()
    # a node that cannot be reached: one line, exit 2, nothing written, nothing audited
    assert main([*base, "--export-dicom", "--send-dicom", f"NOBODY@127.0.0.1:{free_port()}"]) == 2
    err = cli_error()
    assert "--send-dicom" in err and "connection refused" in err
    assert main([*base, "--export-dicom", "--send-dicom", "no-such-node"]) == 2
    assert "unknown node" in cli_error()
    assert not out.exists()
    assert not (tmp_path / "audit.jsonl").exists()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    require_orthanc()
    with orthanc_server(tmp_path_factory.mktemp("orthanc-eval")) as server:
        yield server


@pytest.mark.parametrize("deidentify", [False, True], ids=["identified", "deidentified"])
def test_send_dicom_stores_every_export_in_orthanc(dataset, home, tmp_path, capsys, orthanc, deidentify):
    assert main(["pacs", "config", "--ae-title", OUR_AET, "--storage-port", str(orthanc.storage_port)]) == 0
    assert main(["pacs", "nodes", "add", "orthanc", "--aet", orthanc.aet, "--host", "127.0.0.1",
                 "--port", str(orthanc.dicom_port)]) == 0
    capsys.readouterr()
    out = tmp_path / "eval"
    doc = _evaluate(dataset, out, "--send-dicom", "orthanc", *(["--deidentify"] if deidentify else []),
                    capsys=capsys)
    dicoms = [o for o in doc["outputs"] if o["kind"] == "dicom"]
    assert dicoms
    exported = {pydicom.dcmread(o["path"]).SOPInstanceUID: o["path"] for o in dicoms}
    assert {i["sop_instance_uid"] for i in doc["sent"]["instances"]} == set(exported)
    for uid, path in exported.items():
        iid = orthanc.find_instance(uid)
        assert iid, f"{path} is not in Orthanc"
        tags = orthanc.tags(iid)
        local = pydicom.dcmread(path)
        assert "DERIVED" in tags["ImageType"].split("\\")
        assert tags["StudyInstanceUID"] == local.StudyInstanceUID
        assert tags["SeriesInstanceUID"] == local.SeriesInstanceUID
        assert tags["SourceImageSequence"][0]["ReferencedSOPInstanceUID"] == \
            local.SourceImageSequence[0].ReferencedSOPInstanceUID
        if deidentify:
            assert tags["PatientIdentityRemoved"] == "YES" and not tags["PatientID"].startswith("PHANTOM")
        else:
            assert tags["PatientID"].startswith("PHANTOM-")
    # the audit log: the evaluation, then the transfer (node, our AE title, every SOP Instance UID)
    events = _audit(tmp_path / "audit.jsonl")
    assert [e["event"] for e in events[-2:]] == ["evaluate", "pacs-send"]
    sent = events[-1]["data"]
    assert sent["status"] == "success" and sent["node"] == "orthanc" and sent["ae_title"] == OUR_AET
    assert sorted(sent["sop_instance_uids"]) == sorted(exported)
    assert main(["audit", "verify", str(tmp_path / "audit.jsonl")]) == 0


def test_attack_checks_the_node_before_any_work_too(dataset, home, tmp_path, capsys, cli_error):
    out = tmp_path / "adv"
    source = next(dataset.glob("benign/*.dcm"))
    assert main(["attack", str(source), "--attack", "fgsm", "--classifier", CLASSIFIER, "--out", str(out),
                 "--export-dicom", "--send-dicom", f"NOBODY@127.0.0.1:{free_port()}"]) == 2
    err = cli_error()
    assert "--send-dicom" in err and "connection refused" in err
    assert not out.exists() and not (tmp_path / "audit.jsonl").exists()


def test_export_dicom_on_ray_is_refused_before_any_work(tmp_path, capsys):
    """The Ray workers send back images, not DICOM sources: the combination is one line, exit 2."""
    from p2p_desktop.cli.main import main

    data = tmp_path / "data" / "benign"
    data.mkdir(parents=True)
    out = tmp_path / "out"
    code = main(["evaluate", str(tmp_path / "data"), "--attacks", "fgsm", "--classifiers", "demo-squeezenet1_1",
                 "--out", str(out), "--export-dicom", "--executor", "ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "serial executor only" in err[0]
    assert not out.exists()
