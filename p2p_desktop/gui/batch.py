"""Batch view: run the core's ``evaluate`` on a dataset folder, with progress, and show its table.

The evaluation itself is :func:`p2p_desktop.jobs.evaluate.evaluate` (the same code as
``p2p-desktop evaluate``); this view only collects the arguments, runs it on a worker thread
and shows the rows it returns. Without that module the view stays disabled and says why.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from p2p_desktop.errors import InputError
from p2p_desktop.gui.forms import wheel_needs_focus
from p2p_desktop.gui.worker import JobRunner

__all__ = ["BatchView", "evaluate_function", "result_rows"]


def evaluate_function():
    """``p2p_desktop.jobs.evaluate.evaluate`` when this build has it, else None."""
    try:
        module = importlib.import_module("p2p_desktop.jobs.evaluate")
    except ImportError:
        return None
    return getattr(module, "evaluate", None)


def result_rows(result: Any, table: str = "summary") -> list[dict[str, Any]]:
    """Rows of an :class:`~p2p_desktop.jobs.evaluate.EvaluationResult`: ``summary`` or per-image ``rows``."""
    if result is None:
        return []
    value = getattr(result, table, None)
    if value is None and isinstance(result, dict):
        value = result.get(table)
    return [dict(v) for v in value or ()]


#: The widest a results column starts (a long file name is cut; the tooltip has it).
MAX_COLUMN_WIDTH = 220
#: Words shown in capitals in the column titles.
_ACRONYMS = {"ssim": "SSIM", "psnr": "PSNR", "lpips": "LPIPS", "fid": "FID", "asr": "ASR", "l2": "L2",
             "linf": "L∞", "id": "ID", "db": "dB", "sha256": "SHA-256", "p2p": "P2P", "n": "n"}


def column_title(key: str) -> str:
    """A results column's title for people: the metric table's heading (``ssim`` → "SSIM"),
    else the snake_case name in words (``attack_success_rate`` → "Attack success rate")."""
    from p2p_desktop.metrics.table import METRICS

    if key in METRICS:
        return METRICS[key].heading
    words = [w for w in str(key).split("_") if w]
    if not words:
        return str(key)
    shown = [_ACRONYMS.get(w.lower(), w) for w in words]
    if shown[0] == words[0]:
        shown[0] = shown[0][:1].upper() + shown[0][1:]
    return " ".join(shown)


class BatchView(QWidget):
    """Arguments, progress and the resulting table of one batch evaluation."""

    running_changed = Signal(bool)
    error = Signal(str, str)  # message, details

    def __init__(self, settings=None, parent=None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.rows: list[dict[str, Any]] = []
        self.last_result = None
        self.runner = JobRunner(self)

        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText("folder with one sub-folder per class (benign/, malignant/, normal/)")
        dataset_button = QToolButton()
        dataset_button.setText("…")
        dataset_button.clicked.connect(self._browse_dataset)
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("output folder (outside the dataset)")
        out_button = QToolButton()
        out_button.setText("…")
        out_button.clicked.connect(self._browse_out)
        self.attack_list = QListWidget()
        self.classifier_list = QListWidget()
        for lst in (self.attack_list, self.classifier_list):
            lst.setMaximumHeight(96)
            lst.setMinimumHeight(64)  # a finished batch's notes never squeeze them
            lst.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.limit_spin = QSpinBox()
        self.limit_spin.setRange(0, 100000)
        self.limit_spin.setSpecialValueText("all")
        self.limit_spin.setToolTip("Images per class to attack (all: every image)")
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2_147_483_647)
        wheel_needs_focus(self.limit_spin, self.seed_spin)

        def row(edit, button):
            box = QHBoxLayout()
            box.setContentsMargins(0, 0, 0, 0)
            box.addWidget(edit, 1)
            box.addWidget(button)
            w = QWidget()
            w.setLayout(box)
            return w

        form_box = QGroupBox("Batch evaluation")
        form = QFormLayout(form_box)
        form.addRow("Dataset", row(self.dataset_edit, dataset_button))
        form.addRow("Output", row(self.out_edit, out_button))
        lists = QHBoxLayout()
        lists.addWidget(self._titled("Attacks", self.attack_list))
        lists.addWidget(self._titled("Classifiers", self.classifier_list))
        form.addRow(lists)
        form.addRow("Limit", self.limit_spin)
        form.addRow("Seed", self.seed_spin)

        self.run_button = QPushButton("Run evaluation")
        self.run_button.setObjectName("primary")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.runner.cancel)
        self.progress = QProgressBar()
        self.progress.setFormat("idle")
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setObjectName("muted")
        self.status.setWordWrap(True)
        self.status.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # the notes scroll in a few lines of their own, whatever their number
        self.status_scroll = QScrollArea()
        self.status_scroll.setWidgetResizable(True)
        self.status_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.status_scroll.setWidget(self.status)
        self.status_scroll.setMaximumHeight(5 * self.status.fontMetrics().lineSpacing() + 8)
        self.status_scroll.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.progress, 1)

        self.table_combo = QComboBox()
        self.table_combo.addItem("Summary (per classifier × attack)", "summary")
        self.table_combo.addItem("Per image", "rows")
        self.table_combo.currentIndexChanged.connect(self._show_table)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setTabKeyNavigation(False)  # Tab leaves the table
        self.table.setAlternatingRowColors(True)
        self.table.setSortingEnabled(True)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(form_box)
        layout.addLayout(buttons)
        layout.addWidget(self.status_scroll)
        layout.addWidget(self.table_combo)
        layout.addWidget(self.table, 1)

        self.runner.progress.connect(self._on_progress)
        self.runner.status.connect(self.status.setText)
        self.runner.succeeded.connect(self._on_done)
        self.runner.failed.connect(self._on_failed)
        self.runner.cancelled.connect(lambda: self.status.setText(
            "Evaluation cancelled; the finished results are kept: run it again to resume."))
        self.runner.finished.connect(self._on_finished)
        self.refresh()

    @staticmethod
    def _titled(title: str, widget: QWidget) -> QWidget:
        w = QWidget()
        box = QVBoxLayout(w)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(QLabel(title))
        box.addWidget(widget)
        return w

    # -- population --------------------------------------------------------------------------
    def refresh(self) -> None:
        from p2p_desktop.attacks.registry import available
        from p2p_desktop.models import registry

        def fill(lst: QListWidget, names, checked):
            lst.clear()
            for name in names:
                item = QListWidgetItem(name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if name in checked else Qt.CheckState.Unchecked)
                lst.addItem(item)

        fill(self.attack_list, [s.name for s in available()], {"fgsm", "pgd"})
        names = registry.names("classifier")
        names += [p for p in (self.settings.model_paths if self.settings is not None else []) if p not in names]
        default = self.settings.classifier if self.settings is not None and self.settings.classifier in names \
            else (names[0] if names else "")
        fill(self.classifier_list, names, {default})
        self.available = evaluate_function() is not None
        reason = ("" if self.available else
                  "Batch evaluation is not available in this build: the module p2p_desktop.jobs.evaluate is missing")
        self.run_button.setEnabled(self.available and not self.runner.is_running())
        self.run_button.setToolTip(reason or "Attack every image of the dataset with each attack and classifier")
        self.setToolTip(reason)
        if reason:
            self.status.setText(reason)

    @staticmethod
    def _checked(lst: QListWidget) -> list[str]:
        return [lst.item(i).text() for i in range(lst.count())
                if lst.item(i).checkState() == Qt.CheckState.Checked]

    def _browse_dataset(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Dataset folder (one sub-folder per class)")
        if path:
            self.dataset_edit.setText(path)

    def _browse_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder")
        if path:
            self.out_edit.setText(path)

    # -- running -----------------------------------------------------------------------------
    def arguments(self) -> dict[str, Any]:
        """The evaluate() arguments from the form (raises InputError when incomplete)."""
        dataset = self.dataset_edit.text().strip()
        out = self.out_edit.text().strip()
        attacks, classifiers = self._checked(self.attack_list), self._checked(self.classifier_list)
        if not dataset:
            raise InputError("choose a dataset folder")
        if not Path(dataset).is_dir():
            raise InputError(f"dataset folder {dataset} does not exist")
        if not out:
            raise InputError("choose an output folder")
        if not attacks:
            raise InputError("tick at least one attack")
        if not classifiers:
            raise InputError("tick at least one classifier")
        from p2p_desktop.attacks.registry import spec

        args: dict[str, Any] = {"dataset_dir": Path(dataset), "attacks": attacks, "classifiers": classifiers,
                                "out_dir": Path(out), "seed": self.seed_spin.value(),
                                "limit": self.limit_spin.value() or None,
                                "device": self.settings.device if self.settings is not None else "auto"}
        if any(spec(a).requires_backbone for a in attacks):
            args["backbone"] = (self.settings.backbone if self.settings is not None else "") or "demo"
        if "p2p" in attacks:  # the GUI stays on P2P's fast preset (evaluate defaults to paper: 500 iterations)
            args["preset"] = {"p2p": "fast"}
        return args

    def start(self) -> bool:
        fn = evaluate_function()
        if fn is None or self.runner.is_running():
            return False
        try:
            args = self.arguments()
        except InputError as exc:
            self.status.setText(str(exc))
            return False

        def job(report, status, cancel):
            from p2p_desktop.device import resolve_device

            args["device"] = resolve_device(args["device"])
            status(f"evaluating {', '.join(args['attacks'])} × {', '.join(args['classifiers'])} "
                   f"on {args['device']}…")
            # the evaluation audits itself: finished, cancelled or failed (as "gui-evaluate")
            return fn(**args, on_progress=report, cancel=cancel, command="gui-evaluate")

        self.rows = []
        self.progress.setRange(0, 0)
        self.progress.setFormat("starting…")
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.running_changed.emit(True)
        self.runner.start(job, title="evaluate")
        return True

    def _on_progress(self, event) -> None:
        """A :class:`~p2p_desktop.progress.Progress` of the evaluation: ``step`` of ``total`` jobs."""
        from p2p_desktop.gui.monitor import format_duration

        self.progress.setRange(0, max(event.total, 1))
        self.progress.setValue(event.step)
        self.progress.setFormat(f"{event.step} / {event.total} jobs")
        eta = event.eta
        eta_text = f" · ETA {format_duration(eta)}" if eta is not None else ""
        self.status.setText(f"{event.message}{eta_text}")

    def _on_done(self, result) -> None:
        self.last_result = result
        self._show_table()
        notes = list(getattr(result, "notes", []) or [])
        out = getattr(result, "out_dir", "")
        self.status.setText(f"Evaluation finished: {len(result_rows(result, 'rows'))} results, tables in {out}"
                            + ("".join(f"\n• {n}" for n in notes)))

    def _show_table(self, *_args) -> None:
        self.show_rows(result_rows(self.last_result, self.table_combo.currentData()))

    def _on_failed(self, message: str, details: str) -> None:
        self.status.setText(f"Evaluation failed: {message}")
        self.error.emit(message, details)

    def _on_finished(self) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if self.rows else 0)
        self.progress.setFormat("done" if self.rows else "idle")
        self.cancel_button.setEnabled(False)
        self.run_button.setEnabled(self.available)
        self.running_changed.emit(False)

    def show_rows(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        self.table.setSortingEnabled(False)
        self.table.clear()
        self.table.setColumnCount(len(columns))
        self.table.setRowCount(len(rows))
        self.table.setHorizontalHeaderLabels([column_title(c) for c in columns])
        for j, c in enumerate(columns):
            self.table.horizontalHeaderItem(j).setToolTip(c)  # the CSV's column name
        for i, r in enumerate(rows):
            for j, c in enumerate(columns):
                v = r.get(c)
                item = QTableWidgetItem()
                if isinstance(v, float):
                    item.setData(Qt.ItemDataRole.DisplayRole, round(v, 4))
                elif isinstance(v, int) and not isinstance(v, bool):
                    item.setData(Qt.ItemDataRole.DisplayRole, v)
                else:
                    item.setText("" if v is None else str(v))
                self.table.setItem(i, j, item)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()
        for j in range(len(columns)):  # no column wider than a long title needs: less scrolling
            self.table.setColumnWidth(j, min(self.table.columnWidth(j), MAX_COLUMN_WIDTH))

