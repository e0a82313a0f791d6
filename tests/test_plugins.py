"""Plugins: discovered from manifests without import, enabled by hash, broken ones reported."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from p2p_desktop import plugins
from p2p_desktop.cli.main import main as _main
from p2p_desktop.errors import InputError

REPO = Path(__file__).resolve().parent.parent


def main(argv):
    return _main([str(a) for a in argv])


@pytest.fixture(autouse=True)
def user_home(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_DESKTOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("P2P_DESKTOP_PLUGIN_PATH", raising=False)
    yield
    from p2p_desktop.attacks import registry

    for name in [s.name for s in registry._specs.values() if s.source == "plugin"]:
        registry._specs.pop(name)
    from p2p_desktop.models import registry as mreg

    mreg._extra.clear()


def test_examples_discovered_without_importing(capsys):
    before = set(sys.modules)
    infos = {p.name: p for p in plugins.discover()}
    assert {"mi-fgsm", "phantom-cnn"} <= set(infos)
    assert infos["mi-fgsm"].kind == "attack" and infos["phantom-cnn"].kind == "classifier"
    assert all(i.status == "disabled" and len(i.sha256) == 64 for i in infos.values())
    assert not [m for m in set(sys.modules) - before if "plugin" in m or "mi_fgsm" in m]
    assert main(["plugins", "list", "--json"]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert listed["mi-fgsm"]["path"].endswith("plugin.json") and listed["mi-fgsm"]["status"] == "disabled"


def test_disabled_plugin_is_refused_with_how_to_enable(tmp_path, capsys):
    code = main(["attack", get_testdata_file("examples_rgb_color.dcm"), "--attack", "mi-fgsm",
                 "--classifier", "x.pth", "--arch", "squeezenet1_1", "--classes", "a,b", "--out", tmp_path / "o"])
    err = capsys.readouterr().err
    assert code == 2 and "plugins enable mi-fgsm" in err and "sha256" in err
    assert not (tmp_path / "o").exists()


def test_enabled_attack_plugin_runs_from_cli(tmp_path, capsys):
    import torch

    from p2p_desktop.models.classifier import build_architecture

    torch.manual_seed(0)
    w = tmp_path / "sq.pth"
    torch.save(build_architecture("squeezenet1_1", 3).state_dict(), w)
    assert main(["plugins", "enable", "mi-fgsm"]) == 0
    capsys.readouterr()
    code = main(["attack", get_testdata_file("examples_rgb_color.dcm"), "--attack", "mi-fgsm", "--classifier", w,
                 "--arch", "squeezenet1_1", "--classes", "benign,malignant,normal", "--input-size", 64,
                 "--steps", 3, "--eps", 0.02, "--out", tmp_path / "o", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    data = json.loads(out.out)
    assert data["attack"] == "mi-fgsm" and data["timing"]["iterations"] == 3
    assert data["metrics"]["linf"] <= 0.02 + 1e-6


@pytest.mark.skipif(not (REPO / "plugins/phantom_cnn/weights.safetensors").exists(),
                    reason="example classifier plugin weights not trained yet")
def test_enabled_classifier_plugin_classifies_phantoms(tmp_path, capsys):
    from p2p_desktop.io.encode import encode_png
    from p2p_desktop.phantoms import generate_phantom

    assert main(["plugins", "enable", "phantom-cnn"]) == 0
    d = tmp_path / "ph"
    d.mkdir()
    truth = {}
    for i in range(9):
        p = generate_phantom(30_000_000 + i, size=128)
        (d / f"p{i}.png").write_bytes(encode_png(p.image[:, :, None]))
        truth[str(d / f"p{i}.png")] = p.label
    capsys.readouterr()
    assert main(["classify", str(d), "--classifier", "phantom-cnn", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["results"]
    assert len(res) == 9
    assert sum(r["label"] == truth[r["input"]] for r in res) >= 7


def test_changed_plugin_needs_new_approval(tmp_path, monkeypatch):
    extra = tmp_path / "userplugins"
    shutil.copytree(REPO / "plugins/mi_fgsm", extra / "mi_fgsm2")
    manifest = extra / "mi_fgsm2/plugin.json"
    data = json.loads(manifest.read_text())
    data["name"] = "mi-fgsm-copy"
    manifest.write_text(json.dumps(data))
    monkeypatch.setenv("P2P_DESKTOP_PLUGIN_PATH", str(extra))
    plugins.enable("mi-fgsm-copy")
    assert plugins.find("mi-fgsm-copy").status == "enabled"
    (extra / "mi_fgsm2/mi_fgsm.py").write_text((extra / "mi_fgsm2/mi_fgsm.py").read_text() + "\n# edited\n")
    info = plugins.find("mi-fgsm-copy")
    assert info.status == "changed"
    with pytest.raises(InputError, match="changed"):
        plugins.load_plugin_object(info)


def test_broken_plugins_are_listed_not_fatal(tmp_path, monkeypatch, capsys):
    extra = tmp_path / "broken"
    (extra / "badjson").mkdir(parents=True)
    (extra / "badjson/plugin.json").write_text("{nope")
    (extra / "badkind").mkdir()
    (extra / "badkind/plugin.json").write_text(json.dumps({"name": "k", "kind": "sampler", "entry": "a:b"}))
    (extra / "raises").mkdir()
    (extra / "raises/plugin.json").write_text(json.dumps({"name": "raiser", "kind": "attack", "entry": "boom:X"}))
    (extra / "raises/boom.py").write_text("raise RuntimeError('plugin import exploded')\n")
    monkeypatch.setenv("P2P_DESKTOP_PLUGIN_PATH", str(extra))
    infos = {i.path: i for i in plugins.discover()}
    assert infos[str(extra / "badjson/plugin.json")].status == "broken"
    assert "sampler" in infos[str(extra / "badkind/plugin.json")].error
    plugins.enable("raiser")
    plugins.load_plugins()  # what start-up does
    from p2p_desktop.attacks import registry

    names = [s.name for s in registry.available()]  # registering never imports
    assert "raiser" in names and "pgd" in names
    with pytest.raises(InputError, match="exploded"):
        registry.get("raiser")
    assert main(["plugins", "list"]) == 0
    assert "broken" in capsys.readouterr().out
