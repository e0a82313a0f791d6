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
    (info / "top_level.txt").write_text("\n".join(sorted({rel.split("/")[0].removesuffix(".py") for rel in files})))
    write_record(site, info)
    monkeypatch.syspath_prepend(str(site))
    return site


def _record_line(site: Path, path: Path) -> str:
    import base64
    import hashlib

    data = path.read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path.relative_to(site).as_posix()},sha256={digest},{len(data)}"


def write_record(site: Path, info: Path) -> None:
    """The dist-info ``RECORD`` of every file under ``site`` that belongs to it: the dist-info and
    the top-level folders and modules it declares in ``top_level.txt`` (or ``pkg`` folders given)."""
    tops = (info / "top_level.txt").read_text().split() if (info / "top_level.txt").is_file() else []
    files = sorted(p for p in info.rglob("*") if p.is_file() and p.name != "RECORD")
    for top in tops:
        if (site / top).is_dir():
            files += sorted(p for p in (site / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        elif (site / f"{top}.py").is_file():
            files.append(site / f"{top}.py")
    lines = [_record_line(site, p) for p in files] + [f"{(info / 'RECORD').relative_to(site).as_posix()},,"]
    (info / "RECORD").write_text("\n".join(lines) + "\n")


def pip_install(src_files: dict[str, str], entry: str, dest: Path, dist: str) -> Path:
    """A real distribution ``dist`` (setuptools, built offline) installed with pip into ``dest``
    (``pip install --target``), declaring the plugin entry point ``entry``; returns ``dest``."""
    import subprocess
    import sys

    src = dest.parent / f"{dest.name}-src"
    key, _, value = (part.strip() for part in entry.partition("="))
    packages = sorted({rel.rpartition("/")[0].replace("/", ".") for rel in src_files if "/" in rel})
    (src).mkdir(parents=True)
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{dist}"\nversion = "1.0"\n'
        f'[project.entry-points."p2p_desktop.plugins"]\n{json.dumps(key)} = {json.dumps(value)}\n'
        f'[tool.setuptools]\npackages = {json.dumps(packages)}\n'
        '[tool.setuptools.package-data]\n"*" = ["*.txt", "*.json"]\n')
    for rel, text in src_files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--no-build-isolation", "--no-compile", "--disable-pip-version-check", "--target", str(dest),
                    str(src)], check=True, capture_output=True, timeout=300)
    return dest
