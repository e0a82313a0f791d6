"""Provenance records and ``rerun``: attack -> rerun gives byte-identical PNGs on CPU; changed
inputs or weights are refused before any work; the ``attack`` export flags end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_export_dicom import attack_result, load, tiny_classifier

# every test writes its own audit log (tests/conftest.py: audit_log); the classifier is the
# seeded SqueezeNet card (tests/conftest.py: model_card)
pytestmark = pytest.mark.usefixtures("audit_log")


@pytest.fixture
def source(pydicom_copy):
    return pydicom_copy("examples_rgb_color.dcm", "us.dcm")


def cli(*argv) -> int:
    from p2p_desktop.cli.main import main

    return main([str(a) for a in argv])


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("attack,extra", [("fgsm", []), ("pgd", ["--steps", "3"])])
def test_attack_then_rerun_is_byte_identical(attack, extra, source, model_card, tmp_path, capsys, audit_log):
    assert cli("attack", source, "--attack", attack, "--classifier", model_card, "--out", tmp_path / "a",
               "--device", "cpu", "--json", *extra) == 0
    first = _json(capsys)
    kinds = [o["kind"] for o in first["outputs"]]
    assert kinds == ["png", "perturbation", "provenance"]
    prov = next(Path(o["path"]) for o in first["outputs"] if o["kind"] == "provenance")
    record = json.loads(prov.read_text())
    assert record["input"]["sha256"] == first["input_sha256"] and record["input"]["frame"] == 0
    # issue 12: the record also names the procedure (preset, resolution, output mode, precision)
    assert record["attack"] == {"name": attack, "config": first["config"], "procedure": first["procedure"],
                                "metric_protocol": first["metric_protocol"]}  # issue 25: SSIM window, data range
    assert first["metric_protocol"]["ssim"]["window"] == "7×7 uniform"
    assert record["attack"]["procedure"]["label"].startswith(f"{attack}[default, ")
    assert record["classifier"]["spec"] == str(model_card.resolve())
    assert record["classifier"]["weights_sha256"] == first["classifier"]["sha256"]
    assert record["device"] == "cpu" and record["seed"] == 0 and record["versions"]["torch"]
    png = next(o for o in first["outputs"] if o["kind"] == "png")
    assert {"kind": "png", "name": Path(png["path"]).name, "sha256": png["sha256"]} in record["outputs"]

    assert cli("rerun", prov, "--out", tmp_path / "b", "--json") == 0
    second = _json(capsys)
    assert second["reproduced"] is True
    png2 = next(o for o in second["outputs"] if o["kind"] == "png")
    assert Path(png2["path"]).read_bytes() == Path(png["path"]).read_bytes()
    assert cli("audit", "verify", audit_log) == 0
    assert "2 records, chain intact" in capsys.readouterr().out


def test_rerun_refuses_changed_input_or_weights(source, model_card, tmp_path, capsys):
    from p2p_desktop.export.provenance import load_provenance

    assert cli("attack", source, "--attack", "fgsm", "--classifier", model_card, "--out", tmp_path / "a",
               "--json") == 0
    prov = next(Path(o["path"]) for o in _json(capsys)["outputs"] if o["kind"] == "provenance")
    record = load_provenance(prov)

    edited = dict(record, input=dict(record["input"], sha256="0" * 64))
    bad = tmp_path / "edited.json"
    bad.write_text(json.dumps(edited))
    assert cli("rerun", bad, "--out", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert "has changed since the recorded run" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()

    other = dict(record, classifier=dict(record["classifier"], weights_sha256="f" * 64))
    bad.write_text(json.dumps(other))
    assert cli("rerun", bad, "--out", tmp_path / "c") == 2
    assert "weights differ from the recorded run" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()

    bad.write_text("{\"format\": \"something else\"}")
    assert cli("rerun", bad, "--out", tmp_path / "d") == 2
    assert "not a p2p-desktop provenance record" in capsys.readouterr().err


def test_attack_with_every_export(source, model_card, tmp_path, capsys, audit_log):
    from pydicom import dcmread

    assert cli("attack", source, "--attack", "fgsm", "--classifier", model_card, "--out", tmp_path / "a",
               "--export-dicom", "--report", "html,pdf", "--deidentify", "--json") == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    kinds = [o["kind"] for o in summary["outputs"]]
    assert kinds == ["png", "perturbation", "dicom", "provenance", "report-html", "report-pdf"]
    assert "BurnedInAnnotation" in captured.err  # the de-identification warning, on stderr
    assert any("BurnedInAnnotation" in n for n in summary["notes"])
    ds = dcmread(next(o["path"] for o in summary["outputs"] if o["kind"] == "dicom"))
    assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientName) == ""
    html = Path(next(o["path"] for o in summary["outputs"] if o["kind"] == "report-html")).read_text()
    for o in summary["outputs"][:4]:
        assert o["sha256"] in html
    records = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert len(records) == 1 and records[0]["event"] == "attack"
    assert {o["sha256"] for o in summary["outputs"]} <= {o["sha256"] for o in records[0]["data"]["outputs"]}
    assert summary["audit"]["hash"] == records[0]["hash"]


def test_attack_export_options_are_checked_before_any_work(source, model_card, tmp_path, capsys, audit_log):
    out = tmp_path / "a"
    assert cli("attack", source, "--attack", "fgsm", "--classifier", model_card, "--out", out,
               "--deidentify") == 2
    assert "--deidentify applies to" in capsys.readouterr().err
    assert cli("attack", source, "--attack", "fgsm", "--classifier", model_card, "--out", out,
               "--report", "html,docx") == 2
    assert "unknown report format" in capsys.readouterr().err
    assert cli("attack", source, "--attack", "fgsm", "--classifier", model_card, "--out", source.parent / "x",
               "--export-dicom") == 2
    assert not out.exists() and not (source.parent / "x").exists()
    assert not audit_log.exists() or audit_log.read_text() == ""


def test_provenance_record_in_process(tmp_path, pydicom_file):
    from p2p_desktop.export.provenance import load_provenance, model_spec, write_provenance
    from p2p_desktop.io.outputs import OutputSet

    study = load(pydicom_file("examples_ybr_color.dcm"), frame=2)
    result = attack_result(study, clf=tiny_classifier())
    with OutputSet(tmp_path / "out") as outs:
        outs.write_bytes("x.png", b"png bytes", kind="png")
        path = write_provenance(result, study, outs, classifier_spec=model_spec("demo-x"), label="benign",
                                options={"export_dicom": True})
    record = load_provenance(path)
    assert record["input"]["frame"] == 2 and record["input"]["n_frames"] == 30
    assert record["input"]["true_label"] == "benign" and record["options"] == {"export_dicom": True}
    assert record["classifier"]["spec"] == "demo-x" and record["backbone"] is None
    assert record["outputs"] == [{"kind": "png", "name": "x.png", "sha256": outs.records[0]["sha256"]}]
    assert path.name.endswith("_f2_fgsm_provenance.json")
