"""``python tests/gui/xcb_probe.py OUT.json [p2p-desktop arguments…]``: runs the real
``p2p-desktop`` entry point and, after each run finishes, writes what the screen shows to OUT.json:
the window's frame on the screen and each results image's drawn size in screen pixels, from the
ViewBox mapping. Used by test_gui_xcb.py (it watches, it changes nothing)."""

from __future__ import annotations

import json
import sys


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    from PySide6.QtCore import QTimer

    from p2p_desktop.cli.main import main as cli_main
    from p2p_desktop.gui import main_window

    original_init = main_window.MainWindow.__init__

    def dump(window) -> None:
        res = window.results
        frame = window.frameGeometry()
        avail = window.screen().availableGeometry()
        data = {"frame": [frame.x(), frame.y(), frame.width(), frame.height()],
                "available": [avail.x(), avail.y(), avail.width(), avail.height()],
                "minimum_hint": [window.minimumSizeHint().width(), window.minimumSizeHint().height()],
                "study": window.current_study.path.name if window.current_study is not None else None,
                "tab": window.tabs.tabText(window.tabs.currentIndex()),
                "drawn": {name: list(pane.drawn_size()) for name, pane in
                          (("original", res.original_pane), ("adversarial", res.adversarial_pane),
                           ("heatmap", res.heatmap_pane))},
                "entry": res.entry.title if res.entry is not None else None}
        with open(out, "w", encoding="utf-8") as f:
            json.dump(data, f)

    def init(self, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        self.run_finished.connect(lambda: QTimer.singleShot(1000, lambda: dump(self)))

    main_window.MainWindow.__init__ = init
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
