"""Entry-point plugins are approved by every file of their distribution (issue 28 item 5): a
real distribution, built offline with setuptools and installed with pip into a target folder.
Editing any module or data file of it after approval makes it "changed"; a file its RECORD
lists that is missing, or a module in its package folder that RECORD does not list, makes it
"broken"; and modules of the distribution imported later come from what was approved."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from p2p_desktop import plugins
from p2p_desktop.errors import InputError
from tests.plugin_kit import ATTACK_SRC, make_entry_point_package, pip_install

pytestmark = [pytest.mark.usefixtures("plugin_sandbox"), pytest.mark.timeout(300)]

ENTRY = "attack.dist-ep = distpkg.attack:A"
FILES = {
    "distpkg/__init__.py": "FLAG = 'v1'\n",
    "distpkg/attack.py": ATTACK_SRC.format(name="dist-ep", mark="v1")
    + "\n    @staticmethod\n    def late():\n        from distpkg import later\n        return later.MARK\n",
    "distpkg/helper.py": "HELP = 'v1'\n",
    "distpkg/later.py": "MARK = 'approved'\n",
    "distpkg/sub/__init__.py": "",
    "distpkg/sub/deep.py": "DEEP = 1\n",
    "distpkg/table.json": '{"a": 1}\n',
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The distribution installed once with pip; each test gets its own copy of the target folder."""
    return pip_install(FILES, ENTRY, tmp_path_factory.mktemp("pip") / "site", "distpkg")


@pytest.fixture
def site(installed, tmp_path, monkeypatch) -> Path:
    site = tmp_path / "site"
    shutil.copytree(installed, site)
    monkeypatch.syspath_prepend(str(site))
    return site


def _changed_line(name: str) -> str:
    return (f"plugin {name!r} is changed: its files changed since it was enabled, so it is not run; "
            f"enable it again with `p2p-desktop plugins enable {name}` to approve the new code")


@pytest.mark.parametrize("rel", ["distpkg/__init__.py", "distpkg/helper.py", "distpkg/sub/deep.py",
                                 "distpkg/table.json", "distpkg-1.0.dist-info/entry_points.txt"])
def test_editing_any_file_of_the_distribution_after_approval_is_refused(rel, site):
    assert plugins.find("dist-ep").status == "disabled"
    plugins.enable("dist-ep")
    info = plugins.find("dist-ep")
    assert info.status == "enabled"
    path = site / rel
    path.write_text(path.read_text() + ("\n# edited\n" if rel.endswith(".py") else "\n"))
    now = plugins.find("dist-ep")
    assert now.status == "changed" and now.sha256 != info.sha256
    with pytest.raises(InputError) as exc:
        plugins.load_plugin_object(info)  # found and approved before the edit
    assert str(exc.value) == _changed_line("dist-ep")
    assert "distpkg" not in __import__("sys").modules


def test_an_unchanged_distribution_loads_and_its_later_imports_are_the_approved_ones(site):
    plugins.enable("dist-ep")
    obj = plugins.load_plugin_object(plugins.find("dist-ep"))
    assert obj.MARK == "v1"
    # edited after it was loaded: a module the plugin imports only now still runs as approved
    (site / "distpkg" / "later.py").write_text("MARK = 'edited after approval'\n")
    assert obj.late() == "approved"


@pytest.mark.parametrize("how", ["missing", "extra module", "extra package", "extra bytecode"])
def test_a_file_missing_from_or_not_in_the_record_is_refused(how, site):
    plugins.enable("dist-ep")
    if how == "missing":
        (site / "distpkg" / "helper.py").unlink()
        said = "distpkg/helper.py is listed in the RECORD of distpkg but missing"
    elif how == "extra module":
        (site / "distpkg" / "extra.py").write_text("print('not approved')\n")
        said = "distpkg/extra.py is in the distribution's folder but not in its RECORD"
    elif how == "extra package":
        (site / "distpkg" / "sub" / "more").mkdir()
        (site / "distpkg" / "sub" / "more" / "__init__.py").write_text("")
        said = "distpkg/sub/more/__init__.py is in the distribution's folder but not in its RECORD"
    else:
        (site / "distpkg" / "helper.pyc").write_bytes(b"\0" * 16)  # a sourceless module imports too
        said = "distpkg/helper.pyc is in the distribution's folder but not in its RECORD"
    info = plugins.find("dist-ep")
    assert info.status == "broken" and info.error == f"refused: {said}", info.error
    with pytest.raises(InputError, match="is broken"):
        plugins.enable("dist-ep")


def test_bytecode_caches_and_other_distributions_next_to_it_do_not_count(site, tmp_path, monkeypatch):
    plugins.enable("dist-ep")
    sha = plugins.find("dist-ep").sha256
    (site / "distpkg" / "__pycache__").mkdir()
    (site / "distpkg" / "__pycache__" / "helper.cpython-311.pyc").write_bytes(b"\0" * 16)
    (site / "otherpkg").mkdir()
    (site / "otherpkg" / "__init__.py").write_text("")
    (site / "loose_module.py").write_text("")
    info = plugins.find("dist-ep")
    assert (info.status, info.sha256) == ("enabled", sha)


def test_a_distribution_without_a_record_is_refused(tmp_path, monkeypatch):
    site = make_entry_point_package(tmp_path, monkeypatch, "attack.norec = norecpkg:A",
                                    {"norecpkg/__init__.py": ATTACK_SRC.format(name="norec", mark="v1")},
                                    dist="norecpkg")
    (site / "norecpkg-1.0.dist-info" / "RECORD").unlink()
    info = plugins.find("norec")
    assert info.status == "broken"
    assert info.error == "refused: the distribution norecpkg lists no files (no RECORD); reinstall it with pip"


def test_an_entry_module_the_record_does_not_list_is_refused(tmp_path, monkeypatch):
    """E.g. an editable install: the code lives elsewhere than the files the RECORD lists."""
    site = make_entry_point_package(tmp_path, monkeypatch, "attack.edit = editpkg.mod:A",
                                    {"editpkg/__init__.py": "", "helper.py": ""}, dist="editpkg")
    (site / "editpkg" / "mod.py").write_text(ATTACK_SRC.format(name="edit", mark="v1"))
    record = site / "editpkg-1.0.dist-info" / "RECORD"
    record.write_text("".join(line + "\n" for line in record.read_text().splitlines()
                              if not line.startswith("editpkg/")))
    info = plugins.find("edit")
    assert info.status == "broken"
    assert info.error == ("refused: the entry module editpkg/mod.py is not a file the RECORD of editpkg lists "
                          "(an editable install?): its code cannot be verified")
