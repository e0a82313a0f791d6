"""Retake the README screenshots (docs/screenshots) at 1280 x 800 and 1920 x 1080.

    QT_QPA_PLATFORM=offscreen python scripts/take_screenshots.py [--out docs/screenshots]

Opens the real main window with throw-away settings, loads the bundled demo sample, runs FGSM
and PGD on a demo phantom with the demo SqueezeNet (CPU) through the Run button's worker, and
grabs the window: ``main-window`` (results of the PGD run), ``viewer`` (the Image tab) and
``compare`` (the two runs side by side), each as ``NAME.png`` (1920 x 1080) and
``NAME-1280x800.png``. Nothing on screen names a path of this machine (files are shown by name).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

SIZES = {"": (1920, 1080), "-1280x800": (1280, 800)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "screenshots"))
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from p2p_desktop.gui.app import create_application, wait_until

    app = create_application()
    from p2p_desktop.gui.imageview import ImagePane
    from p2p_desktop.gui.main_window import MainWindow
    from p2p_desktop.gui.settings import AppSettings
    from p2p_desktop.paths import samples_dir

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    phantom = sorted((samples_dir() / "dicom" / "malignant").glob("*.dcm"))[0]
    with tempfile.TemporaryDirectory(prefix="p2p-shots-") as tmp:
        window = MainWindow(AppSettings.at(Path(tmp) / "settings.ini"))
        window.ask_before_close = False
        window.resize(*SIZES[""])
        window.show()
        wait_until(lambda: not window.browser.is_loading(), 120)
        window.browser.select_path(phantom)
        window.panel.set_classifier("demo-squeezenet1_1")
        window.panel.set_device("cpu")
        entries = []
        for attack, params in (("fgsm", {"eps": 0.03}), ("pgd", {"eps": 0.03, "steps": 10})):
            window.panel.set_attack(attack)
            window.panel.set_params(**params)
            if not window.run_attack():
                sys.stderr.write(f"the {attack} run was refused: {window.status_label.text()}\n")
                return 1
            wait_until(lambda: not window.runner.is_running(), 600)
            if window.errors:
                sys.stderr.write(f"{window.errors[-1]}\n")
                return 1
            entries.append(window.current_entry())
        for suffix, (w, h) in SIZES.items():
            window.resize(w, h)
            window._default_dock_sizes()
            wait_until(lambda: False, 0.3)
            window.show_entry(entries[-1])
            window.details_dock.raise_()  # the run's probabilities, metrics and notes beside the images
            window.results._on_hover(-1, -1)
            wait_until(lambda: False, 0.2)
            window.results.original_pane.fit()  # the linked panes follow
            window.viewer.pane.fit()
            wait_until(lambda: False, 0.4)
            window.grab().save(str(out / f"main-window{suffix}.png"))
            window.tabs.setCurrentWidget(window.viewer)
            wait_until(lambda: False, 0.2)
            window.viewer.pane.fit()
            wait_until(lambda: False, 0.4)
            window.grab().save(str(out / f"viewer{suffix}.png"))
            window.compare_entries(entries[0], entries[1])
            wait_until(lambda: False, 0.2)
            for pane in window.compare.findChildren(ImagePane):
                pane.fit()
            wait_until(lambda: False, 0.4)
            window.grab().save(str(out / f"compare{suffix}.png"))
        window.shutdown()
        window.close()
        app.processEvents()
    for name in sorted(out.glob("*.png")):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
