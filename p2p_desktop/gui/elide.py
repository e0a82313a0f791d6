"""A one-line label for file names and titles that never widens its window: a long name (a
PACS study is named by its UID) is cut in the middle with "…", and the tooltip has it all."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QLabel, QSizePolicy

__all__ = ["ElidedLabel"]


class ElidedLabel(QLabel):
    """Plain text, elided to the label's width (``Qt.ElideMiddle`` keeps the ``.dcm`` end);
    ``full_text()`` and the tooltip keep the whole text. Its minimum width is a few characters,
    whatever the text."""

    def __init__(self, text: str = "", parent=None, mode=Qt.TextElideMode.ElideMiddle) -> None:
        super().__init__(parent)
        self._full = ""
        self._mode = mode
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt API
        self._full = text or ""
        self.setToolTip(self._full if self._full else "")
        self._elide()

    def full_text(self) -> str:
        return self._full

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(self.fontMetrics().horizontalAdvance("M…M"), super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        # modest: a dock sized from its contents' hints is never widened by a long name
        wide = min(self.fontMetrics().horizontalAdvance(self._full) + 8, self.fontMetrics().averageCharWidth() * 24)
        return QSize(wide, super().sizeHint().height())

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        room = max(self.contentsRect().width(), 0)
        shown = self.fontMetrics().elidedText(self._full, self._mode, room) if room else self._full
        super().setText(shown)
