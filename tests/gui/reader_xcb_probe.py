"""``python tests/gui/reader_xcb_probe.py STUDY READER OUT.json [SHOT.png]``: opens the reading
view of STUDY for READER on the real platform (xcb under Xvfb in test_gui_xcb.py), answers every
case from the keyboard as a simulated reader (``altered`` yes on even cases, confidence 1-5 in
turn, the finding cycling benign / malignant / normal), saves a screenshot of the window at the
first case, and writes what the screen showed to OUT.json. It answers through Qt's event queue
of the real window; it changes nothing else."""

from __future__ import annotations

import json
import sys


def main() -> int:
    study, reader, out = sys.argv[1:4]
    shot = sys.argv[4] if len(sys.argv) > 4 else None
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication, QLabel

    from p2p_desktop.gui.reader_study import ReaderStudyView

    app = QApplication(sys.argv[:1])
    view = ReaderStudyView(study, reader)
    view.resize(1200, 760)
    view.show()
    QTest.qWaitForWindowExposed(view, 20000)
    QTest.qWait(300)
    frame, avail = view.frameGeometry(), view.screen().availableGeometry()
    data = {"frame": [frame.x(), frame.y(), frame.width(), frame.height()],
            "available": [avail.x(), avail.y(), avail.width(), avail.height()],
            "platform": app.platformName(), "cases": len(view.order),
            "drawn": [list(p.drawn_size()) for p in view.panes],
            "labels": " ".join(w.text() for w in view.findChildren(QLabel))}
    if shot:
        data["shot"] = bool(view.screen().grabWindow(view.winId()).save(shot))
    findings = (Qt.Key.Key_B, Qt.Key.Key_M, Qt.Key.Key_O)
    confidences = (Qt.Key.Key_1, Qt.Key.Key_2, Qt.Key.Key_3, Qt.Key.Key_4, Qt.Key.Key_5)
    for i in range(len(view.order)):
        altered = (Qt.Key.Key_Left if i % 2 == 0 else Qt.Key.Key_Right) if view.pair else \
            (Qt.Key.Key_Y if i % 2 == 0 else Qt.Key.Key_N)
        for key in (altered, confidences[i % 5], findings[i % 3], Qt.Key.Key_Return):
            QTest.keyClick(view, key)
        QTest.qWait(20)
    data["progress"] = view.progress.text()
    view.close()
    app.processEvents()
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
