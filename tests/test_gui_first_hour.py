"""A new user's first hour with the window (offscreen): Run acts on what is selected, the
window fits a 1280 x 800 screen, opened files are announced and selected, the heatmap's
scale reads, the hover readout, the panel's wording, and closing during a run."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.gui_helpers import (  # noqa: E402,F401
    classifier_name,
    make_busi_folder,
    no_thread_leak,
    settings,
    ultrasound_file,
    window,
)

pytestmark = pytest.mark.gui


def _open(qtbot, window, paths):
    with qtbot.waitSignal(window.browser.loading_finished, timeout=30000):
        window.open_paths(paths)


def _run(qtbot, window, attack="fgsm", timeout=60000, **params):
    window.panel.set_attack(attack)
    window.panel.set_params(**params)
    with qtbot.waitSignal(window.runner.finished, timeout=timeout):
        assert window.run_attack()
    return window.current_entry()


def _unreadable_node(window, name):
    from p2p_desktop.gui.browser import UNREADABLE_ROLE

    it = window.browser.tree.invisibleRootItem()
    stack = [it.child(i) for i in range(it.childCount())]
    while stack:
        node = stack.pop()
        if node.data(0, UNREADABLE_ROLE) and Path(node.data(0, UNREADABLE_ROLE)).name == name:
            return node
        stack += [node.child(i) for i in range(node.childCount())]
    raise AssertionError(f"{name} is not listed as unreadable")


# -- item 3: Run acts on the selection ---------------------------------------------------------------
def test_run_is_disabled_with_the_reason_when_an_unreadable_file_is_selected(qtbot, window, tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"DICM but not really" * 10)
    _open(qtbot, window, [ultrasound_file(), bad])
    qtbot.waitUntil(lambda: window.current_study is not None, timeout=5000)
    assert window.panel.run_button.isEnabled()
    window.browser.tree.setCurrentItem(_unreadable_node(window, "broken.dcm"))
    assert window.current_study is None
    assert not window.panel.run_button.isEnabled() and not window.run_action.isEnabled()
    reason = window.panel.run_error.text()
    assert "broken.dcm" in reason and window.panel.run_error.isVisibleTo(window.panel)
    runs_before = window.runner.is_running()
    assert window.run_attack() is False and not runs_before and not window.runner.is_running()
    assert window.errors and "broken.dcm" in window.errors[-1][1]
    # selecting the readable study again enables Run for it
    assert window.browser.select_path(ultrasound_file())
    assert window.current_study is not None and window.panel.run_button.isEnabled()
    assert not window.panel.run_error.isVisibleTo(window.panel)


def test_a_group_row_is_not_a_study_either(qtbot, window):
    _open(qtbot, window, [ultrasound_file()])
    qtbot.waitUntil(lambda: window.current_study is not None, timeout=5000)
    window.browser.tree.setCurrentItem(window.browser.tree.topLevelItem(0))  # the patient row
    assert window.current_study is None and not window.run_action.isEnabled()
    assert "Select a study" in window.panel.run_error.text()


# -- item 4: fit small screens -------------------------------------------------------------------
def test_fitted_geometry_keeps_the_window_on_the_screen():
    from PySide6.QtCore import QRect, QSize

    from p2p_desktop.gui.main_window import PREFERRED_SIZE, fitted_geometry

    small = QRect(0, 0, 1280, 800)
    g = fitted_geometry(small)
    assert small.contains(g) and g.width() < PREFERRED_SIZE[0] and g.height() < PREFERRED_SIZE[1]
    big = QRect(0, 0, 2560, 1440)
    g = fitted_geometry(big)
    assert (g.width(), g.height()) == PREFERRED_SIZE and big.contains(g)
    # a restored geometry from a bigger screen, partly off this one, is shrunk and moved in
    g = fitted_geometry(small, QRect(900, 600, 1500, 940), QSize(1100, 700))
    assert small.contains(g) and g.width() >= 1100 and g.height() >= 700
    # a second screen to the right (available area offset)
    right = QRect(1280, 0, 1280, 800)
    assert right.contains(fitted_geometry(right, QRect(0, 0, 800, 600)))


def test_every_control_is_reachable_at_1280x800(qtbot, settings, classifier_name, no_thread_leak):
    from PySide6.QtCore import QRect

    from p2p_desktop.gui.main_window import MainWindow, fitted_geometry

    w = MainWindow(settings, load_demo=False)
    qtbot.addWidget(w)
    w.ask_before_close = False
    g = fitted_geometry(QRect(0, 0, 1280, 800), None, w.minimumSizeHint())
    w.setGeometry(g)
    w._default_dock_sizes()
    w.show()
    qtbot.waitExposed(w)
    assert w.width() <= 1280 and w.height() <= 800 - 32
    window_rect = w.rect()
    for dock in (w.browser_dock, w.attack_dock, w.monitor_dock, w.history_dock):
        top_left = dock.mapTo(w, dock.rect().topLeft())
        assert window_rect.contains(QRect(top_left, dock.size())), dock.windowTitle()
        assert dock.width() >= 150 and dock.height() >= 100, (dock.windowTitle(), dock.size())
    for button in (w.panel.run_button, w.panel.cancel_button):
        visible = button.visibleRegion().boundingRect()
        assert visible == button.rect(), f"{button.text()} is clipped: {visible} of {button.rect()}"
    w.close()


def test_restored_geometry_larger_than_the_screen_is_clamped(qtbot, settings, classifier_name, no_thread_leak):
    from p2p_desktop.gui.main_window import MainWindow

    first = MainWindow(settings, load_demo=False)
    qtbot.addWidget(first)
    first.setGeometry(3000, 2000, 2400, 1600)  # e.g. saved on a big second monitor
    settings.save_window_state(first.saveGeometry(), first.saveState())
    first.close()
    w = MainWindow(settings, load_demo=False)
    qtbot.addWidget(w)
    avail = w.screen().availableGeometry()
    g = w.geometry()
    assert g.left() >= avail.left() and g.top() >= avail.top()
    assert g.width() <= max(avail.width(), w.minimumSizeHint().width())
    assert g.height() <= max(avail.height(), w.minimumSizeHint().height())
    w.close()


# -- item 11: wording and one Preset ---------------------------------------------------------------
def test_one_preset_selector_and_no_backbone_row_for_fgsm(qtbot, window):
    from PySide6.QtWidgets import QComboBox, QLabel

    panel = window.panel
    assert panel.set_attack("p2p")
    labels = [lbl.text().rstrip(":").strip().lower() for lbl in panel.findChildren(QLabel) if lbl.isVisibleTo(panel)]
    assert labels.count("preset") == 1, labels
    assert "preset" not in panel.form.rows
    assert panel.backbone_row.isVisibleTo(panel)
    # the config still records which preset its values came from
    panel.preset_combo.setCurrentIndex(panel.preset_combo.findData("paper"))
    assert panel.build_attack().config.preset == "paper"
    steps = panel.form.rows["steps"]
    steps.set_value(7)
    panel.form.changed.emit()
    assert panel.build_attack().config.preset == "custom"
    for name in ("fgsm", "pgd"):
        assert panel.set_attack(name)
        assert not panel.backbone_row.isVisibleTo(panel), name
        assert all(c is not panel.backbone_combo or not c.isVisibleTo(panel)
                   for c in panel.findChildren(QComboBox))


def test_window_title_does_not_repeat_the_app_name(qtbot, window):
    from PySide6.QtWidgets import QApplication

    name = QApplication.applicationDisplayName()
    assert name and name not in window.windowTitle()
