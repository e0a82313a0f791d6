"""The app on the real X11 (xcb) platform, under Xvfb — what ``make run`` does on a fresh machine.

Offscreen tests cannot see a missing xcb library or a window larger than the screen; these
start a real X server (Xvfb on a free display number, stopped by its pid), open the app with
``QT_QPA_PLATFORM=xcb`` and look at the real window. ``scripts/install-system-deps.sh``
(run by ``make install``) installs Xvfb, xdotool and the xcb libraries.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from p2p_desktop.gui.platform_check import (
    XCB_PACKAGES,
    missing_packages,
    missing_sonames,
    platform_problem,
    plugin_files,
)

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the xcb platform is Linux only"),
]

needs_xvfb = pytest.mark.skipif(shutil.which("Xvfb") is None,
                                reason="Xvfb is not installed (scripts/install-system-deps.sh installs it)")


def _free_display() -> int:
    for n in range(91, 300):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    pytest.skip("no free X display number")


@pytest.fixture
def xvfb(request):
    """``xvfb(width, height) -> ":N"``: a real X server; stopped by its pid afterwards."""
    started: list[subprocess.Popen] = []

    def start(width: int = 1280, height: int = 800) -> str:
        for _attempt in range(5):
            n = _free_display()
            proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and proc.poll() is None:
                if Path(f"/tmp/.X11-unix/X{n}").exists():
                    started.append(proc)
                    return f":{n}"
                time.sleep(0.05)
            proc.kill()
            proc.wait()
        pytest.fail("Xvfb did not start")

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _env(display: str, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY",)}
    env.update(DISPLAY=display, QT_QPA_PLATFORM="xcb", P2P_DESKTOP_SETTINGS=str(tmp_path / "settings.ini"),
               OMP_NUM_THREADS="1")
    return env


def _grab_screen(display: str, tmp_path: Path, out: Path) -> np.ndarray:
    """A screenshot of the whole X screen, taken by a separate xcb Qt process."""
    code = ("import sys; from PySide6.QtGui import QGuiApplication; app = QGuiApplication(sys.argv); "
            "s = app.primaryScreen(); ok = s.grabWindow(0).save(sys.argv[1]); sys.exit(0 if ok else 1)")
    subprocess.run([sys.executable, "-c", code, str(out)], env=_env(display, tmp_path), check=True, timeout=60)
    from PIL import Image

    return np.asarray(Image.open(out).convert("RGB"))


def _window_geometry(display: str, tmp_path: Path, name: str, timeout_s: float = 240) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the first visible window whose title contains ``name``."""
    env = _env(display, tmp_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", name], env=env,
                               capture_output=True, text=True, timeout=30).stdout.split()
        if found:
            out = subprocess.run(["xdotool", "getwindowgeometry", "--shell", found[0]], env=env,
                                 capture_output=True, text=True, timeout=30).stdout
            values = dict(line.split("=", 1) for line in out.split() if "=" in line)
            return int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])
        time.sleep(0.3)
    pytest.fail(f"no window titled {name!r} appeared within {timeout_s:.0f} s")


def test_the_xcb_plugin_libraries_resolve_here():
    """What install-system-deps.sh installs is all the xcb plugin needs."""
    if not plugin_files():
        pytest.skip("this PySide6 has no xcb plugin")
    assert missing_sonames() == [], "run scripts/install-system-deps.sh as root"
    assert platform_problem({"QT_QPA_PLATFORM": "xcb"}) is None


def test_a_missing_library_is_named_with_its_package_and_the_command():
    assert missing_packages(["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]) == ["libxcb-icccm4", "libxcb-keysyms1"]
    # a soname that really does not resolve here, next to one that does
    line = platform_problem({"QT_QPA_PLATFORM": "xcb"}, sonames=["libp2p-absent-for-test.so.1", "libc.so.6"])
    assert line is not None and "\n" not in line
    assert "libp2p-absent-for-test.so.1" in line and "apt-get install" in line
    assert "libc.so.6" not in line  # it resolves
    # no xcb in use: nothing to check
    assert platform_problem({"QT_QPA_PLATFORM": "offscreen"}, sonames=["libp2p-absent-for-test.so.1"]) is None
    assert platform_problem({}, sonames=["libp2p-absent-for-test.so.1"]) is None  # no DISPLAY
    assert set(XCB_PACKAGES.values()) >= {"libxcb-icccm4", "libxcb-keysyms1", "libxcb-cursor0", "libxkbcommon-x11-0"}


def test_install_script_installs_every_xcb_package():
    script = (Path(__file__).resolve().parents[2] / "scripts" / "install-system-deps.sh").read_text()
    for package in ("xvfb", "xdotool", "libxcb-icccm4", "libxcb-keysyms1", "libxcb-image0", "libxcb-render-util0",
                    "libxcb-randr0", "libxcb-shape0", "libxcb-xinerama0", "libxcb-xkb1", "libxkbcommon-x11-0",
                    "libxcb-cursor0"):
        assert re.search(rf"(^|[\s(]){re.escape(package)}([\s)]|$)", script, re.M), package


def test_the_app_refuses_to_start_with_one_line_when_xcb_libraries_are_missing(monkeypatch, capsys):
    """run_app's start-up check: exit 2 and one line, before Qt can abort."""
    from p2p_desktop.gui import app, platform_check

    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setattr(platform_check, "missing_sonames", lambda *a, **k: ["libxcb-icccm.so.4"])
    assert app.run_app() == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "libxcb-icccm4" in err[0] and "apt-get install" in err[0]


@needs_xvfb
@pytest.mark.skipif(shutil.which("xdotool") is None, reason="xdotool is not installed")
def test_the_app_opens_a_real_window_that_fits_a_1280x800_screen(xvfb, tmp_path):
    display = xvfb(1280, 800)
    env = _env(display, tmp_path)
    log = (tmp_path / "app.log").open("w")
    app = subprocess.Popen([sys.executable, "-m", "p2p_desktop"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        x, y, w, h = _window_geometry(display, tmp_path, "breast-ultrasound")
        assert app.poll() is None, (tmp_path / "app.log").read_text()
        # the whole window, with room for a title bar, lies on the 1280 x 800 screen
        assert x >= 0 and y >= 0 and x + w <= 1280 and y + h <= 800, (x, y, w, h)
        time.sleep(1.0)  # let it paint
        shot = _grab_screen(display, tmp_path, tmp_path / "screen.png")
        region = shot[y:y + h, x:x + w]
        assert region.size and len(np.unique(region.reshape(-1, 3), axis=0)) > 50, "the window is blank"
        app.send_signal(signal.SIGINT)  # Ctrl-C closes the window
        assert app.wait(60) == 0, (tmp_path / "app.log").read_text()
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
        log.close()
    text = (tmp_path / "app.log").read_text()
    assert "Could not load the Qt platform plugin" not in text, text


UID_NAME = "1.2.826.0.1.3680043.8.498.1234567890123456789012345678901234.dcm"


@needs_xvfb
@pytest.mark.skipif(shutil.which("xdotool") is None, reason="xdotool is not installed")
def test_a_uid_named_study_opened_from_the_command_line_and_run_with_ctrl_r_fits_and_shows_big_images(
        xvfb, tmp_path):
    """Issue 27: ``p2p-desktop UID.dcm`` (a study retrieved from a PACS is named by its UID), then
    Ctrl+R: the window still fits the 1280 x 800 screen and the original and adversarial images
    are each drawn at least 200 px wide (measured from the ViewBox mapping, in screen pixels)."""
    import json

    from p2p_desktop.paths import samples_dir

    (tmp_path / "pacs").mkdir()
    study = tmp_path / "pacs" / UID_NAME
    shutil.copy(samples_dir() / "dicom" / "malignant" / "malignant_9000001.dcm", study)
    display = xvfb(1280, 800)
    env = _env(display, tmp_path)
    (tmp_path / "settings.ini").write_text("[run]\nattack=fgsm\ndevice=cpu\n")
    out = tmp_path / "probe.json"
    log = (tmp_path / "app.log").open("w")
    probe = Path(__file__).with_name("xcb_probe.py")
    app = subprocess.Popen([sys.executable, str(probe), str(out), str(study)], env=env, stdout=log,
                           stderr=subprocess.STDOUT)
    try:
        _window_geometry(display, tmp_path, "breast-ultrasound")
        wid = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "breast-ultrasound"], env=env,
                             capture_output=True, text=True, timeout=30).stdout.split()[0]
        deadline = time.monotonic() + 240
        while not out.exists() and time.monotonic() < deadline:  # (Ctrl+R is refused until the study is shown)
            subprocess.run(["xdotool", "windowfocus", "--sync", wid, "key", "--clearmodifiers", "ctrl+r"], env=env,
                           capture_output=True, timeout=30)
            for _ in range(20):
                if out.exists():
                    break
                time.sleep(0.5)
        assert out.exists(), (tmp_path / "app.log").read_text()
        time.sleep(0.5)
        probe_data = json.loads(out.read_text())
        x, y, w, h = _window_geometry(display, tmp_path, "breast-ultrasound")
        assert app.poll() is None, (tmp_path / "app.log").read_text()
        assert probe_data["study"] == UID_NAME and UID_NAME in probe_data["entry"], probe_data
        assert x >= 0 and y >= 0 and x + w <= 1280 and y + h <= 800, ((x, y, w, h), probe_data)
        fx, fy, fw, fh = probe_data["frame"]
        assert fx >= 0 and fy >= 0 and fx + fw <= 1280 and fy + fh <= 800, probe_data
        assert probe_data["minimum_hint"][0] <= 1280, probe_data
        for name in ("original", "adversarial"):
            assert probe_data["drawn"][name][0] >= 200, probe_data
        app.send_signal(signal.SIGINT)
        assert app.wait(60) == 0, (tmp_path / "app.log").read_text()
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
        log.close()


@needs_xvfb
@pytest.mark.timeout(600)
def test_a_20_case_study_from_an_evaluate_folder_is_read_in_the_real_window(xvfb, tmp_path):
    """Issue 29: a blinded study made from an ``evaluate`` folder, read to the end in the real
    reading view on xcb by a simulated reader (keyboard only), then scored from those answers."""
    from p2p_desktop.cli.main import main
    from p2p_desktop.readerstudy import load_answers

    env = {"P2P_DESKTOP_HOME": str(tmp_path / "home"), "P2P_DESKTOP_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert main(["phantoms", "--n", "24", "--seed", "7350000", "--out", str(tmp_path / "ph"), "--size", "96"]) == 0
        assert main(["evaluate", str(tmp_path / "ph"), "--attacks", "fgsm,pgd", "--classifiers", "demo-squeezenet1_1",
                     "--out", str(tmp_path / "ev"), "--device", "cpu"]) == 0
        study, key = tmp_path / "study", tmp_path / "private" / "KEY.json"
        assert main(["reader-study", "make", str(tmp_path / "ev"), "--out", str(study), "--key", str(key),
                     "--cases", "20", "--readers", "1", "--seed", "3"]) == 0
        display = xvfb(1280, 800)
        out, shot = tmp_path / "probe.json", tmp_path / "reading.png"
        run_env = dict(_env(display, tmp_path), **env)
        subprocess.run([sys.executable, str(Path(__file__).with_name("reader_xcb_probe.py")), str(study), "sim",
                        str(out), str(shot)], env=run_env, check=True, timeout=300)
        seen = json.loads(out.read_text())
        assert seen["platform"] == "xcb" and seen["cases"] == 20
        x, y, w, h = seen["frame"]
        ax, ay, aw, ah = seen["available"]
        assert ax <= x and ay <= y and x + w <= ax + aw and y + h <= ay + ah, seen  # fits the screen
        assert min(seen["drawn"][0]) >= 200, seen  # the image is shown large enough to judge
        for word in ("fgsm", "demo-squeezenet1_1", "benign_", "malignant_", "normal_", ".png", ".dcm"):
            assert word not in seen["labels"], word  # nothing on screen unblinds
        assert seen["shot"] and shot.stat().st_size > 10_000
        assert seen["progress"].startswith("All 20 cases read")
        answers = load_answers(study)["sim"]
        assert len(answers) == 20 and all(a.seconds is not None for a in answers.values())
        assert main(["reader-study", "score", str(study), "--key", str(key), "--json"]) == 0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines() if line.strip()]
    actions = [r["data"].get("action") for r in records if r["event"] == "reader-study"]
    assert actions == ["make", "read", "score"], actions
