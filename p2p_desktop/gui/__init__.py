"""The PySide6 desktop app: the only package that imports Qt.

``run_app(smoke_test, screenshot)`` starts it (``p2p-desktop`` with no sub-command). The
widgets are a thin layer over the core: studies come from :mod:`p2p_desktop.io`, attacks
run through :func:`p2p_desktop.attacks.runner.run_attack` on a worker thread
(:mod:`p2p_desktop.gui.worker`), and every number shown is computed outside Qt.
"""

import os

# pyqtgraph must bind to PySide6 (and never pick another Qt binding that happens to be installed).
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

__all__ = ["run_app"]


def run_app(smoke_test: bool = False, screenshot: str | None = None) -> int:
    """Open the desktop app (see :func:`p2p_desktop.gui.app.run_app`)."""
    from p2p_desktop.gui.app import run_app as _run

    return _run(smoke_test=smoke_test, screenshot=screenshot)
