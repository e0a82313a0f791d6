"""Tools ▸ Reader study…: a distraction-free reading view of a blinded study, one case at a time.

No labels, no metrics, no file names: the image (or the pair, left A and right B), the case's
place in the reader's order, and the questions. Window/level may be changed. Every answer is
saved the moment it is given (a new answers file, atomic, see
:mod:`p2p_desktop.readerstudy.answers`), with the seconds the case was on screen; reopening the
study as the same reader resumes at the first unanswered case of their order. Closing the view
appends a ``reader-study`` ``read`` audit record.

Keyboard only: Y / N (altered?) or ← / → (pair: which image is altered), 1-5 confidence,
B / M / O finding (benign, malignant, nOrmal), F1-F5 BI-RADS (F6 clears it), Enter saves and
shows the next case; [ ] narrow/widen the window, - = lower/raise the level, 0 resets them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMenu,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
)

from p2p_desktop.gui.imageview import ImagePane

__all__ = ["ReaderStudyView", "open_reader_study", "install_reader_study_action"]

FINDING_KEYS = {"benign": "B", "malignant": "M", "normal": "O"}


def _load(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    import pydicom

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.astype(np.float32)
    top = float(2 ** int(ds.BitsStored) - 1)
    return arr / top, (0.0, 1.0)


class ReaderStudyView(QDialog):
    """The reading view of ``study`` for ``reader`` (see the module docstring)."""

    def __init__(self, study: str | Path, reader: str, parent=None) -> None:
        from p2p_desktop.readerstudy import load_study
        from p2p_desktop.readerstudy.answers import answered_cases, check_reader, reader_order

        super().__init__(parent)
        self.study = Path(study)
        self.reader = check_reader(reader)
        self.meta = load_study(self.study)
        self.pair = self.meta["design"] == "pair"
        self.slot, self.order = reader_order(self.study, self.meta, self.reader)
        done = answered_cases(self.study, self.reader)
        self.files = {c["case"]: c["files"] for c in self.meta["cases"]}
        self.index = next((i for i, c in enumerate(self.order) if c not in done), len(self.order))
        self.saved_this_session = 0
        self._shown_at = time.monotonic()
        self.window_width, self.window_level = 1.0, 0.5
        self.setWindowTitle("Reader study")
        self.setModal(False)
        self._build()
        self._show_case()

    # -- layout ---------------------------------------------------------------------------------
    def _group(self, row: QHBoxLayout, caption: str, options: list[tuple[str, object]]) -> QButtonGroup:
        group = QButtonGroup(self)
        group.setExclusive(True)
        row.addWidget(QLabel(caption))
        for i, (text, value) in enumerate(options):
            b = QRadioButton(text)
            b.setProperty("value", value)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            group.addButton(b, i)
            row.addWidget(b)
        row.addSpacing(24)
        group.buttonClicked.connect(lambda _b: self._update())
        return group

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.progress = QLabel()
        self.progress.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.progress)
        images = QHBoxLayout()
        self.panes = [ImagePane("") for _ in range(2 if self.pair else 1)]
        for pane in self.panes:
            images.addWidget(pane, 1)
        if self.pair:
            self.panes[0].link(self.panes[1])
        layout.addLayout(images, 1)
        q1 = QHBoxLayout()
        altered = ([("A (left) [←]", "A"), ("B (right) [→]", "B")] if self.pair
                   else [("Yes [Y]", True), ("No [N]", False)])
        self.altered = self._group(q1, "Which image is altered?" if self.pair else "Altered?", altered)
        self.confidence = self._group(q1, "Confidence:", [(f"{i} [{i}]", i) for i in range(1, 6)])
        q1.addStretch(1)
        q2 = QHBoxLayout()
        self.finding = self._group(q2, "Finding:", [(f"{f} [{k}]", f) for f, k in FINDING_KEYS.items()])
        self.birads = self._group(q2, "BI-RADS (optional):", [(f"{i} [F{i}]", i) for i in range(1, 6)])
        self.birads.setExclusive(False)
        q2.addStretch(1)
        self.save_button = QPushButton("Save and next [Enter]")
        self.save_button.clicked.connect(self.save_and_next)
        q2.addWidget(self.save_button)
        for row in (q1, q2):
            layout.addLayout(row)
        keys = {Qt.Key.Key_Return: self.save_and_next, Qt.Key.Key_Enter: self.save_and_next,
                Qt.Key.Key_BracketLeft: lambda: self._wl(width=0.8),
                Qt.Key.Key_BracketRight: lambda: self._wl(width=1.25),
                Qt.Key.Key_Minus: lambda: self._wl(level=-0.05), Qt.Key.Key_Equal: lambda: self._wl(level=0.05),
                Qt.Key.Key_0: lambda: self._wl(reset=True)}
        if self.pair:
            keys[Qt.Key.Key_Left] = lambda: self._pick(self.altered, 0)
            keys[Qt.Key.Key_Right] = lambda: self._pick(self.altered, 1)
        else:
            keys[Qt.Key.Key_Y] = lambda: self._pick(self.altered, 0)
            keys[Qt.Key.Key_N] = lambda: self._pick(self.altered, 1)
        for i in range(5):
            keys[getattr(Qt.Key, f"Key_{i + 1}")] = lambda i=i: self._pick(self.confidence, i)
            keys[getattr(Qt.Key, f"Key_F{i + 1}")] = lambda i=i: self._pick_birads(i)
        keys[Qt.Key.Key_F6] = lambda: self._pick_birads(None)
        for i, k in enumerate(FINDING_KEYS.values()):
            keys[getattr(Qt.Key, f"Key_{k}")] = lambda i=i: self._pick(self.finding, i)
        self._keys = keys
        for pane in self.panes:
            pane.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.save_button.setAutoDefault(False)
        self.save_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.resize(1100, 800)

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Every answer by keyboard (see the module docstring); Escape closes the view."""
        slot = self._keys.get(Qt.Key(event.key())) if not event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier \
            else None
        if slot is not None:
            slot()
            event.accept()
            return
        super().keyPressEvent(event)

    # -- answering ------------------------------------------------------------------------------
    def _pick(self, group: QButtonGroup, i: int) -> None:
        group.button(i).setChecked(True)
        self._update()

    def _pick_birads(self, i: int | None) -> None:
        for b in self.birads.buttons():
            b.setChecked(False)
        if i is not None:
            self.birads.button(i).setChecked(True)
        self._update()

    def _value(self, group: QButtonGroup):
        b = group.checkedButton()
        return None if b is None else b.property("value")

    def _update(self) -> None:
        ready = all(self._value(g) is not None for g in (self.altered, self.confidence, self.finding))
        self.save_button.setEnabled(ready and self.index < len(self.order))

    def _clear(self) -> None:
        for g in (self.altered, self.confidence, self.finding, self.birads):
            g.setExclusive(False)
            for b in g.buttons():
                b.setChecked(False)
            g.setExclusive(g is not self.birads)

    def _wl(self, width: float = 1.0, level: float = 0.0, reset: bool = False) -> None:
        if reset:
            self.window_width, self.window_level = 1.0, 0.5
        else:
            self.window_width = float(np.clip(self.window_width * width, 0.02, 4.0))
            self.window_level = float(np.clip(self.window_level + level, -1.0, 2.0))
        lo = self.window_level - self.window_width / 2
        for pane in self.panes:
            pane.set_levels(lo, lo + self.window_width)

    def _show_case(self) -> None:
        self._clear()
        total = len(self.order)
        if self.index >= total:
            self.progress.setText(f"All {total} cases read. Thank you.")
            for pane in self.panes:
                pane.clear()
            self._update()
            return
        case = self.order[self.index]
        self.progress.setText(f"{self.index + 1} / {total}")
        for pane, rel in zip(self.panes, self.files[case]):
            arr, _levels = _load(self.study / rel)
            pane.set_image(arr, levels=(0.0, 1.0), auto_range=True)
        self._wl(width=1.0)
        self._shown_at = time.monotonic()
        self._update()

    def save_and_next(self) -> None:
        """Save the current answer (a new file) and show the next case; nothing until all is answered."""
        from p2p_desktop.readerstudy import Answer, save_answers

        if not self.save_button.isEnabled():
            return
        case = self.order[self.index]
        birads = self._value(self.birads)
        answer = Answer(case, self._value(self.altered), int(self._value(self.confidence)),
                        str(self._value(self.finding)), int(birads) if birads is not None else None,
                        seconds=round(time.monotonic() - self._shown_at, 3),
                        time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        try:
            save_answers(self.study, self.reader, [answer], source="app", order=self.slot)
        except Exception as exc:  # noqa: BLE001 - shown, the case stays on screen
            QMessageBox.critical(self, "Reader study", f"The answer was not saved: {exc}")
            return
        self.saved_this_session += 1
        self.index += 1
        self._show_case()

    def done(self, result: int) -> None:  # noqa: D102 - QDialog API
        self._audit()
        super().done(result)

    def closeEvent(self, event) -> None:  # noqa: N802, D102 - Qt API
        self._audit()
        super().closeEvent(event)

    def _audit(self) -> None:
        if getattr(self, "_audited", False):
            return
        self._audited = True
        from p2p_desktop.audit import AuditLog

        try:
            AuditLog().append("reader-study", {"action": "read", "study": str(self.study.resolve()),
                                               "study_id": self.meta["study_id"], "reader": self.reader,
                                               "answered_this_session": self.saved_this_session,
                                               "position": self.index, "of": len(self.order)})
        except Exception:  # noqa: BLE001 - the answers are saved; a log failure must not lose the window
            pass


def open_reader_study(window) -> ReaderStudyView | None:
    """Ask for the study folder and the reader's name, then open the reading view."""
    folder = QFileDialog.getExistingDirectory(window, "Reader study folder")
    if not folder:
        return None
    if not (Path(folder) / "study.json").is_file():
        QMessageBox.warning(window, "Reader study", "That folder is not a reader study (no study.json).")
        return None
    name, ok = QInputDialog.getText(window, "Reader study", "Reader name:")
    if not ok or not name.strip():
        return None
    try:
        view = ReaderStudyView(folder, name.strip(), window)
    except Exception as exc:  # noqa: BLE001
        QMessageBox.warning(window, "Reader study", str(exc))
        return None
    window.reader_study_view = view
    view.showMaximized()
    return view


def install_reader_study_action(window) -> QAction:
    """Tools ▸ Reader study…"""
    action = QAction("Reader study…", window)
    action.setToolTip("Read a blinded reader study (made with `p2p-desktop reader-study make`)")
    action.triggered.connect(lambda _checked=False: open_reader_study(window))
    tools = next((a.menu() for a in window.menuBar().actions()
                  if isinstance(a.menu(), QMenu) and a.text().replace("&", "") == "Tools"), None)
    (tools if tools is not None else window.menuBar()).addAction(action)
    window.reader_study_action = action
    return action
