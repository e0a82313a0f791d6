"""Plugin loading details the integrity tests do not see (issue 19, mutation survivors).

A broken plugin stays broken whatever its approval says, failed imports leave nothing behind
in sys.modules, an entry-point plugin is imported once per session (and as a package when its
entry is one), plugin source is compiled with its own future flags, dangling and looping
symlinks are refused by name, and what the registries and provenance record is exact.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from p2p_desktop import plugins
from p2p_desktop.errors import InputError
from tests.plugin_kit import ATTACK_SRC
from tests.plugin_kit import make_attack as _attack
from tests.plugin_kit import make_entry_point_package as _entry_point_package
from tests.plugin_kit import make_plugin as _plugin

# a private user folder and plugin folder; the registries and sys.modules restored after each test
pytestmark = pytest.mark.usefixtures("plugin_sandbox")


def test_entry_field_messages():
    assert plugins._check_fields("n", "attack", None) == "'entry' must be 'module:attr'"
    assert plugins._check_fields("n", "attack", "nocolon") == "'entry' must be 'module:attr'"
    assert plugins._check_fields("n", "attack", "mod:A") == ""


def test_an_unreadable_manifest_is_a_broken_folder_plugin(tmp_path):
    d = tmp_path / "plugins" / "bad"
    d.mkdir(parents=True)
    (d / "plugin.json").write_text("{not json")
    info = plugins.find("bad")
    assert (info.status, info.source, info.kind) == ("broken", "folder", "?")
    assert info.error.startswith("unreadable manifest:")


def test_a_broken_plugin_stays_broken_whatever_its_approval(tmp_path):
    d = _attack(tmp_path, "d-brk")
    plugins.enable("d-brk")
    manifest = json.loads((d / "plugin.json").read_text())
    (d / "plugin.json").write_text(json.dumps({**manifest, "kind": "nonsense"}))
    info = plugins.find("d-brk")
    assert info.status == "broken" and info.error.startswith("kind 'nonsense' is not one of")
    # a broken plugin does not take its name: a good one of the same name is listed normally
    _attack(tmp_path, "z-d-brk-good")
    (tmp_path / "plugins" / "z-d-brk-good" / "plugin.json").write_text(
        json.dumps({"name": "d-brk", "kind": "attack", "entry": "impl:A"}))
    both = [p for p in plugins.discover() if p.name == "d-brk"]
    assert [p.status for p in both] == ["broken", "changed"]  # the good one: approved at the other path


def test_entry_point_with_a_missing_module_is_broken(tmp_path, monkeypatch):
    _entry_point_package(tmp_path, monkeypatch, "attack.d-missing = detailpkg.nowhere:A",
                         {"detailpkg/__init__.py": ""})
    info = plugins.find("d-missing")
    assert info.status == "broken"
    assert info.error == "module 'detailpkg.nowhere' of entry point 'attack.d-missing' not found"


def test_entry_point_plugin_is_imported_once_and_as_a_package(tmp_path, monkeypatch):
    _entry_point_package(tmp_path, monkeypatch, "attack.d-ep = detailpkg:A", {
        "detailpkg/__init__.py": "from .helper import MARK as HELPER\n" + ATTACK_SRC.format(name="d-ep", mark="ep"),
        "detailpkg/helper.py": "MARK = 'helper'\n",
    })
    plugins.enable("d-ep")
    first = plugins.load_plugin_object(plugins.find("d-ep"))
    assert first.MARK == "ep" and sys.modules[first.__module__].HELPER == "helper"
    assert plugins.load_plugin_object(plugins.find("d-ep")) is first  # the session's module, not re-executed


def test_a_failing_entry_point_import_leaves_nothing_behind(tmp_path, monkeypatch):
    _entry_point_package(tmp_path, monkeypatch, "attack.d-boom = detailpkg.boom:A", {
        "detailpkg/__init__.py": "",
        "detailpkg/boom.py": "raise RuntimeError('boom at import')\n",
    })
    plugins.enable("d-boom")
    with pytest.raises(InputError, match="boom at import"):
        plugins.load_plugin_object(plugins.find("d-boom"))
    assert "detailpkg.boom" not in sys.modules


def test_a_failing_folder_import_leaves_nothing_behind(tmp_path):
    _plugin(tmp_path, "d-fail", {"name": "d-fail", "kind": "attack", "entry": "m:A"}, {
        "m/__init__.py": "from . import helper\nraise RuntimeError('boom after a sub-import')\n",
        "m/helper.py": "X = 1\n",
    })
    plugins.enable("d-fail")
    with pytest.raises(InputError, match="boom after a sub-import"):
        plugins.load_plugin_object(plugins.find("d-fail"))
    left = [m for m in sys.modules if m.startswith("p2p_desktop_plugin_") and (m.endswith(".m") or ".m." in m)]
    assert not left  # neither the failed module nor the sub-module it imported before failing


def test_plugin_source_is_compiled_with_its_own_future_flags(tmp_path):
    _attack(tmp_path, "d-ann", extra="\n    def f(self, x: int) -> int:\n        return x\n")
    plugins.enable("d-ann")
    cls = plugins.load_plugin_object(plugins.find("d-ann"))
    assert cls.f.__annotations__ == {"x": int, "return": int}  # not strings: no inherited `annotations` flag


def test_a_dangling_symlink_is_refused(tmp_path):
    d = _attack(tmp_path, "d-dangle")
    os.symlink(d / "missing.txt", d / "link.txt")
    info = plugins.find("d-dangle")
    assert info.status == "broken" and "symlink link.txt dangles or loops" in info.error


def test_a_symlink_loop_inside_the_folder_is_refused_by_depth(tmp_path):
    d = _attack(tmp_path, "d-loop")
    os.symlink(d, d / "loop")  # stays inside the folder, but never ends
    info = plugins.find("d-loop")
    assert info.status == "broken" and "folders nested too deep at loop/loop/loop" in info.error


def test_what_the_registries_and_provenance_record(tmp_path):
    from p2p_desktop.attacks import registry
    from p2p_desktop.models import registry as mreg

    _attack(tmp_path, "d-reg")
    _plugin(tmp_path, "d-clf", {"name": "d-clf", "kind": "classifier", "entry": "clf:load"},
            {"clf.py": "def load(device='cpu'):\n    return ('classifier on', device)\n"})
    plugins.enable("d-reg")
    plugins.enable("d-clf")
    plugins.load_plugins()
    assert registry._specs["d-reg"].source == "plugin"
    entry = mreg.find("d-clf")
    assert entry is not None and entry.source == "plugin"
    info = plugins.find("d-reg")
    plugins.load_plugin_object(info)
    assert plugins.loaded("d-reg") == {"name": "d-reg", "kind": "attack", "entry": "impl:A", "source": "folder",
                                       "path": info.path, "sha256": info.sha256, "version": ""}


def test_a_plugin_disabled_and_enabled_again_is_registered_anew(tmp_path):
    from p2p_desktop.attacks import registry

    d = _attack(tmp_path, "d-again")
    plugins.enable("d-again")
    plugins.load_plugins()
    assert registry._specs["d-again"].summary == "plugin d-again"
    plugins.disable("d-again")
    manifest = json.loads((d / "plugin.json").read_text())
    (d / "plugin.json").write_text(json.dumps({**manifest, "summary": "second version"}))
    plugins.enable("d-again")
    plugins.load_plugins()
    assert registry._specs["d-again"].summary == "second version"


def test_manifest_and_registration_fields(tmp_path, monkeypatch):
    from p2p_desktop.models import registry as mreg
    from p2p_desktop.paths import builtin_plugins_dir, user_data_dir

    assert plugins._check_fields(" ", "attack", "m:A") == "manifest has no 'name'"
    assert plugins._check_fields("n", "x", "m:A") == "kind 'x' is not one of attack, classifier"
    d = _plugin(tmp_path, "d-ver", {"name": "d-ver", "kind": "attack", "entry": "impl:A", "version": "2.5"},
                {"impl.py": ATTACK_SRC.format(name="d-ver", mark="v")})
    info = plugins.find("d-ver")
    assert info.version == "2.5" and info.sha256 == plugins._hash_folder(d)
    enabled = plugins.enable("d-ver")
    assert enabled.status == "enabled" and enabled.enabled and enabled.error == ""
    state = json.loads((user_data_dir() / "plugins-enabled.json").read_text())
    assert state == {"d-ver": {"path": info.path, "sha256": info.sha256}}
    (d / "impl.py").write_text(ATTACK_SRC.format(name="d-ver", mark="w"))
    assert plugins.find("d-ver").error == "files changed since it was enabled; enable it again to approve"
    with pytest.raises(InputError, match="no plugin named 'nope'"):
        plugins.enable("nope")
    plugins.disable("never-enabled")  # nothing approved under that name: nothing to do, no error
    _plugin(tmp_path, "d-clf2", {"name": "d-clf2", "kind": "classifier", "entry": "clf:load"},
            {"clf.py": "def load(device='cpu'):\n    return device\n"})
    plugins.enable("d-clf2")
    plugins.load_plugins()
    entry = mreg.find("d-clf2")
    assert entry.kind == "classifier" and entry.card["plugin"]["name"] == "d-clf2"
    monkeypatch.delenv("P2P_DESKTOP_PLUGIN_PATH")
    assert plugins.plugin_dirs() == [builtin_plugins_dir(), user_data_dir() / "plugins"]


def test_a_non_object_manifest_is_broken(tmp_path):
    d = tmp_path / "plugins" / "list"
    d.mkdir(parents=True)
    (d / "plugin.json").write_text("[1, 2]")
    info = plugins.find("list")
    assert info.error == "unreadable manifest: manifest must be a JSON object"
    assert (info.entry, info.sha256) == ("", "")


def test_entry_point_names_kinds_and_summary(tmp_path, monkeypatch):
    _entry_point_package(tmp_path, monkeypatch, "attack.d-a.b = detailpkg:A\nnonsense.d-k = detailpkg:A\n"
                         "attack.d-gone = detailpkg.gone:A", {
                             "detailpkg/__init__.py": ATTACK_SRC.format(name="d-a.b", mark="ep")})
    found = {p.name: p for p in plugins.discover()}
    assert found["d-a.b"].kind == "attack" and found["d-a.b"].status == "disabled"
    assert found["d-a.b"].summary == "entry point of detailpkg"
    assert found["d-k"].status == "broken" and found["d-k"].error.startswith("kind 'nonsense' is not one of")
    assert found["d-gone"].status == "broken" and found["d-gone"].sha256 == "" and found["d-gone"].path == ""
    plugins.enable("d-a.b")
    cls = plugins.load_plugin_object(plugins.find("d-a.b"))
    assert sys.modules[cls.__module__].__file__ == found["d-a.b"].path


def test_approval_withdrawn_after_discovery_is_refused(tmp_path):
    _attack(tmp_path, "d-wd")
    plugins.enable("d-wd")
    info = plugins.find("d-wd")
    plugins.disable("d-wd")
    with pytest.raises(InputError, match="'d-wd' is changed"):
        plugins.load_plugin_object(info)


def test_a_registered_plugin_whose_folder_is_gone_is_disabled(tmp_path):
    import shutil

    from p2p_desktop.attacks import registry

    d = _attack(tmp_path, "d-gone2")
    plugins.enable("d-gone2")
    plugins.load_plugins()
    shutil.rmtree(d)
    with pytest.raises(InputError, match="'d-gone2' is disabled"):
        registry.get("d-gone2")


def test_the_finder_is_put_back_when_something_removed_it(tmp_path):
    _attack(tmp_path, "d-fnd", mark="v1")
    plugins.enable("d-fnd")
    cls = plugins.load_plugin_object(plugins.find("d-fnd"))
    package = cls.__module__.split(".")[0]
    sys.meta_path.remove(plugins._finders[package])
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        sys.modules.pop(name)
    assert plugins.load_plugin_object(plugins.find("d-fnd")).MARK == "v1"


def test_bytecode_caches_are_not_part_of_the_approval(tmp_path):
    d = _attack(tmp_path, "d-cache")
    plugins.enable("d-cache")
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "notes.txt").write_text("anything")
    assert plugins.find("d-cache").status == "enabled"


def test_nesting_depth_limit_is_32(tmp_path):
    d = _attack(tmp_path, "d-depth")
    os.symlink(d, d / "loop")
    error = plugins.find("d-depth").error
    where = error.split("nested too deep at ", 1)[1]
    assert where == "/".join(["loop"] * 33)
