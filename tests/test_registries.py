"""Passive registries: plugins are registered once at start-up, never looked for by a registry;
an attack's summary and needs are read from its class; a model name is resolved in one place."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from p2p_desktop import plugins
from p2p_desktop.attacks import registry
from p2p_desktop.errors import InputError, ModelError
from p2p_desktop.models import registry as mreg

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
PACKAGE = Path(__file__).resolve().parent.parent / "p2p_desktop"


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("module", ["attacks/registry.py", "models/registry.py"])
def test_registries_import_neither_the_plugin_loader_nor_the_model_loaders(module):
    imported = _imports(PACKAGE / module)
    assert not {m for m in imported if m.startswith("p2p_desktop.plugins")}
    assert not {m for m in imported if m.startswith(("p2p_desktop.models.classifier", "p2p_desktop.models.backbone"))}


def test_asking_a_registry_never_discovers_plugins(monkeypatch):
    def refuse():
        raise AssertionError("a registry looked for plugins")

    monkeypatch.setattr(plugins, "discover", refuse)
    assert [s.name for s in registry.available()][:4] == ["fgsm", "pgd", "diff-pgd", "p2p"]
    assert registry.spec("pgd").name == "pgd"
    mreg.entries()
    mreg.names("classifier")
    mreg.find("demo")


def test_summary_and_needs_come_from_the_class():
    from p2p_desktop.attacks.fgsm import FGSM

    for s in registry.BUILTIN:
        cls = registry.get(s.name)
        assert s.summary == cls.summary and cls.summary
        assert s.requires_backbone is cls.requires_backbone
    assert registry.spec("fgsm").summary == FGSM.summary  # one text: it used to be written twice, differently
    assert [s.name for s in registry.BUILTIN if s.requires_backbone] == ["diff-pgd", "p2p", "random-prompt",
                                                                         "p2p-lr0"]


def test_a_plugin_shows_its_manifest_summary_until_imported_then_its_class():
    class Imported:
        summary = "from the class"

    spec = registry.AttackSpec("reg-test", "nowhere:X", "from the manifest", source="plugin", loader=lambda: Imported)
    registry.register(spec)
    try:
        assert registry.spec("reg-test").summary == "from the manifest"
        assert registry.get("reg-test") is Imported
        assert registry.spec("reg-test").summary == "from the class"
    finally:
        registry.unregister("reg-test")
    with pytest.raises(InputError, match="unknown attack 'reg-test'"):
        registry.spec("reg-test")


def test_a_known_plugin_that_is_not_enabled_says_how_to_enable_it(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_DESKTOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("P2P_DESKTOP_PLUGIN_PATH", raising=False)
    try:
        infos = plugins.load_plugins()
        assert "mi-fgsm" in {i.name for i in infos}
        assert "mi-fgsm" not in [s.name for s in registry.available()]
        with pytest.raises(InputError, match="plugins enable mi-fgsm"):
            registry.spec("mi-fgsm")
        plugins.enable("mi-fgsm")
        assert "mi-fgsm" not in [s.name for s in registry.available()]  # not before a refresh
        plugins.load_plugins()  # the refresh (the Plugins dialog does it)
        assert registry.spec("mi-fgsm").source == "plugin"
        plugins.disable("mi-fgsm")
        plugins.load_plugins()
        assert "mi-fgsm" not in [s.name for s in registry.available()]
    finally:
        registry.clear_plugins()
        mreg.clear_plugins()


def test_model_names_are_resolved_in_one_place():
    from p2p_desktop.models.backbone import _resolve_spec
    from p2p_desktop.models.classifier import load_classifier

    with pytest.raises(ModelError, match="classifier 'no-such-model' not found: give a registered name"):
        load_classifier("no-such-model")
    with pytest.raises(ModelError, match="backbone 'no-such-model' not found: give a registered name"):
        _resolve_spec("no-such-model")
    backbones = mreg.names("backbone")
    if backbones:  # a backbone is not a classifier
        with pytest.raises(ModelError, match=f"classifier {backbones[0]!r} not found"):
            mreg.resolve(backbones[0], "classifier")


@pytest.mark.gui
def test_the_attack_panel_shows_the_class_summary(qtbot):
    from PySide6.QtCore import Qt

    from p2p_desktop.attacks.fgsm import FGSM
    from p2p_desktop.attacks.pgd import PGD
    from p2p_desktop.gui.attack_panel import AttackPanel

    panel = AttackPanel()
    qtbot.addWidget(panel)
    for name, cls in (("fgsm", FGSM), ("pgd", PGD)):
        assert panel.set_attack(name)
        assert panel.summary.text() == cls.summary
        index = panel.attack_combo.findData(name)
        assert panel.attack_combo.itemData(index, Qt.ItemDataRole.ToolTipRole) == cls.summary
