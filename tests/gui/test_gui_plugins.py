"""Both example plugins appear in the GUI once approved there, and run through the worker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugin_home(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_DESKTOP_HOME", str(tmp_path / "home"))
    yield
    from p2p_desktop.attacks import registry
    from p2p_desktop.models import registry as mreg

    for name in [s.name for s in registry._specs.values() if s.source == "plugin"]:
        registry._specs.pop(name)
    for name in [e.name for e in mreg._extra.values() if e.source == "plugin"]:
        mreg._extra.pop(name)


def _sample():
    return REPO / "resources" / "samples" / "dicom" / "malignant" / "malignant_9000001.dcm"


def test_plugins_dialog_shows_hash_and_enabling_adds_them_to_the_panel(qtbot, window, plugin_home, tmp_path):
    asked = []
    window.approve_plugin = lambda info: asked.append((info.name, info.path, info.sha256)) or True
    assert window.panel.attack_combo.findData("mi-fgsm") == -1  # not imported, not offered
    dialog = window.show_plugins()
    assert dialog.status_of("mi-fgsm") == "disabled" and dialog.status_of("phantom-cnn") == "disabled"
    row = next(r for r, i in enumerate(dialog.infos) if i.name == "mi-fgsm")
    assert len(dialog.table.item(row, 5).text()) == 64  # the SHA-256 is shown
    assert dialog.enable("mi-fgsm") and dialog.enable("phantom-cnn")
    assert [a[0] for a in asked] == ["mi-fgsm", "phantom-cnn"]
    assert window.panel.attack_combo.findData("mi-fgsm") >= 0
    assert window.panel.set_classifier("phantom-cnn")
    dialog.close()


def test_attack_plugin_runs_in_the_gui(qtbot, window, plugin_home):
    from p2p_desktop import plugins

    plugins.enable("mi-fgsm")
    window._plugins_changed()
    with qtbot.waitSignal(window.browser.loading_finished, timeout=20000):
        window.open_paths([_sample()])
    qtbot.waitUntil(lambda: window.current_study is not None, timeout=5000)
    window.panel.set_attack("mi-fgsm")
    window.panel.set_params(steps=3, eps=0.02)
    with qtbot.waitSignal(window.runner.finished, timeout=120000):
        assert window.run_attack()
    entry = window.current_entry()
    assert window.errors == [] and entry.result.attack == "mi-fgsm" and entry.result.iterations == 3


@pytest.mark.skipif(not (REPO / "plugins/phantom_cnn/weights.safetensors").exists(), reason="plugin weights missing")
def test_classifier_plugin_runs_in_the_gui(qtbot, window, plugin_home):
    from p2p_desktop import plugins

    plugins.enable("phantom-cnn")
    window._plugins_changed()
    assert window.panel.set_classifier("phantom-cnn")
    with qtbot.waitSignal(window.browser.loading_finished, timeout=20000):
        window.open_paths([_sample()])
    qtbot.waitUntil(lambda: window.current_study is not None, timeout=5000)
    window.panel.set_attack("fgsm")
    with qtbot.waitSignal(window.runner.finished, timeout=120000):
        assert window.run_attack()
    entry = window.current_entry()
    assert window.errors == [] and entry.result.classifier["name"] == "phantom-cnn"


def test_changed_plugin_asks_again_at_start(qtbot, window, plugin_home, tmp_path, monkeypatch):
    from p2p_desktop import plugins

    extra = tmp_path / "user-plugins"
    shutil.copytree(REPO / "plugins/mi_fgsm", extra / "copy")
    manifest = extra / "copy/plugin.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "name": "mi-fgsm-copy"}))
    monkeypatch.setenv("P2P_DESKTOP_PLUGIN_PATH", str(extra))
    plugins.enable("mi-fgsm-copy")
    (extra / "copy/mi_fgsm.py").write_text((extra / "copy/mi_fgsm.py").read_text() + "\n# changed\n")
    asked = []
    window.approve_plugin = lambda info: asked.append(info.status) or False
    assert window.review_changed_plugins() == []
    assert asked == ["changed"]
    assert plugins.find("mi-fgsm-copy").status == "disabled"
