"""Plugins dialog: every discovered plugin with its path, SHA-256 and status.

Plugins are code. Enabling one shows its path and hash and asks once; when its files change,
the app asks again (``MainWindow.review_changed_plugins`` at start-up).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from p2p_desktop import plugins

__all__ = ["PluginsDialog", "approval_text", "ask_to_enable"]

COLUMNS = ("Name", "Kind", "Status", "Source", "Path", "SHA-256", "Error")


def approval_text(info: plugins.PluginInfo) -> str:
    """The question asked before enabling a plugin: what it is, its path and SHA-256."""
    return (f"Plugin “{info.name}” ({info.kind}) runs Python code on this computer.\n\n"
            f"Path: {info.path}\nSHA-256: {info.sha256}\n\n"
            + ("Its files changed since you enabled it.\n\n" if info.status == "changed" else "")
            + "Enable it? You will be asked again if its files change.")


def ask_to_enable(parent, info: plugins.PluginInfo) -> bool:
    """Ask the user (Yes/No, No by default) whether to enable the plugin; True for Yes."""
    answer = QMessageBox.question(parent, "Enable plugin", approval_text(info),
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class PluginsDialog(QDialog):
    """List, enable and disable plugins. ``approve(info) -> bool`` asks the user (tests replace it)."""

    changed = Signal()

    def __init__(self, parent=None, approve=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Plugins")
        self.resize(900, 320)
        self.approve = approve or (lambda info: ask_to_enable(self, info))
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setTabKeyNavigation(False)  # Tab leaves the table
        self.table.horizontalHeader().setStretchLastSection(True)
        self.enable_button = QPushButton("Enable…")
        self.disable_button = QPushButton("Disable")
        self.enable_button.clicked.connect(lambda: self.enable(self.selected_name()))
        self.disable_button.clicked.connect(lambda: self.disable(self.selected_name()))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(self.enable_button)
        row.addWidget(self.disable_button)
        row.addStretch(1)
        row.addWidget(buttons)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Plugins are found in: " + "; ".join(str(d) for d in plugins.plugin_dirs())
                                + " and the ‘p2p_desktop.plugins’ entry points. A plugin is imported only "
                                  "once enabled."))
        layout.addWidget(self.table)
        layout.addLayout(row)
        self.infos: list[plugins.PluginInfo] = []
        self.refresh()

    def refresh(self) -> None:
        self.infos = plugins.discover()
        self.table.setRowCount(len(self.infos))
        for r, info in enumerate(self.infos):
            for c, value in enumerate((info.name, info.kind, info.status, info.source, info.path, info.sha256,
                                       info.error)):
                item = QTableWidgetItem(value)
                item.setToolTip(value)
                if info.status == "broken":
                    item.setForeground(Qt.GlobalColor.darkRed)
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()

    def selected_name(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self.infos[rows[0].row()].name if rows else None

    def status_of(self, name: str) -> str | None:
        return next((i.status for i in self.infos if i.name == name), None)

    def enable(self, name: str | None) -> bool:
        info = next((i for i in self.infos if i.name == name), None)
        if info is None or info.status in ("enabled", "broken"):
            return False
        if not self.approve(info):
            return False
        plugins.enable(info.name)
        self.refresh()
        self.changed.emit()
        return True

    def disable(self, name: str | None) -> None:
        if name:
            plugins.disable(name)
            self.refresh()
            self.changed.emit()
