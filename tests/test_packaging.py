"""Packaging: the PyInstaller spec and its inputs, the desktop entry, the icon, model packs.

Light checks only: nothing here runs PyInstaller (packaging/build.sh does, in minutes).
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
SPEC = PACKAGING / "p2p-desktop.spec"
DESKTOP = PACKAGING / "linux" / "p2p-desktop.desktop"


def _load_pack_module():
    spec = importlib.util.spec_from_file_location("make_model_pack", PACKAGING / "make_model_pack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the spec --------------------------------------------------------------------------------------

def test_spec_parses_and_references_existing_files():
    text = SPEC.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(SPEC))
    calls = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert {"Analysis", "PYZ", "EXE", "COLLECT"} <= calls
    # every packaging/... file the spec names exists
    named = re.findall(r'PACKAGING\s*/\s*"([^"]+)"(?:\s*/\s*"([^"]+)")?', text)
    assert named, "the spec names no packaging files"
    for first, second in named:
        if first == "build":  # written by build.sh before PyInstaller runs (the traced data files)
            continue
        assert (PACKAGING / first / second).exists(), f"spec references missing packaging/{first}/{second}"
    for sub in ("models", "samples", "icons"):
        assert f'"{sub}"' in text and (ROOT / "resources" / sub).is_dir()
    assert (ROOT / "plugins").is_dir() and 'ROOT / "plugins"' in text
    # the executable is named like the console script and the desktop entry's Exec
    assert re.search(r'name="p2p-desktop"', text)


def test_spec_excludes_unused_heavy_packages_and_keeps_the_app():
    text = SPEC.read_text(encoding="utf-8")
    for mod in ("tkinter", "triton", "SimpleITK", "pytest", "PySide6.QtWebEngineCore"):
        assert f'"{mod}"' in text, f"{mod} is not excluded"
    for needed in ('collect_submodules("p2p_desktop")', "pylibjpeg-openjpeg", "pylibjpeg-rle",
                   'collect_data_files("lpips")', "probe_imports.py"):
        assert needed in text


def test_entry_script_imports_torch_before_the_app_and_never_qt():
    tree = ast.parse((PACKAGING / "p2p_desktop_entry.py").read_text(encoding="utf-8"))
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            imports.append((node.lineno, node.module))
    names = [n for _, n in sorted(imports)]
    assert "torch" in names and "p2p_desktop.cli.main" in names
    assert names.index("torch") < names.index("p2p_desktop.cli.main")
    assert not any(n and n.startswith(("PySide6", "pyqtgraph")) for n in names)


@pytest.mark.parametrize("argv, gui", [
    ([], True),
    (["--smoke-test"], True),
    (["--smoke-test", "--screenshot", "shot.png"], True),
    (["--smoke-test", "--screenshot=shot.png", "-v"], True),
    (["--version"], False),
    (["--help"], False),
    (["-v", "attack", "x.dcm", "--attack", "pgd"], False),
    (["models", "list"], False),
    ([str(ROOT / "resources" / "samples" / "dicom")], True),  # a study to open: the app
    (["no-such-study.dcm"], False),  # refused in one line by the CLI, no window
])
def test_entry_script_imports_torch_first_whenever_qt_may_load(argv, gui):
    spec = importlib.util.spec_from_file_location("p2p_desktop_entry", PACKAGING / "p2p_desktop_entry.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)  # not __main__: defines, does not run the program
    assert entry.gui_may_open(argv) is gui


def test_cpu_runtime_hook_hides_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.delenv("P2P_DESKTOP_BUILD", raising=False)
    code = (PACKAGING / "rthooks" / "pyi_rth_p2p_cpu.py").read_text(encoding="utf-8")
    exec(compile(code, "pyi_rth_p2p_cpu.py", "exec"), {})
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert os.environ["P2P_DESKTOP_BUILD"] == "cpu"


def test_build_script_is_valid_bash():
    bash = shutil.which("bash")
    if not bash:
        pytest.skip("bash not installed")
    subprocess.run([bash, "-n", str(PACKAGING / "build.sh")], check=True)
    text = (PACKAGING / "build.sh").read_text(encoding="utf-8")
    assert "p2p-desktop.spec" in text and "du -sh" in text


# --- desktop entry and icon --------------------------------------------------------------------------

def test_desktop_entry_is_valid():
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str  # keys are case-sensitive
    cp.read(DESKTOP, encoding="utf-8")
    entry = cp["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Exec"].split()[0] == "p2p-desktop"
    assert entry["Terminal"] == "false"
    icon = entry["Icon"]
    assert "/" not in icon and "." not in icon, "Icon is a theme name, not a path"
    assert (ROOT / "resources" / "icons" / f"{icon}.png").is_file()
    assert entry["Categories"].endswith(";")
    validator = shutil.which("desktop-file-validate")
    if validator:
        out = subprocess.run([validator, str(DESKTOP)], capture_output=True, text=True)
        assert out.returncode == 0 and "error" not in out.stdout.lower(), out.stdout + out.stderr


def test_app_icon_png_is_square_and_large_enough():
    from PIL import Image

    with Image.open(ROOT / "resources" / "icons" / "p2p-desktop.png") as im:
        im.load()
        assert im.format == "PNG"
        assert im.width == im.height >= 128
        assert im.mode in ("RGBA", "LA", "P")  # transparent corners


# --- model packs -------------------------------------------------------------------------------------

@pytest.fixture
def model_folder(tmp_path):
    """A real (untrained) squeezenet1_1 classifier folder with its card, as resources/models holds."""
    import torch
    from safetensors.torch import save_file

    from p2p_desktop.hashing import sha256_file
    from p2p_desktop.models.classifier import ModelCard, build_architecture

    torch.manual_seed(0)
    folder = tmp_path / "src" / "pack-squeezenet"
    folder.mkdir(parents=True)
    net = build_architecture("squeezenet1_1", 3)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    card = ModelCard(name="pack-squeezenet", architecture="squeezenet1_1",
                     classes=("benign", "malignant", "normal"), weights="model.safetensors",
                     input_size=64, sha256=sha256_file(folder / "model.safetensors"))
    (folder / "card.json").write_text(json.dumps(card.to_dict(), indent=2), encoding="utf-8")
    return folder


def test_model_pack_round_trip_is_verified_by_the_app(model_folder, tmp_path, monkeypatch, capsys):
    mp = _load_pack_module()
    packs = tmp_path / "packs"
    z = mp.pack_model(model_folder, packs)
    assert z.name == "pack-squeezenet.zip"
    with zipfile.ZipFile(z) as zf:
        names = sorted(zf.namelist())
        sums = zf.read("pack-squeezenet/SHA256SUMS").decode()
    assert names == ["pack-squeezenet/SHA256SUMS", "pack-squeezenet/card.json", "pack-squeezenet/model.safetensors"]
    assert sums.count("\n") == 2 and "  model.safetensors\n" in sums
    assert (packs / "pack-squeezenet.zip.sha256").read_text().split()[1] == z.name
    assert set(mp.check_pack(z)) == {"card.json", "model.safetensors"}
    # byte-reproducible
    z2 = mp.pack_model(model_folder, tmp_path / "again")
    assert z2.read_bytes() == z.read_bytes()

    resources = tmp_path / "resources"
    installed = mp.install_pack(z, resources / "models")
    assert (installed / "model.safetensors").read_bytes() == (model_folder / "model.safetensors").read_bytes()
    assert not [p for p in (resources / "models").iterdir() if p.name.startswith(".")], "temporary folder left"

    monkeypatch.setenv("P2P_DESKTOP_RESOURCES", str(resources))
    monkeypatch.setenv("P2P_DESKTOP_HOME", str(tmp_path / "home"))
    from p2p_desktop.cli.main import main

    assert main(["models", "verify", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    row = next(r for r in report["models"] if r["name"] == "pack-squeezenet")
    assert row["status"] == "verified" and report["ok"] is True

    from p2p_desktop.models.classifier import load_classifier

    clf = load_classifier(installed / "card.json")
    assert clf.classes == ("benign", "malignant", "normal")


def test_model_pack_refuses_a_folder_that_does_not_match_its_card(model_folder, tmp_path):
    mp = _load_pack_module()
    with open(model_folder / "model.safetensors", "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 0xFF]))
    with pytest.raises(mp.PackError, match="does not match the SHA-256 on its card"):
        mp.pack_model(model_folder, tmp_path / "packs")
    assert not list((tmp_path / "packs").glob("*.zip"))


def test_model_pack_check_detects_tampering_and_unsafe_paths(model_folder, tmp_path):
    mp = _load_pack_module()
    z = mp.pack_model(model_folder, tmp_path / "packs")
    (tmp_path / "packs" / f"{z.name}.sha256").unlink()  # test the member hashes, not the sidecar

    # a member replaced after packing
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(z) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("card.json"):
                data = data.replace(b"benign", b"benigN")
            dst.writestr(info, data)
    with pytest.raises(mp.PackError, match="card.json does not match"):
        mp.check_pack(bad)

    # a member that escapes the models folder
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("pack-squeezenet/../../outside.txt", b"x")
    with pytest.raises(mp.PackError, match="unsafe member path"):
        mp.install_pack(evil, tmp_path / "models")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "models").exists()

    # the sidecar hash catches a damaged download
    z = mp.pack_model(model_folder, tmp_path / "packs2")
    with open(z, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(mp.PackError, match="damaged download"):
        mp.check_pack(z)
    assert mp.main(["check", str(z)]) == 2


def test_model_pack_install_refuses_to_overwrite_without_force(model_folder, tmp_path):
    mp = _load_pack_module()
    z = mp.pack_model(model_folder, tmp_path / "packs")
    models = tmp_path / "models"
    mp.install_pack(z, models)
    with pytest.raises(mp.PackError, match="already exists"):
        mp.install_pack(z, models)
    assert mp.install_pack(z, models, force=True) == models / "pack-squeezenet"
    assert sorted(p.name for p in models.iterdir()) == ["pack-squeezenet"]


# --- the frozen end-to-end check and the trace (packaging/frozen_jobs.py) ---------------------------

def _load_frozen_jobs():
    import sys

    if "frozen_jobs" in sys.modules:
        return sys.modules["frozen_jobs"]
    spec = importlib.util.spec_from_file_location("frozen_jobs", PACKAGING / "frozen_jobs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["frozen_jobs"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_check_scripts_are_valid_bash_and_build_runs_trace_and_check():
    for name in ("check_bundle.sh", "check_bundle_detects.sh"):
        subprocess.run(["bash", "-n", str(PACKAGING / name)], check=True)
    build = (PACKAGING / "build.sh").read_text(encoding="utf-8")
    assert "frozen_jobs.py\" trace" in build and "check_bundle.sh\" \"$APP\"" in build
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make bundle" in ci
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "check_bundle_detects.sh" in make


def test_frozen_jobs_cover_every_job_the_issue_names():
    jobs = _load_frozen_jobs().JOBS
    names = [j.name for j in jobs]
    assert len(names) == len(set(names))
    argvs = [" ".join(j.argv) for j in jobs]
    for needed in ("models verify", "classify ", "--attack fgsm", "--attack pgd", "rerun ", "--attack p2p",
                   "--preset fast", "--attack diff-pgd", "phantoms ", "evaluate ", "pacs echo", "--send-dicom",
                   "--smoke-test", "--executor ray"):
        assert any(needed in a for a in argvs), needed
    exports = [j for j in jobs if "--export-dicom" in j.argv and "--deidentify" in j.argv and "html,pdf" in j.argv]
    assert {j.argv[3] for j in exports} == {"fgsm", "pgd"} and all(j.dicom_valid for j in exports)
    assert any(j.same_bytes for j in jobs if j.argv[0] == "rerun")
    assert [j.needs for j in jobs if "--smoke-test" in j.argv] == ["xvfb"]


def test_trace_keeps_data_files_at_their_package_path_and_drops_code(tmp_path):
    fj = _load_frozen_jobs()
    site = tmp_path / "site-packages"
    (site / "kernels" / "_internals").mkdir(parents=True)
    data = site / "kernels" / "_internals" / "python_depends.json"
    data.write_text("{}")
    code = site / "kernels" / "_internals" / "load.py"
    code.write_text("")
    lib = site / "kernels" / "_rust.cpython-311-x86_64-linux-gnu.so"
    lib.write_bytes(b"")
    (site / "x-1.0.dist-info").mkdir()
    meta = site / "x-1.0.dist-info" / "METADATA"
    meta.write_text("")
    outside = tmp_path / "elsewhere.json"
    outside.write_text("{}")
    opened = {str(p) for p in (data, code, lib, meta, outside, tmp_path / "gone.json")}
    assert fj.collected_pairs(opened, [str(site)]) == [(str(data), "kernels/_internals")]


def test_ray_is_refused_in_one_line_when_frozen(monkeypatch):
    import sys

    from p2p_desktop.errors import InputError
    from p2p_desktop.executors import make_executor

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    with pytest.raises(InputError, match="not available in the offline bundle") as info:
        make_executor("ray")
    assert "\n" not in str(info.value)
    assert make_executor("serial") is None  # serial still works frozen
