"""The run report says one thing: the numbers of the image as written (other sets labelled),
the same true label as the provenance, readable probabilities and nearest words (decoded
byte-level BPE, no escapes), and the SUCCESS colour the GUI uses."""

from __future__ import annotations

import html as _html
import json
import re
import shutil
import subprocess

import pytest

from tests.test_export_dicom import attack_result, load, tiny_classifier

#: Real CLIP byte-level BPE vocabulary entries: two lone bytes and two words.
P2P_LIKE_WORDS = [{"token": "ultrasound", "nearest": [["Ĩ", 0.91], ["scan</w>", 0.83], ["Ĉ", 0.8]]},
                  {"token": "lesion", "nearest": [["Ġmass", 0.77], ["tumour</w>", 0.7]]}]


@pytest.fixture(scope="module")
def written(tmp_path_factory, ):
    """A real FGSM run on pydicom's ultrasound file, written with provenance, result JSON and
    both reports through write_run_outputs (as ``attack`` and the GUI do); the attack's details
    carry a P2P-style internal candidate and learned-prompt words."""
    from pydicom.data import get_testdata_file

    from p2p_desktop.hashing import sha256_file
    from p2p_desktop.io.outputs import OutputSet
    from p2p_desktop.jobs.attack import write_run_outputs

    base = tmp_path_factory.mktemp("consistent")
    source = base / "in" / "us.dcm"
    source.parent.mkdir()
    shutil.copy(get_testdata_file("examples_rgb_color.dcm"), source)
    study = load(source)
    result = attack_result(study, "fgsm", clf=tiny_classifier(), eps=0.05)
    candidate = {c: round(1.0 / len(result.classes), 4) for c in result.classes}
    result.info.update({"success": not result.success, "predicted": result.classes[-1], "probs": candidate,
                        "nearest_words": P2P_LIKE_WORDS})
    with OutputSet(base / "out", [source]) as outs:
        summary = write_run_outputs(result, study, outs, input_sha256=sha256_file(source),
                                    exports={"report": ("html", "pdf")})
    files = {r["kind"]: r["path"] for r in outs.records}
    return {"result": result, "summary": summary, "files": files, "candidate": candidate}


def _report_text(written) -> str:
    raw = open(written["files"]["report-html"], encoding="utf-8").read()
    raw = re.sub(r"<img[^>]*>", "", raw)
    return _html.unescape(re.sub(r"<[^>]+>", " ", raw))


def test_one_set_of_numbers_the_image_as_written(written):
    r = written["result"]
    text = _report_text(written)
    from p2p_desktop.export.report import probabilities_text

    as_written = probabilities_text(r.adversarial_probs)
    assert f"adversarial image as written {r.adversarial_label} · {as_written}" in " ".join(text.split())
    assert "judged on the image as written" in text
    # every other probability set is labelled as the attack's internal one
    candidate = probabilities_text(written["candidate"])
    for m in re.finditer(re.escape(candidate), text):
        before = text[max(0, m.start() - 120):m.start()]
        assert "internal" in before and "not the verdict" in before, before
    internal = probabilities_text(r.internal_probs)
    for m in re.finditer(re.escape(internal), text):
        before = text[max(0, m.start() - 160):m.start()]
        assert "as written" in before or "internal" in before, before


def test_the_true_label_is_the_same_everywhere(written):
    r = written["result"]
    prov = json.loads(open(written["files"]["provenance"]).read())
    assert prov["input"]["true_label"] == r.true_label == prov["result"]["true_label"]
    assert prov["input"]["true_label_source"] == "clean prediction"
    res = json.loads(open(written["files"]["result"]).read())
    assert res["true_label"] == r.true_label
    assert f"true label {r.true_label} (clean prediction)" in " ".join(_report_text(written).split())


def test_values_are_readable_words_and_numbers(written):
    raw = open(written["files"]["report-html"], encoding="utf-8").read()
    assert "\\u0" not in raw and '{"' not in _html.unescape(raw.split("<h2>Attack details")[1])
    text = " ".join(_report_text(written).split())
    assert "ultrasound → scan (0.83)" in text and "lesion → mass (0.77), tumour (0.70)" in text
    for lone in ("Ĩ", "Ĉ", "Ġ", "</w>"):
        assert lone not in text
    if shutil.which("pdftotext"):
        pdf = subprocess.run(["pdftotext", "-enc", "UTF-8", written["files"]["report-pdf"], "-"],
                             capture_output=True, check=True, timeout=60).stdout.decode()
        assert "\\u0" not in pdf and "Ĩ" not in pdf and "scan (0.83)" in " ".join(pdf.split())


def test_success_colour_is_the_guis():
    from p2p_desktop.export.report import _CSS, FAILURE_COLOUR, SUCCESS_COLOUR

    assert f".ok{{background:#e3f1e3;color:{SUCCESS_COLOUR}}}" in _CSS
    assert f"color:{FAILURE_COLOUR}}}" in _CSS.split(".no{", 1)[1]
    assert SUCCESS_COLOUR == "#1b5e20"  # green, as the GUI's results header


def test_readable_word_decodes_byte_level_bpe():
    from p2p_desktop.export.report import nearest_word_lines, readable_word

    assert readable_word("Ġmass") == "mass" and readable_word("scan</w>") == "scan"
    assert readable_word("Ã©tÃ©") == "été"  # UTF-8 bytes of a word
    assert readable_word("Ĩ") is None and readable_word("Ĉ") is None and readable_word(".</w>") is None
    assert nearest_word_lines([{"token": "x", "nearest": [["Ĩ", 0.9]]}]) == ["x → (no whole word nearby)"]
