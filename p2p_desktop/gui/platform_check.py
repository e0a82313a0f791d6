"""Start-up check of Qt's X11 (xcb) platform plugin on Linux.

Qt's xcb plugin needs a dozen X11 libraries that a fresh Debian/Ubuntu machine lacks; without
them Qt aborts with a message that names only ``libxcb-cursor0``. Before the QApplication is
created, :func:`platform_problem` resolves the plugin's libraries (``ldd`` on the plugin and
``libQt6XcbQpa``, or ``ctypes`` when ``ldd`` is missing) and returns one line naming the missing
Debian packages and the ``apt-get`` command, or None when all resolve (or the check does not
apply: not Linux, another platform such as ``offscreen`` or ``wayland``, or no ``DISPLAY``).

``scripts/install-system-deps.sh`` installs the same packages.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["XCB_PACKAGES", "applies", "plugin_files", "missing_sonames", "missing_packages", "platform_problem"]

#: The shared libraries Qt 6's xcb platform plugin loads, with the Debian package of each.
XCB_PACKAGES: dict[str, str] = {
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libdbus-1.so.3": "libdbus-1-3",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0",
    "libGLX.so.0": "libglx0",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
}

_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)


def applies(environ=None, platform: str | None = None) -> bool:
    """Linux, and Qt will use xcb: ``QT_QPA_PLATFORM=xcb`` or no platform chosen with a DISPLAY."""
    env = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux"):
        return False
    chosen = (env.get("QT_QPA_PLATFORM") or "").strip().lower()
    if chosen:
        return chosen.split(":")[0].split(";")[0] == "xcb"
    return bool(env.get("DISPLAY")) and not env.get("WAYLAND_DISPLAY")


def plugin_files() -> list[Path]:
    """The xcb plugin and its Qt helper library inside the installed PySide6 (those present)."""
    import importlib.util

    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return []
    qt = Path(list(spec.submodule_search_locations)[0]) / "Qt"
    candidates = [qt / "plugins" / "platforms" / "libqxcb.so"]
    candidates += sorted((qt / "lib").glob("libQt6XcbQpa.so*"))[:1]
    return [p for p in candidates if p.is_file()]


def missing_sonames(files: list[Path] | None = None, sonames=None) -> list[str]:
    """Libraries that do not resolve: from ``ldd`` on ``files`` (default: the xcb plugin), or,
    with ``sonames`` given or without ``ldd``, by loading each soname with ``ctypes``."""
    ldd = shutil.which("ldd")
    files = plugin_files() if files is None else files
    if sonames is None and ldd and files:
        missing: set[str] = set()
        for f in files:
            try:
                out = subprocess.run([ldd, str(f)], capture_output=True, text=True, timeout=30).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            missing.update(_NOT_FOUND.findall(out))
        return sorted(missing)
    missing_list = []
    for name in (XCB_PACKAGES if sonames is None else sonames):
        try:
            ctypes.CDLL(name)
        except OSError:
            missing_list.append(name)
    return missing_list


def missing_packages(sonames: list[str]) -> list[str]:
    """Debian package names for ``sonames`` (an unknown soname is named as it is)."""
    return sorted({XCB_PACKAGES.get(s, s) for s in sonames})


def platform_problem(environ=None, files: list[Path] | None = None, sonames=None) -> str | None:
    """One line saying which packages the xcb platform lacks and how to install them, or None."""
    if not applies(environ):
        return None
    missing = missing_sonames(files, sonames)
    if not missing:
        return None
    packages = missing_packages(missing)
    return (f"p2p-desktop: error: Qt's X11 (xcb) platform cannot start: missing {', '.join(missing)}. Install with: "
            f"sudo apt-get install {' '.join(packages)}  (or run scripts/install-system-deps.sh as root; "
            "QT_QPA_PLATFORM=offscreen runs without a display)")
