"""The session history: every run of this session, to show again or compare side by side."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from p2p_desktop.metrics.table import METRICS

__all__ = ["RunEntry", "HistoryPanel"]


@dataclass
class RunEntry:
    """One finished run: the core's AttackResult and the Study it was run on."""

    number: int
    result: object  # p2p_desktop.attacks.runner.AttackResult
    study: object  # p2p_desktop.io.Study
    when: datetime.datetime = field(default_factory=datetime.datetime.now)
    classifier_spec: str = ""  # what the user chose (registered name or card path), for provenance
    backbone_spec: str | None = None

    @property
    def classifier_name(self) -> str:
        return str(self.result.classifier.get("name", "")) if isinstance(self.result.classifier, dict) else ""

    @property
    def title(self) -> str:
        r = self.result
        target = f" → {r.target}" if r.target else ""
        return f"#{self.number} {r.attack}{target} · {self.classifier_name} · {self.study.name}"

    @property
    def verdict(self) -> str:
        r = self.result
        return f"{r.original_label} → {r.adversarial_label} ({r.outcome})"

    def describe(self) -> str:
        r = self.result
        ssim, value = METRICS["ssim"], r.metrics.get("ssim")  # label and format from the metric table
        ssim_text = f" · {ssim.label} {ssim.format(value)}" if isinstance(value, (int, float)) else ""
        return (f"{self.title}\n{self.verdict}{ssim_text} · {r.iterations} it · {r.seconds:.1f} s · "
                f"{self.when:%H:%M:%S}")


class HistoryPanel(QWidget):
    """List of runs; selecting one shows it, two can be compared."""

    show_requested = Signal(object)  # RunEntry
    compare_requested = Signal(object, object)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.entries: list[RunEntry] = []
        self.list = QListWidget()
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setAlternatingRowColors(True)
        self.list.itemSelectionChanged.connect(self._on_selection)
        self.list.itemDoubleClicked.connect(lambda item: self.show_requested.emit(self._entry(item)))
        self.compare_button = QPushButton("Compare selected")
        self.compare_button.setToolTip("Select two runs (Ctrl+click) to compare them side by side")
        self.compare_button.setEnabled(False)
        self.compare_button.clicked.connect(self._compare)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Forget the runs of this session")
        self.clear_button.clicked.connect(self.clear)
        buttons = QHBoxLayout()
        buttons.addWidget(self.compare_button)
        buttons.addStretch(1)
        buttons.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)

    def next_number(self) -> int:
        return (self.entries[-1].number + 1) if self.entries else 1

    def add(self, entry: RunEntry, select: bool = True) -> None:
        self.entries.append(entry)
        item = QListWidgetItem(entry.describe())
        item.setData(Qt.ItemDataRole.UserRole, entry.number)
        item.setForeground(QBrush(QColor("#1b5e20" if entry.result.success else "#444")))
        item.setToolTip("\n".join(entry.result.notes) or entry.title)
        self.list.insertItem(0, item)
        if select:
            self.list.clearSelection()
            self.list.setCurrentItem(item)

    def _entry(self, item: QListWidgetItem) -> RunEntry | None:
        number = item.data(Qt.ItemDataRole.UserRole)
        return next((e for e in self.entries if e.number == number), None)

    def selected(self) -> list[RunEntry]:
        found = [self._entry(i) for i in self.list.selectedItems()]
        return sorted((e for e in found if e is not None), key=lambda e: e.number)

    def select(self, *numbers: int) -> None:
        self.list.clearSelection()
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(Qt.ItemDataRole.UserRole) in numbers:
                item.setSelected(True)

    def _on_selection(self) -> None:
        chosen = self.selected()
        self.compare_button.setEnabled(len(chosen) == 2)
        if len(chosen) == 1:
            self.show_requested.emit(chosen[0])

    def _compare(self) -> None:
        chosen = self.selected()
        if len(chosen) == 2:
            self.compare_requested.emit(chosen[0], chosen[1])

    def clear(self) -> None:
        self.entries.clear()
        self.list.clear()
