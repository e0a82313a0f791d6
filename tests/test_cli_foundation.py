"""CLI contract: classify / attack on pydicom's ultrasound files with a user-supplied squeezenet1_1
weights file, JSON on stdout, exit codes, nothing written on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from p2p_desktop.cli.main import main

CLASSES = "benign,malignant,normal"


@pytest.fixture(scope="module")
def squeezenet_weights(tmp_path_factory) -> Path:
    """A user-supplied torchvision squeezenet1_1 state dict (.pth, loadable with weights_only)."""
    import torch

    from p2p_desktop.models.classifier import build_architecture

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "squeezenet_busi.pth"
    torch.save(build_architecture("squeezenet1_1", 3).state_dict(), path)
    return path


def _reference_probs(weights: Path, image_path, size: int) -> dict[str, float]:
    """The verdict computed here without the project's classifier code: torchvision's
    squeezenet1_1 with the weights, bilinear resize to ``size``, ImageNet normalisation, softmax."""
    import torch
    import torch.nn.functional as F
    import torchvision

    from p2p_desktop.io import load_study

    net = torchvision.models.squeezenet1_1(num_classes=3)
    net.load_state_dict(torch.load(weights, weights_only=True))
    net.eval()
    img = load_study(image_path).image
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        p = torch.softmax(net((x - mean) / std), dim=1)[0].tolist()
    return dict(zip(CLASSES.split(","), p))


def _expect_verdict(result: dict, weights: Path, image_path, size: int) -> None:
    ref = _reference_probs(weights, image_path, size)
    assert result["probs"] == pytest.approx(ref, abs=1e-5)
    assert result["label"] == max(ref, key=ref.get)


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "p2p-desktop" in capsys.readouterr().out


def test_classify_pydicom_ultrasound_json(squeezenet_weights, capsys):
    files = [get_testdata_file(n) for n in ("examples_rgb_color.dcm", "examples_palette.dcm", "ExplVR_BigEnd.dcm")]
    code, out, err = _run(["classify", *files, "--classifier", squeezenet_weights, "--arch", "squeezenet1_1",
                           "--classes", CLASSES, "--input-size", 128, "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert [r["input"] for r in data["results"]] == [str(f) for f in files]
    for r, f in zip(data["results"], files):
        _expect_verdict(r, squeezenet_weights, f, 128)  # the label and probabilities of this image
        assert abs(sum(r["probs"].values()) - 1) < 1e-4


def test_attack_pgd_on_pydicom_ultrasound(squeezenet_weights, tmp_path, capsys):
    src = get_testdata_file("examples_rgb_color.dcm")
    out_dir = tmp_path / "out"
    code, out, err = _run(["attack", src, "--attack", "pgd", "--classifier", squeezenet_weights,
                           "--arch", "squeezenet1_1", "--classes", CLASSES, "--input-size", 128,
                           "--out", out_dir, "--steps", 3, "--eps", 0.03, "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    data = json.loads(out)
    for key in ("input", "input_sha256", "attack", "config", "classifier", "backbone", "original", "adversarial",
                "success", "metrics", "outputs", "timing", "seed", "device"):
        assert key in data
    assert data["attack"] == "pgd" and data["config"]["eps"] == 0.03
    assert set(data["metrics"]) >= {"ssim", "psnr", "l2", "linf", "lpips"}
    assert data["metrics"]["linf"] <= 0.03 + 1e-6
    if data["metrics"]["lpips"] is None:
        assert any("LPIPS" in n for n in data["notes"])
    kinds = {o["kind"] for o in data["outputs"]}
    assert {"png", "perturbation"} <= kinds
    import hashlib

    from PIL import Image

    for o in data["outputs"]:
        assert hashlib.sha256(Path(o["path"]).read_bytes()).hexdigest() == o["sha256"]
    png = next(o["path"] for o in data["outputs"] if o["kind"] == "png")
    assert Image.open(png).size == (320, 240) and Image.open(png).mode == "RGB"
    pert = np.load(next(o["path"] for o in data["outputs"] if o["kind"] == "perturbation"))
    assert pert.shape == (240, 320, 3)


def test_attack_same_seed_same_png(squeezenet_weights, tmp_path, capsys):
    src = get_testdata_file("ExplVR_BigEnd.dcm")
    pngs = []
    for i in range(2):
        code, out, err = _run(["attack", src, "--attack", "pgd", "--classifier", squeezenet_weights,
                               "--arch", "squeezenet1_1", "--classes", CLASSES, "--input-size", 64,
                               "--out", tmp_path / f"o{i}", "--steps", 2, "--seed", 4, "--json"], capsys)
        assert code == 0, err
        pngs.append(next(o for o in json.loads(out)["outputs"] if o["kind"] == "png")["sha256"])
    assert pngs[0] == pngs[1]


@pytest.mark.parametrize("argv_tail,needle", [
    (["--attack", "nope"], "unknown attack"),
    (["--attack", "pgd", "--eps", "-1"], "eps"),
    (["--attack", "pgd", "--steps", "0"], "steps"),
    (["--attack", "pgd", "--target", "cat"], "cat"),
])
def test_bad_arguments_exit_2_one_line_nothing_written(squeezenet_weights, tmp_path, capsys, argv_tail, needle):
    src = get_testdata_file("examples_rgb_color.dcm")
    out_dir = tmp_path / "out"
    code, out, err = _run(["attack", src, "--classifier", squeezenet_weights, "--arch", "squeezenet1_1",
                           "--classes", CLASSES, "--out", out_dir, *argv_tail], capsys)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out_dir.exists()


def test_bad_input_files_exit_2(squeezenet_weights, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.dcm").write_bytes(b"")
    (bad / "fake.dcm").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    before = sorted(p.name for p in bad.iterdir())
    for f in ("empty.dcm", "fake.dcm"):
        code, out, err = _run(["attack", bad / f, "--attack", "fgsm", "--classifier", squeezenet_weights,
                               "--arch", "squeezenet1_1", "--classes", CLASSES, "--out", tmp_path / "o"], capsys)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and f in err
    assert sorted(p.name for p in bad.iterdir()) == before
    assert not (tmp_path / "o").exists()


def test_output_inside_input_folder_refused(squeezenet_weights, tmp_path, capsys):
    import shutil

    study_dir = tmp_path / "study"
    study_dir.mkdir()
    src = study_dir / "us.dcm"
    shutil.copy(get_testdata_file("examples_rgb_color.dcm"), src)
    code, out, err = _run(["attack", src, "--attack", "fgsm", "--classifier", squeezenet_weights, "--arch",
                           "squeezenet1_1", "--classes", CLASSES, "--out", study_dir / "adv"], capsys)
    assert code == 2 and "inside the input" in err
    assert sorted(p.name for p in study_dir.iterdir()) == ["us.dcm"]


def test_wrong_class_count_is_refused(squeezenet_weights, tmp_path, capsys):
    code, out, err = _run(["classify", get_testdata_file("examples_rgb_color.dcm"), "--classifier",
                           squeezenet_weights, "--arch", "squeezenet1_1", "--classes", "a,b"], capsys)
    assert code == 2 and "2 classes" in err


def test_pickle_payload_refused_and_never_runs(tmp_path, capsys):
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": Payload()}))
    code, out, err = _run(["classify", get_testdata_file("examples_rgb_color.dcm"), "--classifier", evil,
                           "--arch", "squeezenet1_1", "--classes", CLASSES], capsys)
    assert code == 2 and "refused" in err
    assert not marker.exists()


def test_console_entry_point_subprocess(squeezenet_weights, tmp_path):
    """The installed `p2p-desktop` command, as a user runs it."""
    exe = Path(sys.executable).parent / "p2p-desktop"
    assert exe.exists(), "package not installed in the venv"
    env = {**os.environ, "P2P_DESKTOP_HOME": str(tmp_path / "home")}
    proc = subprocess.run([str(exe), "classify", get_testdata_file("examples_ybr_color.dcm"), "--classifier",
                           str(squeezenet_weights), "--arch", "squeezenet1_1", "--classes", CLASSES, "--json"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    _expect_verdict(json.loads(proc.stdout)["results"][0], squeezenet_weights,
                    get_testdata_file("examples_ybr_color.dcm"), 224)
    proc = subprocess.run([str(exe), "classify", str(tmp_path / "missing.dcm"), "--classifier",
                           str(squeezenet_weights), "--arch", "squeezenet1_1", "--classes", CLASSES],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


def test_every_sub_command_is_dispatched_as_a_command_not_a_path(capsys):
    """``p2p-desktop FILE`` opens a study, so every sub-command name must be known as one
    (``reader-study`` is the command of module ``cmd_reader_study``)."""
    from p2p_desktop.cli.main import COMMAND_MODULES, build_parser, split_paths

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(COMMAND_MODULES) == set(sub.choices)
    for name in COMMAND_MODULES:
        assert split_paths([name, "x"]) == ([name, "x"], [])
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0, name
    capsys.readouterr()
