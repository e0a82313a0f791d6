"""Plugin loading edges (issue 19, mutation survivors under honest worker isolation): the exact
lines users read when approved code changed or cannot be read, an entry point's installed parent
package, a foreign module already imported under a plugin's name, one finder per snapshot, what
the registries hold for a plugin, and which plugin a registered name is loaded as."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from p2p_desktop import plugins
from p2p_desktop.errors import InputError
from tests.plugin_kit import ATTACK_SRC, make_attack, make_entry_point_package
from tests.plugin_kit import make_plugin as _plugin

pytestmark = pytest.mark.usefixtures("plugin_sandbox")


def _attack(tmp_path, name, mark="v1"):
    return make_attack(tmp_path, name, mark)


def _entry_point_package(tmp_path, monkeypatch, entry: str, files: dict[str, str], dist: str = "edgepkg") -> Path:
    return make_entry_point_package(tmp_path, monkeypatch, entry, files, dist=dist)


def _changed_line(name: str) -> str:
    return (f"plugin {name!r} is changed: its files changed since it was enabled, so it is not run; "
            f"enable it again with `p2p-desktop plugins enable {name}` to approve the new code")


# -- changed or unreadable approved code ------------------------------------------------------------
def test_a_folder_plugin_edited_after_it_was_found_is_refused_as_changed(tmp_path):
    d = _attack(tmp_path, "e-fold")
    plugins.enable("e-fold")
    info = plugins.find("e-fold")  # found and approved; then edited before the first import
    (d / "impl.py").write_text(ATTACK_SRC.format(name="e-fold", mark="edited"))
    with pytest.raises(InputError) as exc:
        plugins.load_plugin_object(info)
    assert str(exc.value) == _changed_line("e-fold")


def test_an_entry_point_plugin_edited_after_it_was_found_is_refused_as_changed(tmp_path, monkeypatch):
    site = _entry_point_package(tmp_path, monkeypatch, "attack.e-ep = edgepkg.mod:A", {
        "edgepkg/__init__.py": "", "edgepkg/mod.py": ATTACK_SRC.format(name="e-ep", mark="v1")})
    plugins.enable("e-ep")
    info = plugins.find("e-ep")
    (site / "edgepkg" / "mod.py").write_text(ATTACK_SRC.format(name="e-ep", mark="edited"))
    with pytest.raises(InputError) as exc:
        plugins.load_plugin_object(info)
    assert str(exc.value) == _changed_line("e-ep")


def test_an_entry_point_plugin_whose_file_is_gone_is_one_line(tmp_path, monkeypatch):
    site = _entry_point_package(tmp_path, monkeypatch, "attack.e-gone = edgepkg.gone:A", {
        "edgepkg/__init__.py": "", "edgepkg/gone.py": ATTACK_SRC.format(name="e-gone", mark="v1")})
    plugins.enable("e-gone")
    info = plugins.find("e-gone")
    (site / "edgepkg" / "gone.py").unlink()
    with pytest.raises(InputError) as exc:
        plugins.load_plugin_object(info)
    assert str(exc.value) == ("plugin 'e-gone' refused: edgepkg/gone.py is listed in the RECORD of edgepkg "
                              "but missing")


def test_an_entry_module_that_is_no_file_in_the_folder_is_one_line(tmp_path):
    d = _plugin(tmp_path, "e-nomod", {"name": "e-nomod", "kind": "attack", "entry": "impl:A"},
                {"impl.py": ATTACK_SRC.format(name="e-nomod", mark="v1")})
    plugins.enable("e-nomod")
    info = plugins.find("e-nomod")
    info = plugins.PluginInfo(**{**info.to_dict(), "entry": "elsewhere:A"})
    with pytest.raises(InputError) as exc:
        plugins.load_plugin_object(info)
    assert str(exc.value) == (f"plugin 'e-nomod' failed to load (elsewhere:A): ImportError: module 'elsewhere' "
                              f"is not a .py file inside {d}")


# -- entry points: the installed parent package, a foreign module of the same name ------------------
def test_an_entry_points_installed_parent_package_is_imported_first(tmp_path, monkeypatch):
    _entry_point_package(tmp_path, monkeypatch, "attack.e-deep = edgedeep.sub.mod:A", {
        "edgedeep/__init__.py": "",
        "edgedeep/sub/__init__.py": "READY = 'parent ran'\n",
        "edgedeep/sub/mod.py": "import sys\nPARENT = sys.modules[__name__.rpartition('.')[0]].READY\n"
                               + ATTACK_SRC.format(name="e-deep", mark="deep"),
    }, dist="edgedeep")
    plugins.enable("e-deep")
    obj = plugins.load_plugin_object(plugins.find("e-deep"))
    assert obj.MARK == "deep" and sys.modules["edgedeep.sub.mod"].PARENT == "parent ran"


def test_a_module_imported_outside_the_plugin_loader_is_not_taken_for_the_approved_one(tmp_path, monkeypatch):
    _entry_point_package(tmp_path, monkeypatch, "attack.e-pre = edgepkg.pre:A", {
        "edgepkg/__init__.py": "", "edgepkg/pre.py": ATTACK_SRC.format(name="e-pre", mark="v1")})
    import importlib

    foreign = importlib.import_module("edgepkg.pre")  # e.g. imported by other code, from a .pyc
    plugins.enable("e-pre")
    info = plugins.find("e-pre")
    obj = plugins.load_plugin_object(info)
    module = sys.modules[obj.__module__]
    assert module is not foreign and module.__p2p_plugin_sha256__ == info.sha256


# -- folder plugins: one finder per verified snapshot -------------------------------------------------
def test_reloading_a_plugin_keeps_one_finder_for_its_snapshot(tmp_path):
    _attack(tmp_path, "e-find")
    plugins.enable("e-find")
    info = plugins.find("e-find")
    first = plugins.load_plugin_object(info)
    package = first.__module__.rpartition(".")[0]
    for name in [m for m in sys.modules if m.startswith(package + ".")]:
        sys.modules.pop(name)  # something dropped the plugin's module: it is imported again
    again = plugins.load_plugin_object(info)
    assert again is not first and again.MARK == "v1"
    finders = [f for f in sys.meta_path if getattr(f, "package", None) == package]
    assert len(finders) == 1 and plugins._finders[package] is finders[0]


# -- what the registries hold ---------------------------------------------------------------------
def test_registered_plugins_carry_their_entry_path_and_cpu_default(tmp_path):
    from p2p_desktop.attacks import registry
    from p2p_desktop.models import registry as mreg

    _attack(tmp_path, "e-reg")
    clf = _plugin(tmp_path, "e-clf", {"name": "e-clf", "kind": "classifier", "entry": "clf:load"},
                  {"clf.py": "def load(device):\n    return ('classifier on', device)\n"})
    plugins.enable("e-reg")
    plugins.enable("e-clf")
    plugins.load_plugins()
    assert registry._specs["e-reg"].target == "impl:A"
    entry = mreg.find("e-clf")
    assert entry.path == Path(plugins.find("e-clf").path) and entry.path.parent == clf
    assert entry.loader() == ("classifier on", "cpu")
    assert entry.loader(device="meta") == ("classifier on", "meta")


def test_disabling_one_plugin_keeps_the_others_approval(tmp_path):
    _attack(tmp_path, "e-one")
    _attack(tmp_path, "e-two")
    plugins.enable("e-one")
    plugins.enable("e-two")
    plugins.disable("e-one")
    assert plugins.find("e-one").status != "enabled" and plugins.find("e-two").status == "enabled"
    plugins.disable("e-one")  # not enabled: nothing happens
    assert plugins.find("e-two").status == "enabled"


def test_a_registered_name_is_loaded_as_that_plugin_only(tmp_path):
    """A plugin whose manifest was renamed after registration is not loaded under its old name,
    even though it lives at the same path."""
    from p2p_desktop.attacks import registry

    d = _attack(tmp_path, "e-old")
    plugins.enable("e-old")
    plugins.load_plugins()
    manifest = json.loads((d / "plugin.json").read_text())
    (d / "plugin.json").write_text(json.dumps({**manifest, "name": "e-new"}))
    info = plugins.PluginInfo(**{**plugins.find("e-new").to_dict(), "name": "e-old"})
    with pytest.raises(InputError) as exc:
        registry._specs["e-old"].loader()
    assert str(exc.value) == (f"plugin 'e-old' is disabled: it runs code from {info.path} (sha256 "
                              f"{_registered_sha(d, manifest)[:12]}…); enable it with `p2p-desktop plugins enable "
                              "e-old` or in the app's Plugins dialog")


def _registered_sha(folder: Path, manifest: dict) -> str:
    """The hash the plugin had under its old manifest (recomputed from the files as they were)."""
    now = (folder / "plugin.json").read_text()
    (folder / "plugin.json").write_text(json.dumps(manifest))
    try:
        return plugins._hash_folder(folder)
    finally:
        (folder / "plugin.json").write_text(now)


# -- approvals ---------------------------------------------------------------------------------------
def test_the_approval_file_is_indented_json_in_a_new_user_folder(tmp_path):
    _attack(tmp_path, "e-state")
    state = plugins._state_path()
    assert not state.parent.exists()
    info = plugins.enable("e-state")
    assert state.read_text(encoding="utf-8") == json.dumps(
        {"e-state": {"path": info.path, "sha256": info.sha256}}, indent=2) + "\n"
    assert [p.name for p in state.parent.iterdir() if p.name.startswith(state.name)] == [state.name]


def test_enabling_a_broken_plugin_says_why_in_one_line(tmp_path):
    _plugin(tmp_path, "e-broken", {"name": "e-broken", "kind": "sorcery", "entry": "m:A"}, {"m.py": ""})
    with pytest.raises(InputError) as exc:
        plugins.enable("e-broken")
    assert str(exc.value) == ("plugin 'e-broken' is broken: kind 'sorcery' is not one of "
                              f"{', '.join(plugins.KINDS)}")


def test_a_stale_approval_is_refused_even_when_the_new_code_is_approved(tmp_path):
    d = _attack(tmp_path, "e-stale")
    plugins.enable("e-stale")
    stale = plugins.find("e-stale")
    (d / "impl.py").write_text(ATTACK_SRC.format(name="e-stale", mark="v2"))
    plugins.enable("e-stale")  # the user approved the new code; the old description is stale
    with pytest.raises(InputError) as exc:
        plugins.load_plugin_object(stale)
    assert str(exc.value) == _changed_line("e-stale")
    assert plugins.load_plugin_object(plugins.find("e-stale")).MARK == "v2"


def test_a_symlink_that_dangles_after_approval_is_refused_in_one_line(tmp_path):
    d = _attack(tmp_path, "e-link")
    plugins.enable("e-link")
    info = plugins.find("e-link")
    (d / "data.bin").symlink_to(d / "missing-target")
    with pytest.raises(InputError) as exc:
        plugins.load_plugin_object(info)
    assert str(exc.value) == "plugin 'e-link' refused: symlink data.bin dangles or loops"


# -- discovery --------------------------------------------------------------------------------------
def test_the_plugin_path_lists_several_folders(tmp_path, monkeypatch):
    import os

    a, b = tmp_path / "one", tmp_path / "two words"
    monkeypatch.setenv("P2P_DESKTOP_PLUGIN_PATH", f"{a}{os.pathsep}{os.pathsep}{b}")
    assert plugins.plugin_dirs()[-2:] == [a, b]


def test_the_approval_hash_is_pinned_by_an_independent_recomputation(tmp_path):
    """Approvals are stored by this hash: any change to its definition would silently revoke
    every user's approvals, so it is recomputed here from its definition."""
    import hashlib

    d = _attack(tmp_path, "e-hash")
    (d / "sub").mkdir()
    (d / "sub" / "data.bin").write_bytes(b"\x00\x01" * 1000)
    (d / "sub" / "helper.py").write_text("X = 1\n")
    h = hashlib.sha256()
    for rel in sorted(["impl.py", "plugin.json", "sub/data.bin", "sub/helper.py"]):
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256((d / rel).read_bytes()).digest())
    assert plugins.find("e-hash").sha256 == h.hexdigest()


def test_stray_bytecode_files_are_not_part_of_the_approval(tmp_path):
    d = _attack(tmp_path, "e-pyc")
    before = plugins.find("e-pyc").sha256
    (d / "impl.pyc").write_bytes(b"planted")
    (d / "impl.pyo").write_bytes(b"planted")
    assert plugins.find("e-pyc").sha256 == before


def test_a_refused_plugin_has_no_hash_and_says_why(tmp_path, monkeypatch):
    import errno

    from p2p_desktop import hashing

    d = _attack(tmp_path, "e-eio")
    (d / "weights.bin").write_bytes(b"w")
    real = hashing.sha256_file

    def unreadable(path, *args, **kwargs):
        if path.name == "weights.bin":
            raise OSError(errno.EIO, "Input/output error")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(hashing, "sha256_file", unreadable)
    info = plugins.find("e-eio")
    assert (info.status, info.sha256) == ("broken", "")
    assert info.error == "refused: cannot read weights.bin: Input/output error"


def test_an_approval_file_that_is_not_an_object_approves_nothing(tmp_path):
    _attack(tmp_path, "e-list")
    state = plugins._state_path()
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text('[["e-list"]]')
    assert plugins.find("e-list").status == "disabled"
    plugins.enable("e-list")
    assert plugins.find("e-list").status == "enabled"


def test_a_manifest_entry_module_that_is_missing_is_named(tmp_path):
    _plugin(tmp_path, "e-miss", {"name": "e-miss", "kind": "attack", "entry": "nowhere:A"}, {"impl.py": ""})
    _plugin(tmp_path, "e-noentry", {"name": "e-noentry", "kind": "attack"}, {"impl.py": ""})
    info = plugins.find("e-miss")
    assert (info.status, info.error) == ("broken", "entry module 'nowhere' is not a .py file inside the plugin folder")
    info = plugins.find("e-noentry")
    assert (info.status, info.entry, info.error) == ("broken", "", "'entry' must be 'module:attr'")


def test_a_broken_entry_point_still_names_its_module_file(tmp_path, monkeypatch):
    site = _entry_point_package(tmp_path, monkeypatch, "attack.e-colons = edgepkg.mod:A:B", {
        "edgepkg/__init__.py": "", "edgepkg/mod.py": ATTACK_SRC.format(name="e-colons", mark="v1")})
    info = plugins.find("e-colons")
    assert info.status == "broken" and info.error == (
        "'entry' 'edgepkg.mod:A:B' must be 'module:attr' with a module inside the plugin's folder (dotted names "
        "only, no leading dot)")
    assert info.path == str(site / "edgepkg" / "mod.py")


@pytest.mark.parametrize("name, owner", [("fgsm", "attack"), ("demo-densenet121", "classifier model"),
                                         ("demo", "backbone model")])
def test_names_of_built_in_attacks_and_bundle_models_are_refused_by_name(tmp_path, name, owner):
    _plugin(tmp_path, "e-taken", {"name": name, "kind": "attack", "entry": "impl:A"}, {"impl.py": ""})
    info = next(p for p in plugins.discover() if p.path.startswith(str(tmp_path)))
    assert (info.status, info.error) == ("broken", f"name {name!r} is taken by the built-in {owner}; rename the plugin")


def test_a_second_plugin_of_one_name_names_the_first_and_a_broken_one_keeps_its_reason(tmp_path):
    first = _attack(tmp_path, "a-dup")
    (tmp_path / "plugins" / "b-dup").mkdir()
    (tmp_path / "plugins" / "b-dup" / "plugin.json").write_text(json.dumps(
        {"name": "a-dup", "kind": "attack", "entry": "impl:A"}))
    (tmp_path / "plugins" / "b-dup" / "impl.py").write_text("")
    (tmp_path / "plugins" / "c-dup").mkdir()
    (tmp_path / "plugins" / "c-dup" / "plugin.json").write_text(json.dumps(
        {"name": "a-dup", "kind": "sorcery", "entry": "impl:A"}))
    found = [p for p in plugins.discover() if p.name == "a-dup"]
    assert [p.status for p in found] == ["disabled", "broken", "broken"]
    assert found[1].error == f"name 'a-dup' is already used by the plugin at {first / 'plugin.json'}"
    assert found[2].error == f"kind 'sorcery' is not one of {', '.join(plugins.KINDS)}"


def test_a_sub_import_missing_from_the_snapshot_is_never_found_elsewhere(tmp_path, monkeypatch):
    """A plugin's relative import of a module it does not ship must fail, even when a module of
    that name lies on sys.path: only the verified snapshot is served."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "e_stray.py").write_text("PLANTED = True\n")
    monkeypatch.syspath_prepend(str(outside))
    _plugin(tmp_path, "e-stray", {"name": "e-stray", "kind": "attack", "entry": "impl:A"},
            {"impl.py": "from . import e_stray\n" + ATTACK_SRC.format(name="e-stray", mark="v1")})
    plugins.enable("e-stray")
    with pytest.raises(InputError) as exc:
        plugins.load_plugin_object(plugins.find("e-stray"))
    assert str(exc.value).startswith("plugin 'e-stray' failed to load (impl:A): ImportError: cannot import name "
                                      "'e_stray' from 'p2p_desktop_plugin_")
    assert not any(m.endswith(".e_stray") for m in sys.modules)
