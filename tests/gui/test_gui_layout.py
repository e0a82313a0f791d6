"""Issue 27, "the images are the point": at 1280 × 800 the results' three views take most of the
window, each image is drawn fitted (refitted on resize and on every run), Fit / 1:1 / double-click
work, the run's details sit in a dock the user can move or close, long (PACS UID) names elide
and never widen the window, a restored layout is clamped, and ``p2p-desktop FILE`` opens it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QRectF, Qt

from p2p_desktop.paths import samples_dir

pytestmark = pytest.mark.gui

UID_NAME = "1.2.826.0.1.3680043.8.498.1234567890123456789012345678901234.dcm"


def drawn_width(pane) -> float:
    """The image's width on screen, in device pixels, from the ViewBox mapping (the visible part)."""
    h, w = pane.image_shape
    rect = pane.view.mapViewToScene(QRectF(0, 0, w, h)).boundingRect()
    return rect.intersected(pane.view.sceneBoundingRect()).width()


@pytest.fixture
def uid_study(tmp_path):
    src = samples_dir() / "dicom" / "malignant" / "malignant_9000001.dcm"
    (tmp_path / "pacs").mkdir()
    dst = tmp_path / "pacs" / UID_NAME
    shutil.copy(src, dst)
    import pydicom

    ds = pydicom.dcmread(dst)
    ds.BurnedInAnnotation = "YES"  # as many ultrasound studies from a PACS: pixels carry text
    ds.save_as(dst)
    return dst


def _at_1280x800(qtbot, window):
    window.resize(1280, 800)
    window._default_dock_sizes()
    qtbot.wait(100)


def test_results_images_dominate_a_1280x800_window_and_refit(qtbot, window, open_study, run_attack, uid_study):
    _at_1280x800(qtbot, window)
    open_study([uid_study])
    run_attack("fgsm", eps=0.03)
    qtbot.wait(200)
    res = window.results
    panes = (res.original_pane, res.adversarial_pane, res.heatmap_pane)
    # the window still fits a 1280 x 800 screen after the long name reached the header
    assert window.minimumSizeHint().width() <= 1280 and window.minimumSize().width() <= 1280
    assert window.width() <= 1280
    # the three views take at least half of the window
    area = sum(p.width() * p.height() for p in panes)
    assert area >= 0.5 * window.width() * window.height(), [p.size() for p in panes]
    for pane in panes[:2]:
        assert drawn_width(pane) >= 200, drawn_width(pane)
    # the header elides the long name, and its tooltip has it all
    assert UID_NAME in res.header.toolTip()
    # the live plots keep a readable size in the panel column (one at a time when it is narrow)
    for plot in (window.monitor.loss_plot, window.monitor.prob_plot):
        window.monitor.plot_tabs.setCurrentWidget(plot) if window.monitor.plot_tabs.isVisible() else None
        qtbot.wait(20)
        assert plot.width() >= 250 and plot.height() >= 140, plot.size()
    # refitted on resize: smaller window, the whole image is still shown, then larger again
    window.resize(1024, 700)
    qtbot.wait(150)
    small = drawn_width(res.original_pane)
    h, w = res.original_pane.image_shape
    vr = res.original_pane.view.viewRange()
    assert vr[0][0] <= 0.5 and vr[0][1] >= w - 0.5 and vr[1][0] <= 0.5 and vr[1][1] >= h - 0.5, vr
    window.resize(1280, 800)
    qtbot.wait(150)
    assert drawn_width(res.original_pane) > small


def test_fit_one_to_one_and_double_click(qtbot, window, open_study, run_attack, uid_study):
    _at_1280x800(qtbot, window)
    open_study([uid_study])
    run_attack("fgsm", eps=0.03)
    res = window.results
    pane = res.original_pane
    res.one_to_one_button.click()
    qtbot.wait(50)
    assert drawn_width(pane) == pytest.approx(min(256, pane.view.sceneBoundingRect().width()), abs=2)
    assert drawn_width(res.adversarial_pane) == pytest.approx(drawn_width(pane), abs=2)
    pane.view.scaleBy((0.3, 0.3))  # zoom in: only part of the image shows
    qtbot.wait(50)
    res.fit_button.click()
    qtbot.wait(50)
    fitted = drawn_width(pane)
    assert fitted >= 200
    pane.view.scaleBy((0.3, 0.3))
    centre = pane.mapFromScene(pane.view.sceneBoundingRect().center())
    qtbot.mouseDClick(pane.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    qtbot.wait(50)
    assert drawn_width(pane) == pytest.approx(fitted, abs=2)
    # the viewer has them too
    window.tabs.setCurrentWidget(window.viewer)
    window.viewer.one_to_one_button.click()
    qtbot.wait(50)
    assert drawn_width(window.viewer.pane) == pytest.approx(256, abs=2)


def test_run_details_are_a_dock_that_can_be_moved_or_closed(qtbot, window, open_study, run_attack, uid_study):
    open_study([uid_study])
    run_attack("fgsm", eps=0.03)
    dock = window.details_dock
    assert dock.widget().isAncestorOf(window.results.chart)
    assert dock.widget().isAncestorOf(window.results.metrics)
    assert dock.widget().isAncestorOf(window.results.notes)
    assert not window.results.isAncestorOf(window.results.chart)
    assert dock.features() & dock.DockWidgetFeature.DockWidgetMovable
    assert dock.features() & dock.DockWidgetFeature.DockWidgetClosable
    assert dock.toggleViewAction() in window.view_menu.actions()


def test_long_names_never_widen_the_window(qtbot, window, open_study, uid_study):
    _at_1280x800(qtbot, window)
    open_study([uid_study])
    qtbot.wait(100)
    assert window.minimumSizeHint().width() <= 1280
    assert window.viewer.pane.title_label.minimumWidth() == 0


def test_restored_layout_is_clamped_and_keeps_the_studies_dock_readable(qtbot, settings, classifier_name,
                                                                         no_thread_leak):
    from PySide6.QtCore import QByteArray

    from p2p_desktop.gui.main_window import MainWindow

    w = MainWindow(settings, load_demo=False)
    qtbot.addWidget(w)
    w.ask_before_close = False
    w.show()
    w.resizeDocks([w.browser_dock], [20], Qt.Orientation.Horizontal)  # squeezed to "#1" labels
    qtbot.wait(50)
    settings.save_window_state(w.saveGeometry(), w.saveState())
    w.close()
    geometry = QByteArray(w.saveGeometry())
    settings.save_window_state(geometry, settings.window_state()[1])
    w2 = MainWindow(settings, load_demo=False)
    qtbot.addWidget(w2)
    w2.ask_before_close = False
    w2.show()
    qtbot.wait(100)
    assert w2.browser_dock.width() >= 180
    avail = w2.screen().availableGeometry()  # (offscreen: 800 × 800, less than the window's minimum)
    assert w2.frameGeometry().width() <= max(avail.width(), w2.minimumSizeHint().width() + 16)
    assert w2.minimumSizeHint().width() <= 1024
    w2.close()


def test_command_line_paths_open_the_app_with_those_studies(monkeypatch, uid_study, tmp_path):
    from p2p_desktop.cli import main as cli
    from p2p_desktop.gui import app

    seen = {}
    monkeypatch.setattr(app, "run_app", lambda **kw: seen.update(kw) or 0)
    assert cli.main([str(uid_study), str(tmp_path)]) == 0
    assert [Path(p) for p in seen["paths"]] == [uid_study, tmp_path]
    seen.clear()
    assert cli.main([]) == 0 and not seen["paths"]
    # sub-commands still work, and a path that does not exist is refused in one line
    with pytest.raises(SystemExit) as exc:
        cli.main(["models", "--help"])
    assert exc.value.code == 0
    with pytest.raises(SystemExit) as exc:
        cli.main([str(tmp_path / "absent.dcm")])
    assert exc.value.code == 2
    desktop = Path(__file__).resolve().parents[2] / "packaging" / "linux" / "p2p-desktop.desktop"
    assert "Exec=p2p-desktop %F" in desktop.read_text()


def test_the_window_opens_command_line_paths_and_selects_the_first(qtbot, settings, classifier_name, uid_study,
                                                                    no_thread_leak):
    from p2p_desktop.gui.main_window import MainWindow

    w = MainWindow(settings, load_demo=False, paths=[uid_study])
    qtbot.addWidget(w)
    w.ask_before_close = False
    w.show()
    qtbot.waitUntil(lambda: w.current_study is not None, timeout=30000)
    assert w.current_study.path == uid_study
    assert w.shutdown(30000)


def test_batch_notes_leave_the_lists_and_columns_are_titled(qtbot, window):
    from p2p_desktop.gui.batch import column_title

    batch = window.batch
    assert column_title("attack_success_rate") == "Attack success rate"
    assert column_title("ssim").startswith("SSIM")
    assert column_title("mean_l2") == "Mean L2"
    batch.status.setText("\n".join(f"• note {i}: " + "a long note " * 10 for i in range(30)))
    window.tabs.setCurrentWidget(batch)
    window.resize(1280, 800)
    qtbot.wait(100)
    assert batch.attack_list.height() >= 60 and batch.classifier_list.height() >= 60


def test_deidentify_warning_is_shown_where_it_can_be_read(qtbot, window, open_study, run_attack, uid_study,
                                                          tmp_path):
    _at_1280x800(qtbot, window)
    open_study([uid_study])
    run_attack("fgsm", eps=0.03)
    with qtbot.waitSignal(window.export_runner.finished, timeout=60000):
        assert window.export_dicom(str(tmp_path / "out"), deidentify=True)
    banner = window.warning_banner
    assert banner.isVisible() and "NOT cleaned" in banner.text() and banner.wordWrap()
    assert banner.width() < window.width()  # wrapped inside the window, not cut at its edge
    window.warning_close.click()
    assert not banner.isVisible()


def test_compare_chart_labels_do_not_run_together(qtbot):
    from p2p_desktop.gui.results import ProbabilityChart

    chart = ProbabilityChart()
    qtbot.addWidget(chart)
    chart.resize(160, 200)
    chart.show()
    chart.set_probs(["benign", "malignant", "normal"], {"benign": 0.2}, {"malignant": 0.7})
    qtbot.wait(50)
    labels = [t for _pos, t in chart.getAxis("bottom")._tickLevels[0]]
    from PySide6.QtGui import QFontMetrics

    fm = QFontMetrics(chart.getAxis("bottom").style.get("tickFont") or chart.font())
    per_class = chart.getPlotItem().vb.width() / 3
    assert all(fm.horizontalAdvance(t) < per_class for t in labels), (labels, per_class)
    assert "benign" in chart.getAxis("bottom").toolTip()


def test_reset_layout_and_the_image_context_menu(qtbot, window):
    _at_1280x800(qtbot, window)
    window.details_dock.setFloating(True)
    window.browser_dock.hide()
    window.reset_layout()
    qtbot.wait(100)
    assert not window.details_dock.isFloating() and window.browser_dock.isVisible()
    assert window.height() <= 800 and window.width() <= 1280
    texts = [a.text() for a in window.results.original_pane.actions()]
    assert any(t.startswith("Fit") for t in texts) and any(t.startswith("1:1") for t in texts)
