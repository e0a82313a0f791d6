"""A guard against a reference-count leak of ``True`` in some PySide6 builds.

With PySide6 6.12 on CPython before 3.12 (where ``True`` and ``False`` are not immortal),
every ``Signal.emit()`` made from Python drops one reference to ``True`` that it never took.
pyqtgraph emits signals on every resize and repaint, and the worker on every attack step, so a
long session (or a long test run) drains the count to zero and the interpreter aborts with
"Fatal Python error: bool_dealloc". :func:`install` measures whether this build leaks and, if
it does, gives back the lost references from a GUI-thread timer (``Py_IncRef`` up to a floor
of RESERVOIR), so the count never comes near zero; memory stays constant. Where the leak is
absent it does nothing.
"""

from __future__ import annotations

import sys

__all__ = ["emit_leaks", "install", "installed", "RESERVOIR"]

#: The reference count each bool is kept at or above; an emit costs one, the timer tops up
#: every TOP_UP_MS (room for RESERVOIR emits per interval).
RESERVOIR = 200_000
TOP_UP_MS = 200

_timer = None


def emit_leaks() -> bool:
    """Whether ``Signal.emit()`` from Python loses a reference to ``True`` in this build."""
    if sys.version_info >= (3, 12):  # immortal bools: nothing can be lost
        return False
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(32):
        probe.ping.emit()
    return sys.getrefcount(True) < before - 16


def _top_up() -> None:
    import ctypes

    incref = ctypes.pythonapi.Py_IncRef
    incref.argtypes = [ctypes.py_object]
    for value in (True, False):
        for _ in range(max(0, RESERVOIR - sys.getrefcount(value))):
            incref(value)  # gives back a reference the leak took


def installed() -> bool:
    """Whether the guard is running."""
    return _timer is not None


def install() -> bool:
    """Start the guard once (needs a QCoreApplication); True when it is active."""
    global _timer
    if _timer is not None:
        return True
    if not emit_leaks():
        return False
    from PySide6.QtCore import QCoreApplication, QTimer

    app = QCoreApplication.instance()
    if app is None:
        return False
    _top_up()
    _timer = QTimer(app)
    _timer.setObjectName("p2p-bool-refcount-guard")
    _timer.setInterval(TOP_UP_MS)
    _timer.timeout.connect(_top_up)
    _timer.start()
    return True
