"""The core never imports Qt: import every non-GUI module with PySide6 made unimportable."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_every_non_gui_module_imports_without_qt():
    code = textwrap.dedent("""
        import importlib, importlib.abc, pkgutil, sys

        class BlockQt(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph", "PyQt5", "PyQt6"):
                    raise ImportError(f"Qt is blocked in the core: {name}")
                return None

        sys.meta_path.insert(0, BlockQt())
        import p2p_desktop
        names = []
        for info in pkgutil.walk_packages(p2p_desktop.__path__, "p2p_desktop."):
            if info.name.startswith("p2p_desktop.gui") or info.name.endswith("__main__"):
                continue
            importlib.import_module(info.name)
            names.append(info.name)
        assert not any(m.split(".")[0] in ("PySide6", "pyqtgraph") for m in sys.modules)
        print(len(names))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) >= 20
