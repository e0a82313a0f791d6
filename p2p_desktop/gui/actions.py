"""The main window's actions, menus and tool bars.

The export actions come from the export-format table (:data:`p2p_desktop.jobs.formats.FORMATS`):
one per row, in the File menu, the main tool bar and the results tool bar, kept as
``window.export_actions[key]`` (and ``window.export_<key>_action``).
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QStyle

from p2p_desktop.jobs.formats import FORMATS

__all__ = ["make_action", "build_actions"]


def make_action(window, text: str, slot, shortcut=None, icon=None, tip: str = "") -> QAction:
    """A window action calling ``slot()``; ``icon`` a QStyle.StandardPixmap (or its name)."""
    action = QAction(text, window)
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    if isinstance(icon, str):
        icon = getattr(QStyle.StandardPixmap, icon)
    if icon is not None:
        action.setIcon(window.style().standardIcon(icon))
    action.setToolTip(tip or text)
    action.setStatusTip(tip or text)
    action.triggered.connect(lambda _checked=False: slot())
    return action


def build_actions(window) -> None:
    """Create the window's actions and put them in the menus and tool bars."""
    sp = QStyle.StandardPixmap
    act = make_action
    window.open_files_action = act(window, "Open files…", window.open_files_dialog, QKeySequence.StandardKey.Open,
                                   sp.SP_DialogOpenButton, "Open DICOM or image files")
    window.open_folder_action = act(window, "Open folder…", window.open_folder_dialog, "Ctrl+Shift+O",
                                    sp.SP_DirOpenIcon, "Open a folder or a dataset (one folder per class)")
    window.demo_action = act(window, "Load demo sample", window.load_demo, None, sp.SP_FileDialogStart,
                             "Open the bundled demo studies")
    window.run_action = act(window, "Run", window.run_attack, "Ctrl+R", sp.SP_MediaPlay,
                            "Run the attack on the selected study")
    window.cancel_action = act(window, "Cancel", window.cancel_run, "Esc", sp.SP_MediaStop,
                               "Stop the running job within one iteration")
    window.export_actions = {}
    for fmt in FORMATS.values():
        action = act(window, fmt.action_text, lambda key=fmt.key: window.export(key), fmt.shortcut, fmt.icon,
                     fmt.action_tip)
        window.export_actions[fmt.key] = action
        setattr(window, f"export_{fmt.key}_action", action)
    exports = list(window.export_actions.values())
    window.quit_action = act(window, "Quit", window.close, QKeySequence.StandardKey.Quit)

    menus = window.menuBar()
    file_menu = menus.addMenu("&File")
    file_menu.addAction(window.open_files_action)
    file_menu.addAction(window.open_folder_action)
    window.recent_menu = file_menu.addMenu("Open recent")
    window.recent_menu.aboutToShow.connect(window._fill_recent_menu)
    file_menu.addAction(window.demo_action)
    file_menu.addSeparator()
    file_menu.addActions(exports)
    file_menu.addSeparator()
    file_menu.addAction(window.quit_action)
    run_menu = menus.addMenu("&Run")
    run_menu.addAction(window.run_action)
    run_menu.addAction(window.cancel_action)
    view_menu = menus.addMenu("&View")
    window.view_menu = view_menu
    for dock in (window.browser_dock, window.attack_dock, window.details_dock, window.monitor_dock,
                 window.history_dock, window.log_dock):
        view_menu.addAction(dock.toggleViewAction())
    view_menu.addSeparator()
    view_menu.addAction(make_action(window, "Reset layout", window.reset_layout, None, None,
                                    "Back to the first start's panels: one column on the right, the images the rest"))
    tools_menu = menus.addMenu("&Tools")
    tools_menu.addAction(act(window, "Plugins…", window.show_plugins, None, None,
                             "Plugins (attacks, classifiers): path, SHA-256, enable/disable"))
    window.import_weights_action = act(window, "Import metric weights…", window.import_metric_weights, None, None,
                                       "Install the LPIPS (AlexNet) and FID (InceptionV3) weights, checked against "
                                       "their published SHA-256")
    tools_menu.addAction(window.import_weights_action)
    help_menu = menus.addMenu("&Help")
    help_menu.addAction(act(window, "Models…", window.show_models, None, None, "Registered models and their status"))
    help_menu.addAction(act(window, "About", window.show_about))

    bar = window.addToolBar("Main")
    bar.setObjectName("toolbar-main")
    bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    for a in (window.open_files_action, window.open_folder_action, None, window.run_action, window.cancel_action,
              None, *exports):
        bar.addSeparator() if a is None else bar.addAction(a)
    window.results.toolbar.addActions(exports)
