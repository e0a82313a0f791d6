"""After de-identification (CLI ``--deidentify`` and the GUI's exports), no written file — report
(HTML and the PDF's text), result JSON, provenance, images, DICOM — carries the patient's
identity, the source's path, file name or SHA-256; output names are random pseudonyms, linked
to the source only through a pseudonym map the user asks for; ``rerun`` refuses such a record."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pydicom  # noqa: E402
import pytest  # noqa: E402

from p2p_desktop.cli.main import main  # noqa: E402
from p2p_desktop.hashing import sha256_file  # noqa: E402

IDENTITY = {
    "PatientName": "DOE^JANE",
    "PatientID": "PID-734291",
    "PatientBirthDate": "19610317",
    "StudyDate": "20230912",
    "StudyDescription": "BREAST US LEFT JD",
    "AccessionNumber": "ACC-99887766",
    "InstitutionName": "Saint Example Hospital",
    "ReferringPhysicianName": "HOUSE^GREGORY",
}


@pytest.fixture
def identified_dicom(identified_ultrasound):
    """A real ultrasound DICOM (pydicom's) with identifying attributes set, named after the patient."""
    uids = {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.11111111111111111111",
            "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.22222222222222222222",
            "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.33333333333333333333"}
    return identified_ultrasound({**IDENTITY, **uids}, "DOE_JANE_734291", "DOE_JANE_19610317.dcm")


def _identifiers(src: Path) -> list[str]:
    ds = pydicom.dcmread(src)
    digest = sha256_file(src)
    # (long enough not to turn up by chance inside base64-inlined images)
    values = [v for v in IDENTITY.values()] + ["DOE JANE", "DOE_JANE", "1961-03-17", "2023-09-12",
                                               ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                               str(src), str(src.parent), src.stem, digest, digest[:16], digest[:12]]
    return sorted(set(values))


def _text_of(path: Path) -> str:
    if path.suffix.lower() == ".pdf":
        if shutil.which("pdftotext") is None:
            pytest.skip("pdftotext (poppler-utils) is not installed")
        return subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True,
                              timeout=60).stdout.decode("utf-8", "replace")
    data = path.read_bytes()
    return data.decode("utf-8", "replace") + data.decode("latin-1")


def _assert_identity_free(folder: Path, src: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert files, "nothing was written"
    leaks = []
    for f in files:
        text = _text_of(f)
        for ident in _identifiers(src):
            if ident in text or ident in f.name:
                leaks.append(f"{f.name}: {ident}")
        if f.suffix.lower() == ".pdf":
            assert "report" in text.lower(), "pdftotext read nothing"
    assert not leaks, leaks
    return files


def test_cli_deidentify_writes_no_identity_anywhere(tmp_path, identified_dicom, capsys, tiny_classifier_args):
    clf = tiny_classifier_args
    names = []
    for run in (1, 2):
        out = tmp_path / f"out{run}"
        extra = ["--pseudonym-map", str(tmp_path / "map.jsonl")] if run == 1 else []
        code = main(["attack", str(identified_dicom), "--attack", "fgsm", *clf, "--out", str(out), "--export-dicom",
                     "--deidentify", "--report", "html,pdf", "--json", *extra])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        files = _assert_identity_free(out, identified_dicom)
        kinds = {p.suffix for p in files}
        assert {".png", ".dcm", ".json", ".html", ".pdf"} <= kinds, kinds
        stems = {p.name.split("_")[0] for p in files}
        assert len(stems) == 1 and next(iter(stems)).startswith("deid-"), stems
        names.append(next(iter(stems)))
        prov = json.loads(next(out.glob("*_provenance.json")).read_text())
        assert prov["input"]["path"] is None and prov["input"]["sha256"] is None and prov["input"]["deidentified"]
        res = json.loads(next(out.glob("*_result.json")).read_text())
        assert res["input"] is None and res["input_sha256"] is None
    # a random pseudonym: the same source gets a different name each time
    assert names[0] != names[1]
    # the map exists only where asked for, and is the one link back to the source
    lines = [json.loads(line) for line in (tmp_path / "map.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["pseudonym"] == names[0]
    assert lines[0]["input"] == str(identified_dicom.resolve())
    assert lines[0]["input_sha256"] == sha256_file(identified_dicom)
    assert oct((tmp_path / "map.jsonl").stat().st_mode & 0o777) == oct(0o600)


def test_rerun_refuses_a_deidentified_record_in_one_line(tmp_path, identified_dicom, capsys, tiny_classifier_args):
    clf = tiny_classifier_args
    assert main(["attack", str(identified_dicom), "--attack", "fgsm", *clf, "--out", str(tmp_path / "out"),
                 "--deidentify", "--report", "html"]) == 0
    capsys.readouterr()
    record = next((tmp_path / "out").glob("*_provenance.json"))
    code = main(["rerun", str(record), "--out", str(tmp_path / "again")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "de-identified" in err[0]
    assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())


def test_pseudonym_map_needs_deidentify_and_a_writable_place(tmp_path, identified_dicom, capsys, tiny_classifier_args):
    clf = tiny_classifier_args
    base = ["attack", str(identified_dicom), "--attack", "fgsm", *clf, "--out", str(tmp_path / "out"),
            "--report", "html"]
    assert main([*base, "--pseudonym-map", str(tmp_path / "m.jsonl")]) == 2
    assert "--pseudonym-map needs --deidentify" in capsys.readouterr().err
    assert main([*base, "--deidentify", "--pseudonym-map", str(tmp_path / "nowhere" / "m.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.gui
def test_gui_deidentified_dicom_and_report_exports_carry_no_identity(qtbot, window, tmp_path, identified_dicom,
                                                                     open_study, run_attack):
    open_study([identified_dicom])
    run_attack("fgsm")
    folder = tmp_path / "export"
    for export in (lambda: window.export_dicom(str(folder), deidentify=True),
                   lambda: window.export_report(str(folder), formats=("html", "pdf"), deidentify=True)):
        with qtbot.waitSignal(window.export_runner.finished, timeout=120000):
            assert export()
        assert window.errors == [], window.errors
    files = _assert_identity_free(folder, identified_dicom)
    assert {p.suffix for p in files} >= {".dcm", ".html", ".pdf", ".json", ".png"}
    # the DICOM and the report share the run's one pseudonym
    assert len({p.name.split("_")[0] for p in files}) == 1
