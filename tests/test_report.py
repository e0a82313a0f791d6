"""Audit reports: self-contained HTML, a PDF that renders, charts, batch reports."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.test_export_dicom import attack_result, load, tiny_classifier
from tests.tools import require_tool


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real PGD run on an identified ultrasound file, with every output and both reports."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from p2p_desktop.export.dicom import export_dicom
    from p2p_desktop.export.images import write_image_outputs
    from p2p_desktop.export.provenance import write_provenance
    from p2p_desktop.export.report import write_reports
    from p2p_desktop.io.outputs import OutputSet

    base = tmp_path_factory.mktemp("report")
    source = base / "in" / "us.dcm"
    source.parent.mkdir()
    ds = dcmread(get_testdata_file("examples_rgb_color.dcm"))
    ds.PatientName, ds.PatientID = "DOE^JANE", "PID-778899"
    ds.save_as(source)
    study = load(source)
    result = attack_result(study, "pgd", clf=tiny_classifier(), steps=3)
    out = {}
    for deid in (False, True):
        with OutputSet(base / f"out-{deid}", [source]) as outs:
            write_image_outputs(result, study, outs)
            export_dicom(result, study, outs, deidentify=deid)
            write_provenance(result, study, outs)
            others = list(outs.records)
            paths = write_reports(result, study, outs, "html,pdf", deidentified=deid)
        out[deid] = {"others": others, "html": paths[0], "pdf": paths[1], "records": outs.records}
    return {"result": result, "study": study, "out": out}


def test_reports_are_written_last_and_list_every_other_output(run):
    out = run["out"][False]
    kinds = [r["kind"] for r in out["records"]]
    assert kinds == ["png", "perturbation", "dicom", "provenance", "report-html", "report-pdf"]
    html = out["html"].read_text(encoding="utf-8")
    for rec in out["others"]:
        assert rec["sha256"] in html and Path(rec["path"]).name in html


def test_html_report_is_self_contained_and_complete(run):
    result = run["result"]
    html = run["out"][False]["html"].read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", html)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 6  # 4 images + probability chart + per-iteration plot
    for b64 in images:
        assert base64.b64decode(b64).startswith(b"\x89PNG")
    from p2p_desktop.hashing import sha256_file

    for text in (sha256_file(run["study"].path), "DOE^JANE", "PID-778899", result.attack, "alpha", "steps",
                 result.classifier["name"], result.versions["torch"], result.device, "seed", "SSIM ↑", "L∞ ↓",
                 result.original_label, result.outcome, "iteration"):
        assert str(text) in html, text
    # the window's one wording of the outcome (AttackResult.outcome), not a second one of its own
    assert "SUCCESS" not in html and "FAILED" not in html


def test_deidentified_report_leaves_identifying_attributes_out(run):
    for path in (run["out"][True]["html"],):
        text = path.read_text(encoding="utf-8")
        assert "DOE^JANE" not in text and "PID-778899" not in text and "us.dcm" not in text
        assert "de-identified" in text
    require_tool("pdftotext")
    text = subprocess.run(["pdftotext", str(run["out"][True]["pdf"]), "-"], capture_output=True,
                          text=True, timeout=60).stdout
    assert "DOE" not in text and "PID-778899" not in text


def test_pdf_report_renders(run, tmp_path):
    pdf = run["out"][False]["pdf"]
    assert pdf.read_bytes().startswith(b"%PDF")
    require_tool("pdftoppm")
    from PIL import Image

    subprocess.run(["pdftoppm", "-r", "50", "-f", "1", "-l", "1", "-png", str(pdf), str(tmp_path / "page")],
                   check=True, timeout=60)
    page = np.asarray(Image.open(next(tmp_path.glob("page*.png"))).convert("L"), dtype=np.float64)
    assert page.std() > 20 and page.mean() < 245  # images, charts and text, not a blank page
    require_tool("pdftotext")
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, timeout=60).stdout
    assert "ε" in text or "eps" in text
    for rec in run["out"][False]["others"]:
        assert rec["sha256"][:20] in text.replace("\n", "")


def test_perturbation_heatmap_is_centred_on_zero():
    from p2p_desktop.export.report import amplified_perturbation_png, perturbation_colours

    d = np.zeros((4, 6, 3), np.float32)
    d[0, 0] = 0.04
    d[1, 1] = -0.01
    rgb = perturbation_colours(d)
    assert np.all(rgb[2:] > 0.95)  # zero -> white
    assert rgb[0, 0, 0] > rgb[0, 0, 2] + 0.2 and rgb[0, 0, 1] < 0.2  # positive -> red
    assert rgb[1, 1, 2] > rgb[1, 1, 0]  # negative -> blue
    png, k = amplified_perturbation_png(d)
    assert png.startswith(b"\x89PNG") and k == pytest.approx(0.5 / 0.04)


def test_history_and_probability_charts():
    from p2p_desktop.attacks.base import StepEvent
    from p2p_desktop.export.report import history_chart_png, probability_chart_png

    assert history_chart_png([], ("a", "b")) is None
    events = [StepEvent(step=i, total=3, loss=1.0 / i, probs={"a": 0.2 * i, "b": 1 - 0.2 * i}) for i in (1, 2, 3)]
    assert history_chart_png(events, ("a", "b")).startswith(b"\x89PNG")
    assert probability_chart_png(("a", "b"), {"a": 0.9, "b": 0.1}, {"a": 0.2, "b": 0.8}, "a").startswith(b"\x89PNG")


def test_report_formats_are_validated():
    from p2p_desktop.errors import InputError
    from p2p_desktop.export.report import parse_formats

    assert parse_formats("html,pdf") == ("html", "pdf") and parse_formats("PDF") == ("pdf",)
    for bad in ("doc", "html,txt", ","):
        with pytest.raises(InputError):
            parse_formats(bad)


def test_batch_report(tmp_path):
    from p2p_desktop.export.report import write_batch_report
    from p2p_desktop.io.outputs import OutputSet

    summary = [{"attack": "fgsm", "classifier": "demo-resnet34", "n": 2, "success_rate": 0.5, "ssim": 0.97},
               {"attack": "pgd", "classifier": "demo-resnet34", "n": 2, "success_rate": 1.0, "ssim": 0.95}]
    per_image = [{"input": f"benign/{i}.png", "attack": a, "classifier": "demo-resnet34", "true_label": "benign",
                  "adversarial_label": "malignant" if ok else "benign", "success": ok, "ssim": 0.9 + i / 100}
                 for i, (a, ok) in enumerate([("fgsm", True), ("fgsm", False), ("pgd", True), ("pgd", True)])]
    with OutputSet(tmp_path / "out") as outs:
        outs.write_bytes("evaluation.csv", b"a,b\n1,2\n", kind="csv")
        paths = write_batch_report(summary, per_image, outs, "html,pdf", meta={"dataset": "BUSI", "seed": 0})
    html = paths[0].read_text(encoding="utf-8")
    assert "success_rate" in html and "benign/3.png" in html and "BUSI" in html
    assert "<th>SSIM ↑</th>" in html and "<td>0.9700</td>" in html  # the metric table's heading and format
    assert outs.records[0]["sha256"] in html and "data:image/png;base64," in html
    assert paths[1].read_bytes().startswith(b"%PDF")
    require_tool("pdftoppm")
    from PIL import Image

    subprocess.run(["pdftoppm", "-r", "40", "-f", "1", "-l", "1", "-png", str(paths[1]),
                    str(tmp_path / "batch")], check=True, timeout=60)
    page = np.asarray(Image.open(next(tmp_path.glob("batch*.png"))).convert("L"), dtype=np.float64)
    assert page.std() > 10
