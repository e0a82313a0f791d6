"""Plugin integrity (issue 15 High 1-4, issue 19 item 1): what runs is exactly what the user approved.

Each test reproduces one attack on the approval: an entry outside the folder, a symlinked
sub-folder, a planted .pyc, a plugin named like a built-in, and code edited after the plugin
was registered at start-up.
"""

from __future__ import annotations

import json
import os
import py_compile
import sys
from pathlib import Path

import pytest

from p2p_desktop import plugins
from p2p_desktop.errors import InputError
from tests.plugin_kit import write_record

ATTACK_SRC = '''
from p2p_desktop.attacks.fgsm import FGSM

class {cls}(FGSM):
    name = "{name}"
    MARK = "{mark}"
'''


# a private user folder and plugin folder; the registries and sys.modules restored after each test
pytestmark = pytest.mark.usefixtures("plugin_sandbox")


def _plugin(root: Path, folder: str, name: str, entry: str, source: str | None = None, mark: str = "good") -> Path:
    d = root / folder
    d.mkdir(parents=True)
    (d / "plugin.json").write_text(json.dumps({"name": name, "kind": "attack", "entry": entry}))
    if source is not None:
        (d / source).write_text(ATTACK_SRC.format(cls="A", name=name, mark=mark))
    return d


def test_entry_with_leading_dot_is_refused(tmp_path, monkeypatch):
    # The attack: ".evilpkg.x:A" used to be imported as an absolute module from sys.path,
    # outside the hashed folder, so later edits to it ran under the old approval.
    outside = tmp_path / "site"
    (outside / "evilpkg").mkdir(parents=True)
    (outside / "evilpkg/__init__.py").write_text("")
    (outside / "evilpkg/x.py").write_text(ATTACK_SRC.format(cls="A", name="dot", mark="evil"))
    monkeypatch.syspath_prepend(str(outside))
    _plugin(tmp_path / "plugins", "dot", "dot", ".evilpkg.x:A")
    info = plugins.find("dot")
    assert info.status == "broken" and "inside the plugin's folder" in info.error
    with pytest.raises(InputError):
        plugins.enable("dot")
    for bad in ("..x:A", "x.:A", "x:A.b", "/abs:A", "x:"):
        assert plugins._check_fields("n", "attack", bad), bad


def test_entry_module_must_be_a_file_in_the_folder(tmp_path, monkeypatch):
    # An entry naming a module that exists only on sys.path (not in the folder) is refused.
    outside = tmp_path / "site"
    outside.mkdir()
    (outside / "elsewhere.py").write_text(ATTACK_SRC.format(cls="A", name="ew", mark="evil"))
    monkeypatch.syspath_prepend(str(outside))
    _plugin(tmp_path / "plugins", "ew", "ew", "elsewhere:A")
    info = plugins.find("ew")
    assert info.status == "broken" and "not a .py file inside" in info.error


def test_symlink_leaving_the_folder_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "impl.py").write_text(ATTACK_SRC.format(cls="A", name="ln", mark="evil"))
    d = _plugin(tmp_path / "plugins", "ln", "ln", "sub.impl:A")
    os.symlink(outside, d / "sub")
    info = plugins.find("ln")
    assert info.status == "broken" and "leaves the plugin folder" in info.error
    # also a single symlinked file
    d2 = _plugin(tmp_path / "plugins", "ln2", "ln2", "impl:A")
    os.symlink(outside / "impl.py", d2 / "impl.py")
    assert "leaves the plugin folder" in plugins.find("ln2").error


def test_symlinked_subfolder_inside_is_hashed(tmp_path):
    # A symlink that stays inside is followed by both the hash and the import.
    d = _plugin(tmp_path / "plugins", "in", "inside", "sub.impl:A")
    (d / "real").mkdir()
    (d / "real/__init__.py").write_text("")
    (d / "real/impl.py").write_text(ATTACK_SRC.format(cls="A", name="inside", mark="v1"))
    os.symlink(d / "real", d / "sub")
    before = plugins.find("inside").sha256
    assert plugins.find("inside").status == "disabled"
    plugins.enable("inside")
    assert plugins.load_plugin_object(plugins.find("inside")).MARK == "v1"
    (d / "real/impl.py").write_text(ATTACK_SRC.format(cls="A", name="inside", mark="v2"))
    assert plugins.find("inside").sha256 != before and plugins.find("inside").status == "changed"


def test_planted_bytecode_never_runs(tmp_path):
    # The attack: a .pyc with other code, whose header matches the source's mtime and size, used to
    # run while the plugin still showed "enabled" with the approved hash.
    d = _plugin(tmp_path / "plugins", "pyc", "pyc", "impl:A", source="impl.py", mark="good")
    plugins.enable("pyc")
    src = d / "impl.py"
    st = src.stat()
    evil = tmp_path / "evil.py"
    evil.write_text(ATTACK_SRC.format(cls="A", name="pyc", mark="EVIL").ljust(st.st_size)[: st.st_size])
    os.utime(evil, ns=(st.st_atime_ns, st.st_mtime_ns))
    cache = d / "__pycache__"
    cache.mkdir()
    py_compile.compile(str(evil), cfile=str(cache / f"impl.{sys.implementation.cache_tag}.pyc"),
                       dfile=str(src), invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    info = plugins.find("pyc")
    assert info.status == "enabled"  # bytecode is not part of the approval...
    assert plugins.load_plugin_object(info).MARK == "good"  # ...because it is never used
    assert sorted(p.name for p in cache.iterdir()) == [f"impl.{sys.implementation.cache_tag}.pyc"]  # none written


def test_no_bytecode_written_for_plugins(tmp_path):
    d = _plugin(tmp_path / "plugins", "nb", "nb", "impl:A", source="impl.py")
    plugins.enable("nb")
    plugins.load_plugin_object(plugins.find("nb"))
    assert not (d / "__pycache__").exists()


@pytest.mark.parametrize("name", ["fgsm", "pgd", "p2p", "diff-pgd"])
def test_plugin_named_like_a_builtin_is_refused(tmp_path, name):
    _plugin(tmp_path / "plugins", "clash", name, "impl:A", source="impl.py", mark="evil")
    from p2p_desktop.attacks import registry

    info = next(p for p in plugins.discover() if p.path.startswith(str(tmp_path)))
    assert info.status == "broken" and "built-in" in info.error
    with pytest.raises(InputError):
        plugins.enable(name)
    assert registry.spec(name).source == "builtin"
    assert registry.get(name).__module__.startswith("p2p_desktop.attacks.")


def test_two_plugins_with_one_name(tmp_path):
    _plugin(tmp_path / "plugins", "a", "twin", "impl:A", source="impl.py", mark="a")
    _plugin(tmp_path / "plugins", "b", "twin", "impl:A", source="impl.py", mark="b")
    twins = [p for p in plugins.discover() if p.name == "twin"]
    assert [p.status for p in twins] == ["disabled", "broken"] and "already used" in twins[1].error


def test_edit_after_registration_never_runs(tmp_path):
    # Issue 19's live bug: a plugin registered at start-up and edited afterwards was still executed
    # by the registry (its loader captured the start-up status) while it showed "changed".
    from p2p_desktop.attacks import registry

    d = _plugin(tmp_path / "plugins", "live", "live", "impl:A", source="impl.py", mark="approved")
    plugins.enable("live")
    plugins.load_plugins()  # start-up
    assert "live" in [s.name for s in registry.available()]  # registered at start-up
    (d / "impl.py").write_text(ATTACK_SRC.format(cls="A", name="live", mark="EDITED"))
    assert plugins.find("live").status == "changed"
    with pytest.raises(InputError, match="changed"):
        registry.get("live")
    # approving the new code makes it run
    plugins.enable("live")
    assert plugins.load_plugin_object(plugins.find("live")).MARK == "EDITED"


def test_edit_after_first_import_never_runs(tmp_path):
    from p2p_desktop.attacks import registry

    d = _plugin(tmp_path / "plugins", "live2", "live2", "impl:A", source="impl.py", mark="approved")
    plugins.enable("live2")
    plugins.load_plugins()
    assert registry.get("live2").MARK == "approved"
    (d / "impl.py").write_text(ATTACK_SRC.format(cls="A", name="live2", mark="EDITED"))
    with pytest.raises(InputError, match="changed"):
        registry.get("live2")


def test_sub_imports_come_from_the_verified_snapshot(tmp_path):
    d = _plugin(tmp_path / "plugins", "pk", "pk", "pkg.main:A")
    (d / "pkg").mkdir()
    (d / "pkg/__init__.py").write_text("")
    (d / "pkg/helper.py").write_text("MARK = 'helper-v1'\n")
    (d / "pkg/main.py").write_text("from . import helper\n" + ATTACK_SRC.format(cls="A", name="pk", mark="x")
                                   + "    HELPER = helper.MARK\n")
    plugins.enable("pk")
    cls = plugins.load_plugin_object(plugins.find("pk"))
    assert cls.HELPER == "helper-v1"
    assert cls.__module__.startswith("p2p_desktop_plugin_")


def test_provenance_records_the_plugin_and_its_hash(tmp_path, capsys):
    import torch
    from pydicom.data import get_testdata_file

    from p2p_desktop.cli.main import main
    from p2p_desktop.models.classifier import build_architecture

    _plugin(tmp_path / "plugins", "prov", "prov-fgsm", "impl:A", source="impl.py")
    plugins.enable("prov-fgsm")
    approved = plugins.find("prov-fgsm").sha256
    torch.manual_seed(0)
    w = tmp_path / "sq.pth"
    torch.save(build_architecture("squeezenet1_1", 3).state_dict(), w)
    code = main(["attack", get_testdata_file("examples_rgb_color.dcm"), "--attack", "prov-fgsm", "--classifier",
                 str(w), "--arch", "squeezenet1_1", "--classes", "a,b,c", "--input-size", "64",
                 "--out", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().err
    prov = json.loads(next((tmp_path / "o").glob("*_provenance.json")).read_text())
    assert prov["attack"]["name"] == "prov-fgsm"
    assert prov["attack"]["plugin"]["sha256"] == approved and prov["attack"]["plugin"]["entry"] == "impl:A"
    # re-running it with the same plugin code reproduces it; with other (even re-approved) code is refused
    prov_file = next((tmp_path / "o").glob("*_provenance.json"))
    capsys.readouterr()
    assert main(["rerun", str(prov_file), "--out", str(tmp_path / "same"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reproduced"] is True
    impl = tmp_path / "plugins" / "prov" / "impl.py"
    impl.write_text(impl.read_text() + "\n# changed\n")
    plugins.enable("prov-fgsm")
    prov_file = next((tmp_path / "o").glob("*_provenance.json"))
    capsys.readouterr()
    assert main(["rerun", str(prov_file), "--out", str(tmp_path / "again")]) == 2
    now = plugins.find("prov-fgsm").sha256
    assert now != approved and (f"attack plugin 'prov-fgsm' differs from the recorded run: SHA-256 {now[:16]}… "
                                f"but the record says {approved[:16]}…") in capsys.readouterr().err
    assert not (tmp_path / "again").exists()


def test_reapproval_and_disabling_during_a_session_take_effect(tmp_path):
    from p2p_desktop.attacks import registry

    d = _plugin(tmp_path / "plugins", "sess", "sess", "impl:A", source="impl.py", mark="v1")
    plugins.enable("sess")
    plugins.load_plugins()
    assert registry.get("sess").MARK == "v1"
    (d / "impl.py").write_text(ATTACK_SRC.format(cls="A", name="sess", mark="v2"))
    plugins.enable("sess")  # re-approved in the Plugins dialog: the registered loader must follow
    assert registry.get("sess").MARK == "v2"
    plugins.disable("sess")
    with pytest.raises(InputError, match="disabled"):
        registry.get("sess")


def test_entry_point_plugin_runs_the_approved_source_only(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "epplug").mkdir(parents=True)
    (site / "epplug" / "__init__.py").write_text("")
    (site / "epplug" / "mod.py").write_text(ATTACK_SRC.format(cls="A", name="ep-attack", mark="approved"))
    info_dir = site / "epplug-1.0.dist-info"
    info_dir.mkdir()
    (info_dir / "METADATA").write_text("Metadata-Version: 2.1\nName: epplug\nVersion: 1.0\n")
    (info_dir / "entry_points.txt").write_text("[p2p_desktop.plugins]\nattack.ep-attack = epplug.mod:A\n")
    (info_dir / "top_level.txt").write_text("epplug\n")
    write_record(site, info_dir)
    monkeypatch.syspath_prepend(str(site))
    info = plugins.find("ep-attack")
    assert info is not None and info.source == "entry-point" and info.status == "disabled"
    plugins.enable("ep-attack")
    cls = plugins.load_plugin_object(plugins.find("ep-attack"))
    assert cls.MARK == "approved" and not (site / "epplug" / "__pycache__" / "mod.cpython").exists()
    assert not list((site / "epplug").glob("__pycache__/mod.*.pyc"))  # no bytecode written
    (site / "epplug" / "mod.py").write_text(ATTACK_SRC.format(cls="A", name="ep-attack", mark="EDITED"))
    assert plugins.find("ep-attack").status == "changed"
    from p2p_desktop.attacks import registry

    plugins.load_plugins()  # the next start-up: known, but refused until approved again
    with pytest.raises(InputError, match="changed"):
        registry.get("ep-attack")
    sys.modules.pop("epplug.mod", None)
    sys.modules.pop("epplug", None)
