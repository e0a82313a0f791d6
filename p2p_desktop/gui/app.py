"""Start the desktop app, or run its smoke test (``p2p-desktop --smoke-test [--screenshot FILE]``).

The smoke test opens the real main window, loads the demo sample, runs a quick FGSM attack
on the default demo classifier through the same worker the Run button uses, optionally
saves a screenshot of the window with its results, and returns 0 on success, 1 on failure.
It uses a throw-away settings file, so the user's settings are never touched, and works
headless (``QT_QPA_PLATFORM=offscreen`` is chosen when there is no display).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["run_app", "create_application", "run_smoke_test", "wait_until"]

log = logging.getLogger("p2p_desktop.gui")

SMOKE_TIMEOUT_S = 600


def _headless() -> bool:
    if sys.platform.startswith("linux"):
        return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return False


def create_application(argv: list[str] | None = None):
    """The QApplication (created once), themed."""
    os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
    from PySide6.QtWidgets import QApplication

    from p2p_desktop.gui.settings import APPLICATION, ORGANISATION
    from p2p_desktop.gui.theme import apply_theme

    app = QApplication.instance()
    if app is None:
        app = QApplication(argv if argv is not None else [sys.argv[0] if sys.argv else "p2p-desktop"])
        app.setOrganizationName(ORGANISATION)
        app.setApplicationName(APPLICATION)
        app.setApplicationDisplayName("P2P Desktop")
        apply_theme(app)
    from p2p_desktop.gui import refguard

    refguard.install()  # this PySide6 build loses a reference to True per emit: give them back
    return app


def wait_until(condition, timeout_s: float, poll_ms: int = 20) -> bool:
    """Process Qt events until ``condition()`` is true or the time is up (no busy sleeping)."""
    from PySide6.QtCore import QEventLoop, QTimer

    deadline = time.monotonic() + timeout_s
    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(poll_ms)
    timer.timeout.connect(lambda: (condition() or time.monotonic() > deadline) and loop.quit())
    if condition():
        return True
    timer.start()
    loop.exec()
    timer.stop()
    return bool(condition())


def _file_logging() -> None:
    """Log to the user's log folder as well (the error dialog names it)."""
    from p2p_desktop.paths import user_data_dir

    try:
        folder = user_data_dir() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(folder / "gui.log", encoding="utf-8")
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger("p2p_desktop").addHandler(handler)


def run_smoke_test(window, screenshot: str | None = None, timeout_s: float = SMOKE_TIMEOUT_S,
                   attack: str = "fgsm") -> tuple[bool, str]:
    """Drive a shown MainWindow through load -> Run -> results; returns (ok, message)."""
    if not wait_until(lambda: not window.browser.is_loading(), 120):
        return False, "the demo sample did not finish loading"
    if window.current_study is None and not window.browser.select_first():
        return False, "no study could be loaded (resources/samples is empty and no fallback image was found)"
    if window.current_study is None:
        return False, "the demo study could not be opened"
    if not window.panel.set_attack(attack):
        return False, f"attack {attack!r} is not registered"
    if not window.panel.classifier_spec():
        return False, ("no classifier registered: the demo models (e.g. demo-squeezenet1_1) belong in "
                       "resources/models")
    errors_before = len(window.errors)
    if not window.run_attack():
        return False, f"the run was refused: {window.status_label.text()}"
    if not wait_until(lambda: not window.runner.is_running(), timeout_s):
        window.cancel_run()
        wait_until(lambda: not window.runner.is_running(), 60)
        return False, f"the attack did not finish within {timeout_s:.0f} s"
    if len(window.errors) > errors_before:
        title, message = window.errors[-1]
        return False, f"{title}: {message}"
    entry = window.current_entry()
    if entry is None:
        return False, "the run finished without a result"
    wait_until(lambda: False, 0.3)  # let the plots and views repaint
    if screenshot:
        path = Path(screenshot)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not window.grab().save(str(path)):
            return False, f"could not save the screenshot to {path}"
    r = entry.result
    return True, (f"{r.attack} on {entry.study.name} with {entry.classifier_name}: "
                  f"{r.original_label} -> {r.adversarial_label} ({r.outcome}), "
                  f"SSIM {r.metrics.get('ssim', float('nan')):.3f}, {r.seconds:.2f} s")


def _close_on_ctrl_c(window):
    """Ctrl-C in the terminal closes the window (cancelling a running job) instead of being
    ignored while Qt's event loop runs; a timer lets Python see the signal."""
    import signal

    from PySide6.QtCore import QTimer

    def on_sigint(*_args) -> None:
        window.ask_before_close = False
        window.close()

    signal.signal(signal.SIGINT, on_sigint)
    timer = QTimer()
    timer.timeout.connect(lambda: None)
    timer.start(250)
    return timer


def run_app(smoke_test: bool = False, screenshot: str | None = None, paths=()) -> int:
    """Open the desktop app (with ``paths``: those studies, the first selected, instead of the
    demo sample); with ``smoke_test`` run the smoke test instead and return 0/1."""
    if smoke_test and _headless():
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from p2p_desktop.gui.platform_check import platform_problem

    problem = platform_problem()
    if problem:  # Qt would abort with a misleading message
        sys.stderr.write(problem + "\n")
        return 2
    app = create_application()
    from p2p_desktop.gui.main_window import MainWindow
    from p2p_desktop.gui.settings import AppSettings
    from p2p_desktop.plugins import load_plugins

    load_plugins()  # once, at start-up; the Plugins dialog refreshes it when the user enables one

    if not smoke_test:
        _file_logging()
        window = MainWindow(AppSettings.user(), paths=[Path(p) for p in paths] or None)
        window.show()
        from PySide6.QtCore import QTimer

        QTimer.singleShot(0, window.review_changed_plugins)  # a changed plugin asks again
        app.aboutToQuit.connect(window.shutdown)  # waits for a cancelled job's worker
        window.closed.connect(app.quit)
        wake = _close_on_ctrl_c(window)  # noqa: F841 - kept alive while the app runs
        return int(app.exec())

    with tempfile.TemporaryDirectory(prefix="p2p-smoke-") as tmp:
        window = MainWindow(AppSettings.at(Path(tmp) / "settings.ini"))
        window.ask_before_close = False
        window.resize(1600, 1000)
        window.show()
        try:
            ok, message = run_smoke_test(window, screenshot)
        except Exception as exc:  # noqa: BLE001 - report, never hang
            ok, message = False, f"{type(exc).__name__}: {exc}"
        finally:
            window.shutdown()
            window.close()
            app.processEvents()
    stream = sys.stdout if ok else sys.stderr
    stream.write(f"smoke test {'passed' if ok else 'FAILED'}: {message}\n")
    if ok and screenshot:
        stream.write(f"screenshot: {screenshot}\n")
    return 0 if ok else 1
