"""`p2p-desktop models list|verify` on the real embedded bundle, and on corrupted copies of it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from p2p_desktop.cli.main import main
from p2p_desktop.errors import ModelError
from p2p_desktop.models import registry
from p2p_desktop.models.classifier import load_classifier
from p2p_desktop.paths import models_dir

DEMO_CLASSIFIERS = ("demo-densenet121", "demo-resnet34", "demo-squeezenet1_1")
STATUSES = {"verified", "missing", "corrupted", "unverified", "invalid"}


def _cards() -> dict[str, dict]:
    out = {}
    for p in sorted(models_dir().glob("*/card.json")):
        card = json.loads(p.read_text(encoding="utf-8"))
        out[card.get("name", p.parent.name)] = card
    return out


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """One copy of resources/models for the whole module (tests link to it, never edit it)."""
    dst = tmp_path_factory.mktemp("pristine") / "models"
    shutil.copytree(models_dir(), dst)
    return dst


@pytest.fixture
def resources_copy(pristine, tmp_path, monkeypatch) -> Path:
    """A private resources folder (hard links to the pristine copy), selected by P2P_DESKTOP_RESOURCES."""
    root = tmp_path / "resources"
    shutil.copytree(pristine, root / "models", copy_function=os.link)
    monkeypatch.setenv("P2P_DESKTOP_RESOURCES", str(root))
    return root


def _flip_byte(path: Path) -> None:
    """Change one byte in the weight data (not the header), on a fresh inode."""
    data = bytearray(path.read_bytes())
    i = len(data) - 1000
    data[i] ^= 0xFF
    path.unlink()  # break the hard link: the pristine copy stays intact
    path.write_bytes(bytes(data))


def test_list_json_has_every_registered_model(capsys):
    assert main(["models", "list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"models"}
    rows = {r["name"]: r for r in out["models"]}
    assert set(_cards()) <= set(rows)
    for row in out["models"]:
        assert {"name", "kind", "path", "sha256", "status"} <= set(row)
        assert row["status"] in STATUSES
    for name in DEMO_CLASSIFIERS:
        row = rows[name]
        assert row["kind"] == "classifier"
        assert row["status"] == "verified"
        assert row["sha256"] == _cards()[name]["sha256"]
        assert Path(row["path"]) == models_dir() / name
    if "demo" in _cards():  # the embedded diffusion backbone, a multi-file card
        assert rows["demo"]["kind"] == "backbone"
        assert rows["demo"]["status"] == "verified"
        assert len(rows["demo"]["sha256"]) == 64


def test_list_human_table(capsys):
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "STATUS", "SHA256", "PATH"]
    for name in DEMO_CLASSIFIERS:
        (line,) = [ln for ln in lines if ln.split()[0] == name]
        assert line.split()[1:3] == ["classifier", "verified"]


def test_verify_passes_on_the_bundle(capsys):
    assert main(["models", "verify"]) == 0
    out = capsys.readouterr().out.splitlines()
    for name in _cards():
        assert any(line.startswith(f"{name}: verified") for line in out)
    assert out[-1] == f"all {len(registry.entries())} models verified"


def test_verify_names_a_corrupted_classifier_and_it_is_never_loaded(resources_copy, capsys):
    weights = resources_copy / "models" / "demo-resnet34" / "model.safetensors"
    _flip_byte(weights)

    assert main(["models", "verify"]) == 2
    cap = capsys.readouterr()
    assert "demo-resnet34: corrupted (model.safetensors: SHA-256 does not match the card)" in cap.out
    assert "demo-squeezenet1_1: verified" in cap.out
    assert cap.err.count("\n") == 1 and "demo-resnet34 (corrupted)" in cap.err
    assert "Traceback" not in cap.err

    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["demo-resnet34"]["status"] == "corrupted"

    with pytest.raises(ModelError, match="corrupted"):
        load_classifier("demo-resnet34")
    with pytest.raises(ModelError, match="does not match its card"):
        load_classifier(weights.parent / "card.json")
    load_classifier("demo-squeezenet1_1")  # the intact ones still load


def test_verify_reports_missing_and_invalid(resources_copy, capsys):
    (resources_copy / "models" / "demo-resnet34" / "model.safetensors").unlink()
    bad = resources_copy / "models" / "broken"
    bad.mkdir()
    (bad / "card.json").write_text("{not json", encoding="utf-8")

    assert main(["models", "verify", "--json"]) == 2
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["ok"] is False
    rows = {r["name"]: r for r in out["models"]}
    assert rows["demo-resnet34"]["status"] == "missing"
    assert rows["demo-resnet34"]["problem"] == "model.safetensors not found"
    assert rows["broken"]["status"] == "invalid"
    assert "demo-resnet34 (missing)" in cap.err and "broken (invalid)" in cap.err
    with pytest.raises(ModelError, match="missing"):
        load_classifier("demo-resnet34")


def test_verify_with_no_models_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("P2P_DESKTOP_RESOURCES", str(tmp_path))
    assert main(["models", "verify"]) == 2
    assert "no registered models" in capsys.readouterr().err


def test_models_needs_an_action(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["models"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("p2p-desktop: error:")


def test_installed_entry_point_verifies_and_lists(resources_copy):
    exe = shutil.which("p2p-desktop", path=str(Path(sys.executable).parent)) or shutil.which("p2p-desktop")
    if exe is None:
        pytest.skip("p2p-desktop is not installed (pip install -e .)")
    env = {**os.environ, "P2P_DESKTOP_RESOURCES": str(resources_copy)}
    ok = subprocess.run([exe, "models", "verify"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "demo-densenet121: verified" in ok.stdout

    _flip_byte(resources_copy / "models" / "demo-densenet121" / "model.safetensors")
    bad = subprocess.run([exe, "models", "list", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 0
    rows = {r["name"]: r["status"] for r in json.loads(bad.stdout)["models"]}
    assert rows["demo-densenet121"] == "corrupted"
    assert rows["demo-resnet34"] == "verified"
