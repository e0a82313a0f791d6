"""``rerun`` uses everything the provenance record says: the seed (a non-default one), the cine
frame, the preset and every attack setting, the true label, the export options and the models.

Each recorded value is chosen so that ignoring it changes the result: PGD's random start
depends on the seed, frame 2 of pydicom's 30-frame YBR ultrasound cine differs from frame 0,
``--preset full`` of Diff-PGD changes the purification, and the export options change the set
of files written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_provenance import cli

# every test writes its own audit log (tests/conftest.py: audit_log); the classifier is the
# seeded SqueezeNet card (tests/conftest.py: model_card)
pytestmark = pytest.mark.usefixtures("audit_log")


@pytest.fixture
def cine(pydicom_copy):
    return pydicom_copy("examples_ybr_color.dcm", "cine.dcm")


def _attack(capsys, *argv) -> dict:
    assert cli(*argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


def _png(summary: dict) -> bytes:
    return Path(next(o["path"] for o in summary["outputs"] if o["kind"] == "png")).read_bytes()


def _provenance(summary: dict) -> Path:
    return Path(next(o["path"] for o in summary["outputs"] if o["kind"] == "provenance"))


def test_rerun_uses_the_recorded_seed_frame_settings_label_and_exports(cine, model_card, tmp_path, capsys):
    from p2p_desktop.io import load_study

    first = _attack(capsys, "attack", cine, "--attack", "pgd", "--classifier", model_card, "--out", tmp_path / "a",
                    "--seed", "7", "--frame", "2", "--eps", "0.02", "--steps", "3", "--param", "alpha=0.004",
                    "--param", "early_stop=true", "--label", "normal", "--target", "malignant", "--export-dicom",
                    "--device", "cpu")
    record = json.loads(_provenance(first).read_text())
    assert record["seed"] == 7 and record["input"]["frame"] == 2 and record["input"]["true_label"] == "normal"
    config = record["attack"]["config"]
    assert config == first["config"]
    assert (config["seed"], config["eps"], config["steps"], config["alpha"], config["early_stop"],
            config["target"]) == (7, 0.02, 3, 0.004, True, "malignant")
    assert record["options"] == {"export_dicom": True, "export_tiff": False, "deidentify": False, "report": []}

    assert cli("rerun", _provenance(first), "--out", tmp_path / "b", "--json") == 0
    second = json.loads(capsys.readouterr().out)
    assert second["reproduced"] is True and _png(second) == _png(first)
    # 'normal' is not the clean prediction (benign): a rerun that forgot the label would say benign
    assert first["original"]["label"] == "benign" and first["true_label"] == "normal"
    assert second["seed"] == 7 and second["frame"] == 2 and second["true_label"] == "normal"
    assert second["config"] == config  # every setting, not only the ones that differ from defaults
    assert [o["kind"] for o in second["outputs"]] == [o["kind"] for o in first["outputs"]]
    assert "dicom" in [o["kind"] for o in second["outputs"]]
    # the attacked frame is frame 2 of the cine, not frame 0
    png = load_study(Path(next(o["path"] for o in second["outputs"] if o["kind"] == "png")))
    f2, f0 = load_study(cine, frame=2).image, load_study(cine, frame=0).image
    assert np.abs(png.image - f2).max() <= 0.02 + 1e-6 < np.abs(png.image - f0).max()
    # the rerun's provenance says the same again
    again = json.loads(_provenance(second).read_text())
    for key in ("seed", "attack", "options"):
        assert again[key] == record[key]
    assert again["input"] == record["input"]


def test_a_different_seed_gives_a_different_image_so_the_seed_is_observable(cine, model_card, tmp_path, capsys):
    """Guards the test above: with PGD's random start, seed 7 and seed 0 write different PNGs."""
    common = ["--attack", "pgd", "--classifier", model_card, "--frame", "2", "--eps", "0.02", "--steps", "1",
              "--device", "cpu"]
    s7 = _attack(capsys, "attack", cine, *common, "--seed", "7", "--out", tmp_path / "s7")
    s0 = _attack(capsys, "attack", cine, *common, "--seed", "0", "--out", tmp_path / "s0")
    assert _png(s7) != _png(s0)
    # and a rerun of the seed-7 record is seed 7 again, byte for byte
    assert cli("rerun", _provenance(s7), "--out", tmp_path / "r", "--json") == 0
    r = json.loads(capsys.readouterr().out)
    assert r["reproduced"] is True and r["seed"] == 7 and _png(r) == _png(s7)


def test_rerun_of_an_edited_record_follows_the_record(cine, model_card, tmp_path, capsys):
    """Edit the seed and frame in a record: the rerun follows them (and says it is not identical)."""
    first = _attack(capsys, "attack", cine, "--attack", "pgd", "--classifier", model_card, "--out", tmp_path / "a",
                    "--seed", "7", "--frame", "2", "--eps", "0.02", "--steps", "1", "--device", "cpu")
    record = json.loads(_provenance(first).read_text())
    record["attack"]["config"]["seed"] = 11
    record["input"]["frame"] = 4
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(record))
    assert cli("rerun", edited, "--out", tmp_path / "b", "--json") == 0
    captured = capsys.readouterr()
    second = json.loads(captured.out)
    assert second["seed"] == 11 and second["frame"] == 4 and second["reproduced"] is False
    assert _png(second) != _png(first)
    assert "differs from the recorded" in captured.err
    assert any("library versions may differ" in n for n in second["notes"])


def test_rerun_uses_the_recorded_preset_with_its_backbone(cine, tmp_path, capsys):
    """Diff-PGD ``--preset full`` on a tiny seeded SD backbone: the rerun runs the full variant."""
    import torch
    from safetensors.torch import save_file

    from p2p_desktop.models.classifier import build_architecture
    from tests.tiny_sd import save_tiny_sd

    folder = tmp_path / "model"
    folder.mkdir()
    torch.manual_seed(0)
    module = build_architecture("squeezenet1_1", 3)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / "weights.safetensors"))
    (folder / "card.json").write_text(json.dumps({
        "name": "tiny-32", "architecture": "squeezenet1_1", "classes": ["benign", "malignant", "normal"],
        "input_size": 32, "weights": "weights.safetensors"}))
    sd = save_tiny_sd(tmp_path / "sd")
    first = _attack(capsys, "attack", cine, "--attack", "diff-pgd", "--preset", "full", "--backbone", sd,
                    "--classifier", folder / "card.json", "--out", tmp_path / "a", "--seed", "3", "--frame", "5",
                    "--steps", "2", "--param", "resolution=64", "--device", "cpu")
    record = json.loads(_provenance(first).read_text())
    assert record["attack"]["config"]["variant"] == "full" and record["seed"] == 3
    assert record["attack"]["config"]["resolution"] == 64  # a setting beside the preset's, kept by the rerun
    assert record["backbone"]["spec"] == str(sd.resolve()) and record["backbone"]["weights_sha256"]
    assert cli("rerun", _provenance(first), "--out", tmp_path / "b", "--json") == 0
    second = json.loads(capsys.readouterr().out)
    assert second["config"] == record["attack"]["config"] and second["config"]["variant"] == "full"
    assert second["frame"] == 5 and second["seed"] == 3 and second["backbone"]["sha256"]
    assert second["reproduced"] is True and _png(second) == _png(first)
    assert json.loads(_provenance(second).read_text())["backbone"] == record["backbone"]  # recorded the same way
    # the backbone's weights are checked like the classifier's: other weights are refused before any
    # work, and a record without their hash reruns with a warning
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({**record, "backbone": {**record["backbone"], "weights_sha256": "0" * 64}}))
    assert cli("rerun", edited, "--out", tmp_path / "c") == 2
    assert "p2p-desktop: error: backbone weights differ from the recorded run" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    edited.write_text(json.dumps({**record, "backbone": {**record["backbone"], "weights_sha256": None}}))
    assert cli("rerun", edited, "--out", tmp_path / "d") == 0
    assert ("p2p-desktop: warning: backbone: no weight hash was recorded, so the weights could not be verified"
            in capsys.readouterr().err.splitlines())
    # a record that lost its backbone: one line, before any work
    edited.write_text(json.dumps({**record, "backbone": None}))
    assert cli("rerun", edited, "--out", tmp_path / "e") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a diffusion backbone" in err[0] and not (tmp_path / "e").exists()


def test_rerun_prints_its_verdict_audits_it_and_warns_on_stderr(cine, model_card, tmp_path, capsys, audit_log):
    # a de-identified run's record names no input, so it cannot be re-run: one line, exit 2
    deid = _attack(capsys, "attack", cine, "--attack", "fgsm", "--classifier", model_card, "--out", tmp_path / "x",
                   "--frame", "1", "--eps", "0.01", "--export-dicom", "--deidentify")
    assert cli("rerun", _provenance(deid), "--out", tmp_path / "y") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "records a de-identified run" in err[0] and not (tmp_path / "y").exists()
    first = _attack(capsys, "attack", cine, "--attack", "fgsm", "--classifier", model_card, "--out", tmp_path / "a",
                    "--frame", "1", "--eps", "0.01", "--export-dicom")
    png_sha = next(o["sha256"] for o in first["outputs"] if o["kind"] == "png")
    assert cli("rerun", _provenance(first), "--out", tmp_path / "b") == 0
    out = capsys.readouterr()
    assert "adversarial PNG byte-identical to the recorded run" in out.out
    # a faithful rerun of a verified record has nothing to warn about
    warnings = [line for line in out.err.splitlines() if line.startswith("p2p-desktop: warning: ")]
    assert not warnings, out.err
    records = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert [r["event"] for r in records] == ["attack", "attack", "rerun"]
    data = records[-1]["data"]
    assert data["command"] == "rerun" and data["reproduced"] is True and data["recorded_png_sha256"] == png_sha
    assert data["frame"] == 1 and data["input_sha256"] == first["input_sha256"]

    # a record without output hashes still reruns, and says why it cannot compare
    record = json.loads(_provenance(first).read_text())
    record["outputs"] = []
    edited = tmp_path / "no-hashes.json"
    edited.write_text(json.dumps(record))
    assert cli("rerun", edited, "--out", tmp_path / "c") == 0
    out = capsys.readouterr()
    assert "adversarial PNG NOT identical to the recorded run" in out.out
    assert ("p2p-desktop: warning: the adversarial PNG differs from the recorded one (the record has no PNG hash)"
            in out.err.splitlines())
    # a record whose classifier weights cannot be verified: a warning, and the run goes on
    record = json.loads(_provenance(first).read_text())
    record["classifier"]["weights_sha256"] = None
    edited.write_text(json.dumps(record))
    del record["device"]  # an older record without a device: the CPU
    edited.write_text(json.dumps(record))
    assert cli("rerun", edited, "--out", tmp_path / "d", "--json") == 0
    out = capsys.readouterr()
    assert ("p2p-desktop: warning: classifier: no weight hash was recorded, so the weights could not be verified"
            in out.err.splitlines())
    summary = json.loads(out.out)
    assert summary["reproduced"] is True and summary["device"] == "cpu"
    last = json.loads(audit_log.read_text().splitlines()[-1])
    assert summary["audit"] == {"log": str(audit_log), "seq": last["seq"], "hash": last["hash"]}


def test_rerun_refuses_a_record_without_a_classifier_and_an_output_folder_in_the_study(cine, model_card, tmp_path,
                                                                                      capsys):
    first = _attack(capsys, "attack", cine, "--attack", "fgsm", "--classifier", model_card, "--out", tmp_path / "a")
    record = json.loads(_provenance(first).read_text())
    assert cli("rerun", _provenance(first), "--out", cine.parent / "adv") == 2
    assert "inside the input study's folder" in capsys.readouterr().err and not (cine.parent / "adv").exists()
    record["classifier"] = {"spec": ""}
    edited = tmp_path / "e.json"
    edited.write_text(json.dumps(record))
    assert cli("rerun", edited, "--out", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert err.strip() == "p2p-desktop: error: the provenance record does not say which classifier was used"
    assert not (tmp_path / "b").exists()


def test_rerun_applies_the_precision_asked_for_and_refuses_one_the_attack_cannot_run(cine, model_card, tmp_path,
                                                                                      capsys):
    first = _attack(capsys, "attack", cine, "--attack", "fgsm", "--classifier", model_card, "--out", tmp_path / "a",
                    "--eps", "0.01")
    for dtype, message in (("bf16", "--dtype bf16 applies to the diffusion attacks (diff-pgd, p2p); fgsm runs in fp32"),
                           ("fp16", "fp16")):
        assert cli("rerun", _provenance(first), "--out", tmp_path / dtype, "--dtype", dtype) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and not (tmp_path / dtype).exists()
    assert cli("rerun", _provenance(first), "--out", tmp_path / "fp32", "--dtype", "fp32", "--json") == 0
    assert json.loads(capsys.readouterr().out)["reproduced"] is True
