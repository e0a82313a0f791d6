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

pytestmark = pytest.mark.gui


def _open(qtbot, window, paths):
    with qtbot.waitSignal(window.browser.loading_finished, timeout=30000):
        window.open_paths(paths)


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
def test_run_is_disabled_with_the_reason_when_an_unreadable_file_is_selected(qtbot, window, tmp_path, ultrasound_file):
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


def test_a_group_row_is_not_a_study_either(qtbot, window, ultrasound_file):
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
    def on_window(dock) -> bool:
        return window_rect.contains(QRect(dock.mapTo(w, dock.rect().topLeft()), dock.size()))

    for dock in (w.browser_dock, w.attack_dock, w.monitor_dock, w.history_dock):
        # a tabbed dock is reachable through its tab: the group's raised dock is on the window
        shown = dock if on_window(dock) else next((d for d in w.tabifiedDockWidgets(dock) if on_window(d)), None)
        assert shown is not None, dock.windowTitle()
        assert shown.width() >= 150 and shown.height() >= 100, (dock.windowTitle(), shown.size())
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


# -- item 7: every run is audited ------------------------------------------------------------------
def _audit_records():
    import json

    from p2p_desktop.audit import default_log_path

    path = default_log_path()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_gui_runs_finished_and_cancelled_are_audited_like_cli_runs(qtbot, window, ultrasound_file, run_attack):
    from p2p_desktop.audit import default_log_path, verify_log
    from p2p_desktop.hashing import sha256_file
    from p2p_desktop.jobs.audit import run_record

    _open(qtbot, window, [ultrasound_file()])
    qtbot.waitUntil(lambda: window.current_study is not None, timeout=5000)
    before = len(_audit_records())
    entry = run_attack("fgsm", eps=0.02)
    records = _audit_records()[before:]
    assert [r["event"] for r in records] == ["attack"]
    data = records[0]["data"]
    # the same record the CLI appends (one builder: jobs.audit.run_record), with the run's real values
    cli_shape = run_record("attack", entry.result, entry.study, [], input_sha256="x")
    assert set(cli_shape) <= set(data)
    assert data["command"] == "gui-run" and data["status"] == "finished"
    assert data["input"] == str(ultrasound_file()) and data["input_sha256"] == sha256_file(ultrasound_file())
    assert data["attack"] == "fgsm" and data["config"]["eps"] == 0.02
    assert data["classifier"]["sha256"] == entry.result.classifier["sha256"] and data["success"] == entry.result.success

    # a cancelled run leaves a record too
    window.panel.set_attack("pgd")
    window.panel.set_params(steps=10000, alpha=0.001, eps=0.05)
    window.runner.progress.connect(lambda _e: window.cancel_run())
    with qtbot.waitSignals([window.runner.cancelled, window.runner.finished], timeout=60000):
        assert window.run_attack()
    records = _audit_records()[before:]
    assert len(records) == 2 and records[1]["data"]["status"] == "cancelled"
    assert records[1]["data"]["attack"] == "pgd" and records[1]["data"]["outputs"] == []
    assert verify_log(default_log_path()).ok


def test_evaluate_runs_are_audited(tmp_path, classifier_name, monkeypatch, make_busi_folder):
    from p2p_desktop.audit import default_log_path, verify_log
    from p2p_desktop.hashing import sha256_file
    from p2p_desktop.jobs.evaluate import evaluate

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    root = make_busi_folder(tmp_path / "busi")
    before = len(_audit_records())
    result = evaluate(root, ["fgsm"], [classifier_name], tmp_path / "eval", limit=1, device="cpu")
    records = _audit_records()[before:]
    assert [r["event"] for r in records] == ["evaluate"]
    data = records[0]["data"]
    assert data["command"] == "evaluate" and data["dataset"] == str(root) and data["fingerprint"] == result.fingerprint
    assert {o["path"] for o in data["outputs"]} == {o["path"] for o in result.outputs}
    for o in data["outputs"]:
        assert sha256_file(o["path"]) == o["sha256"]
    assert verify_log(default_log_path()).ok


# -- item 12: closing during a run -------------------------------------------------------------------
def test_closing_during_a_run_closes_at_once_and_cancels_within_one_iteration(qtbot, window, ultrasound_file):
    _open(qtbot, window, [ultrasound_file()])
    window.panel.set_attack("pgd")
    window.panel.set_params(steps=10000, alpha=0.001, eps=0.05)
    steps: list[int] = []
    window.runner.progress.connect(lambda e: steps.append(e.step))
    window.ask_before_close = True
    window.confirm_close = lambda: True
    with qtbot.waitSignal(window.runner.progress, timeout=30000):
        assert window.run_attack()
    with qtbot.waitSignals([window.runner.cancelled, window.runner.finished], timeout=30000):
        t0 = time.perf_counter()
        closed = window.close()
        took = time.perf_counter() - t0
        at_close = len(steps)
        assert closed and not window.isVisible(), "the window must close at once"
        assert took < 1.0, f"close() took {took:.2f} s"
    assert len(steps) - at_close <= 1, f"{len(steps) - at_close} steps ran after the close"
    assert window.history.entries == []


# -- item 5: the heatmap's scale can be read ----------------------------------------------------------
def _fit_1280(window):
    from PySide6.QtCore import QRect

    from p2p_desktop.gui.main_window import fitted_geometry

    window.setGeometry(fitted_geometry(QRect(0, 0, 1280, 800), None, window.minimumSizeHint()))
    window._default_dock_sizes()


def test_heatmap_scale_fits_states_units_and_matches_the_overlay(qtbot, window, ultrasound_file, run_attack):
    from PySide6.QtCore import QRectF

    from p2p_desktop.export.report import DELTA_UNITS

    _fit_1280(window)
    _open(qtbot, window, [ultrasound_file()])
    entry = run_attack("fgsm", eps=0.03)
    assert entry is not None
    view = window.results
    qtbot.wait(200)
    pane, bar = view.heatmap_pane, view.colorbar
    # the colour bar's numbers lie inside the pane and have the room they need
    pane_rect = QRectF(0, 0, pane.viewport().width(), pane.viewport().height())
    axis_rect = pane.mapFromScene(bar.axis.sceneBoundingRect()).boundingRect()
    assert 0 <= axis_rect.left() and axis_rect.right() <= pane_rect.width(), (axis_rect, pane_rect)
    bar.axis.picture = None
    pane.grab()  # draw: the axis measures its tick labels
    assert bar.axis.textWidth + bar.axis.style["tickTextOffset"][0] <= bar.axis.width(), "tick labels clipped"
    assert bar.axis.autoSIPrefixScale == 1.0
    # δ's units, and the mode named in the title and the label
    left = bar.getAxis("left").labelText
    assert DELTA_UNITS in left and left.startswith("δ")
    assert DELTA_UNITS in view.mode_combo.toolTip()
    view.set_mode("absolute")
    assert "|δ|" in pane.title_label.text and bar.getAxis("left").labelText.startswith("|δ|")
    view.set_mode("signed")
    assert "|δ|" not in pane.title_label.text
    # amplify + overlay: strong pixels are drawn in the colour bar's own colours
    view.amp_spin.setValue(4.0)
    view.overlay_check.setChecked(True)
    assert view.heat_overlay_item.isVisible() and view.heatmap_item.opacity() == 1.0
    rgba = view.heat_overlay_item.image
    values = view.perturbation.map("signed")
    lo, hi = view.heatmap_levels()
    strong = np.abs(values) >= (1 - view.opacity_slider.value() / 100) * hi
    assert strong.any()
    expected = bar.colorMap().map(np.clip((values[strong] - lo) / (hi - lo), 0, 1), mode="byte")
    assert np.array_equal(rgba[strong][:, :3], expected[:, :3])
    assert (rgba[strong][:, 3] == 255).all()
    assert rgba[values == 0][:, 3].max(initial=0) == 0  # no change: the image shows through


# -- item 10 and the verdict colour: the hover readout --------------------------------------------
def test_hover_readout_starts_fresh_per_run_without_moving_the_layout(qtbot, window, ultrasound_file, run_attack):
    from p2p_desktop.export.report import FAILURE_COLOUR, SUCCESS_COLOUR

    _open(qtbot, window, [ultrasound_file()])
    first = run_attack("fgsm", eps=0.02)
    view = window.results
    qtbot.wait(100)
    height, top = view.stats_box.height(), view.chart.mapTo(window, view.chart.rect().topLeft()).y()
    view._on_hover(10, 20)
    assert "x 20, y 10" in view.readout.text() and "δ" in view.readout.text()
    qtbot.wait(50)
    assert view.stats_box.height() == height
    assert view.chart.mapTo(window, view.chart.rect().topLeft()).y() == top, "the layout moved"
    colour = SUCCESS_COLOUR if first.result.success else FAILURE_COLOUR
    assert colour in view.verdict.text()  # (the header line: elided title, then the verdict)
    run_attack("fgsm", eps=0.04)
    assert "x 20, y 10" not in view.readout.text()


# -- item 8: opening files -------------------------------------------------------------------------
def test_opened_files_are_announced_selected_and_only_readable_ones_go_to_recent(qtbot, window, tmp_path,
                                                                                 ultrasound_file):
    from PIL import Image

    bad = tmp_path / "scan_0001.dcm"
    bad.write_bytes(b"\x00" * 200)
    _open(qtbot, window, [ultrasound_file()])
    qtbot.waitUntil(lambda: window.current_study is not None, timeout=5000)
    first = window.current_study.path
    second = tmp_path / "phantom.png"
    Image.fromarray((np.random.default_rng(0).random((64, 80)) * 255).astype(np.uint8)).save(second)
    _open(qtbot, window, [bad, second])
    # the new study is selected (not the earlier one), shown and scrolled into view
    qtbot.waitUntil(lambda: window.current_study is not None and window.current_study.path == second, timeout=5000)
    assert window.current_study.path != first
    node = window.browser.tree.currentItem()
    assert window.browser.tree.visualItemRect(node).intersects(window.browser.tree.viewport().rect())
    # announced, with the unreadable file and its reason in full
    assert "Opened phantom.png" in window.last_open_message and "1 file could not be opened" in \
        window.last_open_message
    assert window.status_label.text() == window.last_open_message
    reason = window.browser.unreadable[bad.resolve()].reason
    assert window.last_open_dialog is not None and reason in window.last_open_dialog.informativeText()
    window.last_open_dialog.close()
    # only paths that gave a study are remembered
    recent = window.settings.recent_paths
    assert str(second) in recent and str(ultrasound_file()) in recent and str(bad) not in recent
    # the reason in full in the attributes table, and "1 file" on its group
    window.browser.tree.setCurrentItem(_unreadable_node(window, bad.name))
    cells = {window.browser.attributes.item(r, 0).text(): window.browser.attributes.item(r, 1).text()
             for r in range(window.browser.attributes.rowCount())}
    assert cells.get("Cannot be opened") == reason
    group = _unreadable_node(window, bad.name).parent()
    assert group.text(1) == "1 file"


def test_export_folder_dialog_title_and_plot_keys(qtbot, window, monkeypatch, ultrasound_file, run_attack):
    from PySide6.QtWidgets import QFileDialog

    _open(qtbot, window, [ultrasound_file()])
    run_attack("fgsm", eps=0.02)
    titles = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: titles.append(a[1]) or ""))
    assert window.export_png() is False and window.export_dicom(deidentify=False) is False
    assert titles == ["Export PNG to folder", "Export DICOM to folder"]
    # class keys are in the plot titles; no legend box sits over the curves or bars
    for plot in (window.monitor.prob_plot, window.results.chart):
        assert plot.plotItem.legend is None
    title = window.monitor.prob_plot.plotItem.titleLabel.text
    assert all(c in title for c in ("benign", "malignant", "normal"))
    assert "before" in window.results.chart.plotItem.titleLabel.text


def test_a_cancelled_batch_evaluation_is_audited(qtbot, window, tmp_path, classifier_name, monkeypatch,
                                                 make_busi_folder):
    from PySide6.QtCore import Qt

    batch = window.batch
    if not batch.available:
        pytest.skip("this build has no evaluate")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    root = make_busi_folder(tmp_path / "busi")
    batch.dataset_edit.setText(str(root))
    batch.out_edit.setText(str(tmp_path / "eval"))
    for lst, wanted in ((batch.attack_list, {"pgd"}), (batch.classifier_list, {classifier_name})):
        for i in range(lst.count()):
            state = Qt.CheckState.Checked if lst.item(i).text() in wanted else Qt.CheckState.Unchecked
            lst.item(i).setCheckState(state)
    before = len(_audit_records())
    batch.runner.progress.connect(lambda _e: batch.runner.cancel())
    with qtbot.waitSignals([batch.runner.cancelled, batch.runner.finished], timeout=120000):
        assert batch.start()
    records = _audit_records()[before:]
    assert [r["event"] for r in records] == ["evaluate"]
    data = records[0]["data"]
    assert data["status"] == "cancelled" and data["command"] == "gui-evaluate" and data["dataset"] == str(root)
    assert data["attacks"] == ["pgd"] and data["classifiers"] == [classifier_name]
