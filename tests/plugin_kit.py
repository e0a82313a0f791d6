"""Plugin folders and installed entry-point packages made on disk for the plugin tests."""

from __future__ import annotations

import json
from pathlib import Path

ATTACK_SRC = '''
from p2p_desktop.attacks.fgsm import FGSM

class A(FGSM):
    name = "{name}"
    MARK = "{mark}"
'''


def make_plugin(tmp_path: Path, folder: str, manifest: dict, files: dict[str, str]) -> Path:
    """A folder plugin ``tmp_path/plugins/folder`` with its manifest and files; returns the folder."""
    d = tmp_path / "plugins" / folder
    d.mkdir(parents=True)
    (d / "plugin.json").write_text(json.dumps(manifest))
    for rel, text in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


def make_attack(tmp_path: Path, name: str, mark: str = "v1", extra: str = "") -> Path:
    """A folder plugin ``name`` whose attack is FGSM marked with ``mark``."""
    return make_plugin(tmp_path, name, {"name": name, "kind": "attack", "entry": "impl:A"},
                       {"impl.py": ATTACK_SRC.format(name=name, mark=mark) + extra})


def make_entry_point_package(tmp_path: Path, monkeypatch, entry: str, files: dict[str, str],
                             dist: str = "detailpkg") -> Path:
    """An installed distribution ``dist`` on sys.path declaring the plugin entry point ``entry``."""
    site = tmp_path / "site"
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[p2p_desktop.plugins]\n{entry}\n")
    monkeypatch.syspath_prepend(str(site))
    return site
