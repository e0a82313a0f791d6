"""A neutral, light look (Fusion style) and the app icon."""

from __future__ import annotations

from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication

from p2p_desktop.paths import resources_dir

__all__ = ["apply_theme", "app_icon", "STYLESHEET"]

ACCENT = "#2f6db5"

STYLESHEET = f"""
QGroupBox {{ font-weight: 600; border: 1px solid #d5d9e0; border-radius: 5px; margin-top: 12px;
            padding: 6px 6px 4px 6px; background: #fbfcfd; }}
QGroupBox::title {{ subcontrol-origin: margin; left: 8px; padding: 0 3px; color: #3a4452; }}
QPushButton {{ padding: 4px 12px; border-radius: 4px; border: 1px solid #b8c0cc; background: #f4f6f9; }}
QPushButton:hover {{ background: #e9edf3; }}
QPushButton:disabled {{ color: #9aa3ae; background: #f1f2f4; border-color: #d7dbe1; }}
QPushButton#primary {{ background: {ACCENT}; color: white; border: 1px solid #245a96; font-weight: 600; }}
QPushButton#primary:hover {{ background: #2862a5; }}
QPushButton#primary:disabled {{ background: #9db4d3; border-color: #9db4d3; color: #eef2f7; }}
QLabel#heading {{ font-size: 10.5pt; color: #1f2933; }}
QLabel#muted {{ color: #5f6b7a; }}
QLabel#readout {{ color: #27313d; font-family: monospace; font-size: 8.5pt; }}
QLabel#placeholder {{ color: #6b7683; font-size: 11pt; padding: 24px; }}
QLabel#notice {{ background: #fff4d6; border: 1px solid #e8c76a; border-radius: 4px; padding: 4px 8px;
                color: #5c4400; }}
QLabel#fieldError {{ color: #b3261e; font-size: 8.5pt; }}
QLineEdit[invalid="true"], QSpinBox[invalid="true"], QComboBox[invalid="true"] {{ border: 1px solid #b3261e; }}
QProgressBar {{ border: 1px solid #c3cad4; border-radius: 4px; text-align: center; background: #f4f6f9;
               min-height: 16px; }}
QProgressBar::chunk {{ background: {ACCENT}; border-radius: 3px; }}
QTabWidget::pane {{ border: 1px solid #d5d9e0; top: -1px; }}
QTabBar::tab {{ padding: 5px 14px; }}
QDockWidget::title {{ padding: 4px; background: #e9edf2; font-weight: 600; }}
QTreeWidget, QTableWidget, QListWidget, QPlainTextEdit {{ border: 1px solid #d5d9e0; }}
"""


def app_icon() -> QIcon:
    """The application icon from the resources (SVG and PNG, whichever are there)."""
    icon = QIcon()
    folder = resources_dir() / "icons"
    for name in ("p2p-desktop.svg", "p2p-desktop.png"):
        path = folder / name
        if path.is_file():
            icon.addFile(str(path))
    return icon


def apply_theme(app: QApplication) -> None:
    """Fusion style, a light neutral palette and a small stylesheet."""
    app.setStyle("Fusion")
    pal = QPalette()
    pal.setColor(QPalette.ColorRole.Window, QColor("#f3f5f8"))
    pal.setColor(QPalette.ColorRole.WindowText, QColor("#1f2933"))
    pal.setColor(QPalette.ColorRole.Base, QColor("#ffffff"))
    pal.setColor(QPalette.ColorRole.AlternateBase, QColor("#f2f4f7"))
    pal.setColor(QPalette.ColorRole.Text, QColor("#1f2933"))
    pal.setColor(QPalette.ColorRole.Button, QColor("#f4f6f9"))
    pal.setColor(QPalette.ColorRole.ButtonText, QColor("#1f2933"))
    pal.setColor(QPalette.ColorRole.Highlight, QColor(ACCENT))
    pal.setColor(QPalette.ColorRole.HighlightedText, QColor("#ffffff"))
    pal.setColor(QPalette.ColorRole.ToolTipBase, QColor("#ffffe8"))
    pal.setColor(QPalette.ColorRole.ToolTipText, QColor("#1f2933"))
    pal.setColor(QPalette.ColorRole.PlaceholderText, QColor("#8a94a3"))
    app.setPalette(pal)
    app.setStyleSheet(STYLESHEET)
    icon = app_icon()
    if not icon.isNull():
        app.setWindowIcon(icon)
