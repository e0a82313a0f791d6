"""A long GUI session survives: this PySide6 build drops a reference to ``True`` on every
``Signal.emit()``, which used to abort the interpreter ("bool_dealloc") after enough repaints,
resizes and attack steps; the app's guard gives the references back."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.gui

SESSION = textwrap.dedent("""
    import sys
    from PySide6.QtCore import QEventLoop, QObject, QTimer, Signal
    from p2p_desktop.gui.app import create_application

    app = create_application()

    class Emitter(QObject):
        ping = Signal(object)

    e = Emitter()
    e.ping.connect(lambda value: None)
    for chunk in range(30):            # 600,000 emits, as a long session makes
        for i in range(20000):
            e.ping.emit(i)
        loop = QEventLoop()
        QTimer.singleShot(10, loop.quit)
        loop.exec()                    # the event loop turns between bursts
    from p2p_desktop.gui import refguard
    # where emits leak, the guard keeps the count far from zero; elsewhere surviving is the whole test
    print("alive", sys.getrefcount(True) > 1000 if refguard.installed() else True)
""")


def test_a_long_session_of_signal_emits_does_not_abort_the_app(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "P2P_DESKTOP_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", SESSION], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "alive True" in out.stdout


def test_the_guard_is_active_exactly_where_emits_leak(qtbot):
    from p2p_desktop.gui import refguard
    from p2p_desktop.gui.app import create_application

    create_application()
    assert refguard.installed() == refguard.emit_leaks()
