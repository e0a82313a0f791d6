"""Regenerate the README screenshots from the real app (demo sample, demo classifier)::

    QT_QPA_PLATFORM=offscreen python -m p2p_desktop.gui.screenshots docs/screenshots

Writes ``main-window.png`` (a PGD run with its results), ``viewer.png`` (a DICOM study with
its lesion mask) and ``compare.png`` (two runs side by side). Uses a throw-away settings file.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]


def _run(window, attack: str, **params) -> None:
    from p2p_desktop.gui.app import wait_until

    window.panel.set_attack(attack)
    window.panel.set_params(**params)
    if not window.run_attack():
        raise RuntimeError(f"run refused: {window.status_label.text()}")
    wait_until(lambda: not window.runner.is_running(), 600)
    if window.errors:
        raise RuntimeError(": ".join(window.errors[-1]))


def main(argv: list[str] | None = None) -> int:
    """Write the documentation's screenshots into the folder given (``docs/screenshots`` by default)."""
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "docs/screenshots")
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from p2p_desktop.gui.app import create_application, wait_until
    from p2p_desktop.gui.main_window import MainWindow
    from p2p_desktop.gui.settings import AppSettings

    app = create_application()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="p2p-shots-") as tmp:
        window = MainWindow(AppSettings.at(Path(tmp) / "settings.ini"))
        window.ask_before_close = False
        window.resize(1600, 1000)
        window.show()
        try:
            wait_until(lambda: not window.browser.is_loading(), 120)
            malignant = next((p for p, item in window.browser.items.items()
                              if item.kind == "dicom" and item.label == "malignant" and item.has_mask), None)
            if malignant is not None:
                window.browser.select_path(malignant)
            wait_until(lambda: window.current_study is not None, 30)
            window.panel.set_device("cpu")
            window.tabs.setCurrentWidget(window.viewer)
            wait_until(lambda: False, 0.3)
            window.grab().save(str(out / "viewer.png"))

            _run(window, "fgsm", eps=0.03)
            _run(window, "pgd", eps=0.03, alpha=0.004, steps=25, random_start=False)
            window.history.select(1, 2)
            window.history.compare_button.click()
            wait_until(lambda: False, 0.3)
            window.grab().save(str(out / "compare.png"))

            window.history.select(2)
            window.results.overlay_check.setChecked(False)
            wait_until(lambda: False, 0.3)
            window.grab().save(str(out / "main-window.png"))
        finally:
            window.shutdown()
            window.close()
            app.processEvents()
    for name in ("main-window.png", "viewer.png", "compare.png"):
        print(out / name)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
