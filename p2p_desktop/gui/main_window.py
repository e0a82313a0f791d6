"""The main window: it assembles the study browser, viewer, attack panel, live run monitor,
results, history, comparison, batch evaluation and the log. Its menus and tool bars are
built by :mod:`p2p_desktop.gui.actions`, its exports run through :mod:`p2p_desktop.gui.exports`
(the export job, one action per row of the export-format table).

Runs go through :class:`~p2p_desktop.gui.worker.JobRunner` with
:func:`~p2p_desktop.gui.worker.attack_job` — the Run button and ``--smoke-test`` use the same
:meth:`MainWindow.run_attack`. A failed run opens a non-blocking error dialog
(``last_error_dialog``) and a log entry; closing during a run asks, cancels and waits.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, QRect, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from p2p_desktop.errors import InputError
from p2p_desktop.gui.actions import build_actions
from p2p_desktop.gui.attack_panel import AttackPanel
from p2p_desktop.gui.batch import BatchView
from p2p_desktop.gui.browser import StudyBrowser
from p2p_desktop.gui.compare import CompareView
from p2p_desktop.gui.elide import ElidedLabel
from p2p_desktop.gui.exports import Exports
from p2p_desktop.gui.history import HistoryPanel, RunEntry
from p2p_desktop.gui.monitor import RunMonitor
from p2p_desktop.gui.results import ResultsView
from p2p_desktop.gui.settings import AppSettings
from p2p_desktop.gui.viewer import ViewerPanel
from p2p_desktop.gui.worker import AttackRequest, JobRunner, ModelCache, attack_job

__all__ = ["MainWindow", "fitted_geometry", "demo_sample_paths", "fallback_sample", "LogPanel"]

log = logging.getLogger("p2p_desktop.gui")

#: Qt adds the application display name ("P2P Desktop") to the title bar itself.
TITLE = "Adversarial robustness of breast-ultrasound classifiers"


def demo_sample_paths() -> list[Path]:
    """The bundled demo studies (resources/samples): its sub-folders (datasets with one folder
    per class, e.g. ``dicom/``, ``busi/``) and loose files, DICOM first."""
    from p2p_desktop.paths import samples_dir

    folder = samples_dir()
    if not folder.is_dir():
        return []
    entries = [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]
    folders = [p for p in entries if p.is_dir()]
    files = [p for p in entries if p.is_file() and p.suffix.lower() in
             (".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")]
    return sorted(folders, key=lambda p: (p.name.lower() != "dicom", p.name)) + \
        sorted(files, key=lambda p: (p.suffix.lower() not in (".dcm", ".dicom"), p.name))


def fallback_sample() -> Path | None:
    """pydicom's own ultrasound example (installed with pydicom, never downloaded)."""
    try:
        from pydicom.data import get_testdata_file

        path = get_testdata_file("examples_rgb_color.dcm", download=False)
    except Exception:  # noqa: BLE001 - optional convenience only
        return None
    return Path(path) if path else None


#: Saved dock layouts carry this; one saved by another layout is not restored.
LAYOUT_VERSION = 2

#: The first window's size when the screen has room for it.
PREFERRED_SIZE = (1500, 940)
#: Room left for the window frame and title bar the window manager adds.
FRAME_MARGIN = (16, 40)


def fitted_geometry(avail: QRect, current: QRect | None = None, minimum: QSize | None = None) -> QRect:
    """The window's client geometry inside ``avail`` (a screen's available geometry): the
    preferred size centred for a first start, or ``current`` (restored) shrunk and moved into
    the screen. Never below ``minimum`` unless the screen itself is smaller."""
    room_w = max(1, avail.width() - FRAME_MARGIN[0])
    room_h = max(1, avail.height() - FRAME_MARGIN[1])
    want_w, want_h = (current.width(), current.height()) if current is not None else PREFERRED_SIZE
    w, h = min(want_w, room_w), min(want_h, room_h)
    if minimum is not None:
        w = max(w, min(minimum.width(), room_w))
        h = max(h, min(minimum.height(), room_h))
    top = avail.top() + FRAME_MARGIN[1] - FRAME_MARGIN[0] // 2
    left = avail.left() + FRAME_MARGIN[0] // 2
    if current is None:
        x = left + (room_w - w) // 2
        y = top + (room_h - h) // 2
    else:
        x = min(max(current.x(), left), left + room_w - w)
        y = min(max(current.y(), top), top + room_h - h)
    return QRect(x, y, w, h)


class _LogBridge(QObject):
    message = Signal(str)


class _QtLogHandler(logging.Handler):
    """Forwards log records (from any thread) to the log panel through a queued signal."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.bridge = _LogBridge()
        self.setFormatter(logging.Formatter("%(asctime)s  %(levelname)-7s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.bridge.message.emit(self.format(record))
        except RuntimeError:  # the panel is gone
            pass


class LogPanel(QPlainTextEdit):
    """Read-only panel that shows the ``p2p_desktop`` log records (INFO and above) as they arrive."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(5000)
        self.handler = _QtLogHandler()
        self.handler.bridge.message.connect(self.appendPlainText)
        self.logger = logging.getLogger("p2p_desktop")
        self.logger.addHandler(self.handler)
        if self.logger.level == logging.NOTSET or self.logger.level > logging.INFO:
            self.logger.setLevel(logging.INFO)

    def detach(self) -> None:
        self.logger.removeHandler(self.handler)


class MainWindow(QMainWindow):
    """The app's one window."""

    run_finished = Signal()  # after every attack job (success, failure or cancel)
    closed = Signal()  # the window was closed (the app quits even if a dialog is still open)

    def __init__(self, settings: AppSettings | None = None, load_demo: bool = True, parent=None,
                 paths=None) -> None:
        super().__init__(parent)
        from p2p_desktop.gui import refguard

        refguard.install()  # (also when the QApplication was made elsewhere, e.g. by a test)
        self.settings = settings if settings is not None else AppSettings.user()
        self.models = ModelCache()
        self.current_study = None
        self._current_item = None
        self.last_error_dialog: QMessageBox | None = None
        self.errors: list[tuple[str, str]] = []
        self.ask_before_close = True
        self._close_pending = False
        self._closed = False
        self._opening: list[Path] = []  # paths being opened (Recent gets those that gave a study)
        self.last_open_message = ""
        self.last_open_dialog: QMessageBox | None = None
        self._run_study = None
        self._run_request: AttackRequest | None = None
        self.setWindowTitle(TITLE)
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)

        # -- widgets
        self.viewer = ViewerPanel()
        self.results = ResultsView()
        self.compare = CompareView()
        self.batch = BatchView(self.settings)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.viewer, "Image")
        self.tabs.addTab(self.results, "Results")
        self.tabs.addTab(self.compare, "Compare")
        self.tabs.addTab(self.batch, "Batch")

        self.browser = StudyBrowser()
        self.panel = AttackPanel(self.settings)
        self.monitor = RunMonitor()
        self.history = HistoryPanel()
        self.log_panel = LogPanel()

        # The images get the window (napari's canvas, 3D Slicer's view layouts): every panel
        # lives in one column on the right, as tabbed docks the user can move, float or close —
        # Attack, Studies and the run's details above; Progress, History and Log below.
        self.panel.setMinimumWidth(280)
        right = Qt.DockWidgetArea.RightDockWidgetArea
        self.attack_dock = self._dock("Attack", self.panel, right)
        self.browser_dock = self._dock("Studies", self.browser, right)
        self.details_dock = self._dock("Run details", self.results.details, right)
        self.monitor_dock = self._dock("Progress", self.monitor, right)
        self.history_dock = self._dock("History", self.history, right)
        self.log_dock = self._dock("Log", self.log_panel, right)
        self._default_dock_layout()
        self.browser.setMinimumWidth(180)

        self.status_label = ElidedLabel("", mode=Qt.TextElideMode.ElideRight)  # never widens the window
        self.statusBar().addWidget(self.status_label, 1)
        # a warning that must be read (e.g. an export whose pixels were NOT cleaned): above the
        # images, wrapped, until dismissed — not a status-bar line cut at the window's edge
        self.warning_banner = QLabel("")
        self.warning_banner.setObjectName("inputWarning")
        self.warning_banner.setWordWrap(True)
        self.warning_banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warning_banner.setStyleSheet("background:#fff4e0;color:#7a4a00;border-left:4px solid #e08a00;"
                                          "padding:4px 8px;")
        self.warning_close = QToolButton()
        self.warning_close.setText("✕")
        self.warning_close.setToolTip("Dismiss the warning")
        self.warning_close.clicked.connect(lambda: self.show_warning_banner(""))
        banner = QHBoxLayout()
        banner.setContentsMargins(0, 0, 0, 0)
        banner.addWidget(self.warning_banner, 1)
        banner.addWidget(self.warning_close, 0, Qt.AlignmentFlag.AlignTop)
        central = QWidget()
        central_layout = QVBoxLayout(central)
        central_layout.setContentsMargins(0, 0, 0, 0)
        central_layout.setSpacing(2)
        central_layout.addLayout(banner)
        central_layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.show_warning_banner("")

        # -- jobs
        self.runner = JobRunner(self)
        self.runner.progress.connect(self.monitor.add_event)
        self.runner.status.connect(self._on_run_status)
        self.runner.succeeded.connect(self._on_run_succeeded)
        self.runner.failed.connect(self._on_run_failed)
        self.runner.cancelled.connect(self._on_run_cancelled)
        self.runner.finished.connect(self._on_run_finished)
        self.exports = Exports(self)  # one action per row of the export-format table (gui/exports.py)
        self.export_runner = self.exports.runner
        self.export_runner.finished.connect(self._update_actions)

        # -- connections
        self.browser.study_selected.connect(self._on_study_selected)
        self.browser.selection_cleared.connect(self._on_nothing_selected)
        self.browser.opened.connect(self._on_opened)
        self.browser.status_message.connect(self.show_status)
        self.viewer.frame_requested.connect(self._on_frame_requested)
        self.panel.run_requested.connect(self.run_attack)
        self.panel.cancel_requested.connect(self.cancel_run)
        self.panel.changed.connect(self._update_actions)
        self.panel.classifier_combo.currentIndexChanged.connect(lambda _i: self._show_input_warnings())
        self.history.show_requested.connect(self.show_entry)
        self.history.compare_requested.connect(self.compare_entries)
        self.batch.running_changed.connect(self._on_batch_running)
        self.batch.error.connect(lambda msg, details: self.show_error("Batch evaluation failed", msg, details))

        build_actions(self)  # menus and tool bars (gui/actions.py)
        from p2p_desktop.gui.pacs_dialog import install_pacs_actions
        from p2p_desktop.gui.reader_study import install_reader_study_action

        install_pacs_actions(self)  # "Send to PACS…" beside Export DICOM, Tools > PACS…
        install_reader_study_action(self)  # Tools > Reader study…
        self._restore_layout()
        self._update_actions()
        if paths:
            self.open_paths(paths)  # ``p2p-desktop FILE|FOLDER …``: the first study is selected
        elif load_demo:
            self.load_demo()

    # -- construction ----------------------------------------------------------------------------
    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{title.lower()}")
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, dock)
        return dock

    def _default_dock_layout(self) -> None:
        """The first start's dock arrangement: one column on the right, tabbed."""
        right = Qt.DockWidgetArea.RightDockWidgetArea
        for dock in self.docks():
            dock.setFloating(False)
            self.addDockWidget(right, dock)
            dock.show()
        self.splitDockWidget(self.attack_dock, self.monitor_dock, Qt.Orientation.Vertical)
        self.tabifyDockWidget(self.attack_dock, self.browser_dock)
        self.tabifyDockWidget(self.browser_dock, self.details_dock)
        self.tabifyDockWidget(self.monitor_dock, self.history_dock)
        self.tabifyDockWidget(self.history_dock, self.log_dock)
        self.attack_dock.raise_()
        self.monitor_dock.raise_()

    def docks(self) -> tuple[QDockWidget, ...]:
        return (self.attack_dock, self.browser_dock, self.details_dock, self.monitor_dock, self.history_dock,
                self.log_dock)

    def _restore_layout(self) -> None:
        geometry, state = self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        self.fit_to_screen(restored=geometry is not None)
        # a state saved by an older layout (another version) is ignored: the default comes back
        if state is None or not self.restoreState(state, LAYOUT_VERSION):
            self._default_dock_sizes()  # (a refused state leaves the default arrangement as it was)
        else:
            self._clamp_docks()

    def _default_dock_sizes(self) -> None:
        """Dock sizes of a first start, scaled to the window (which fits the screen): the column
        about a quarter of the window, the image tabs the rest."""
        side = max(290, min(380, self.width() * 2 // 9))
        self.resizeDocks([self.attack_dock], [side], Qt.Orientation.Horizontal)
        self.resizeDocks([self.attack_dock, self.monitor_dock], [self.height() // 2, self.height() // 2],
                         Qt.Orientation.Vertical)

    def _clamp_docks(self) -> None:
        """A restored layout kept usable: docked panels at least their minimum width (never
        squeezed to "#1" labels), floating ones moved onto the screen."""
        screen = self.screen()
        avail = screen.availableGeometry() if screen is not None else None
        for dock in self.docks():
            if dock.isFloating():
                if avail is not None:
                    dock.setGeometry(fitted_geometry(avail, dock.geometry(), dock.minimumSizeHint()))
                continue
            if not dock.isVisible() and not self.tabifiedDockWidgets(dock):
                continue
            need = max(dock.widget().minimumWidth(), dock.widget().minimumSizeHint().width())
            if 0 < dock.width() < need:
                self.resizeDocks([dock], [need], Qt.Orientation.Horizontal)

    def reset_layout(self) -> None:
        """View ▸ Reset layout: the first start's dock arrangement and sizes."""
        geometry = self.geometry()
        self._default_dock_layout()  # (re-docking stacks every panel for a moment: the window may grow)
        self.setGeometry(geometry)
        self.fit_to_screen(restored=True)
        self._default_dock_sizes()

    def show_warning_banner(self, text: str) -> None:
        """A warning above the images that wraps and stays until dismissed (empty hides it)."""
        self.warning_banner.setText(text)
        self.warning_banner.setToolTip(text)
        self.warning_banner.setVisible(bool(text))
        self.warning_close.setVisible(bool(text))

    def fit_to_screen(self, restored: bool = False) -> None:
        """Fit the window to the screen's available area: a first start opens at most
        PREFERRED_SIZE, centred; restored geometry is clamped, so every control is reachable."""
        from PySide6.QtGui import QGuiApplication

        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is None:
            return
        avail = screen.availableGeometry()
        current = self.geometry() if restored else None
        self.setGeometry(fitted_geometry(avail, current, self.minimumSizeHint()))

    # -- studies ---------------------------------------------------------------------------------------
    def load_demo(self) -> None:
        """Open the demo studies (or pydicom's ultrasound example when none are bundled)."""
        paths = demo_sample_paths()
        if paths:
            self.browser.add_paths(paths, select_first=True)  # the first DICOM study is shown
            self.viewer.set_notice("")
            self.show_status("Demo sample loaded: choose an attack and press Run.")
            return
        fallback = fallback_sample()
        if fallback is not None:
            self.browser.add_paths([fallback], select_first=True)
            self.viewer.set_notice("No demo sample found in resources/samples: showing pydicom's ultrasound "
                                   f"example ({fallback.name}) instead.")
            log.warning("no demo sample in resources/samples; using pydicom's example %s", fallback.name)
            return
        self.viewer.show_message("No demo sample found (resources/samples is empty). "
                                 "Open a DICOM or image file with File ▸ Open files…, or drop one here.")

    def open_files_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Open studies", self.settings.last_folder,
            "Studies (*.dcm *.dicom *.png *.jpg *.jpeg *.bmp *.tif *.tiff);;All files (*)")
        if paths:
            self.open_paths(paths)

    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open folder", self.settings.last_folder)
        if path:
            self.open_paths([path])

    def open_paths(self, paths) -> None:
        """Open files and folders (menu, toolbar, drag and drop, recent list): the first new
        study is selected and shown; what was opened is announced when loading ends; only
        paths that gave a study go to the Recent list."""
        paths = [Path(p) for p in paths]
        self._opening.extend(paths)
        if paths:
            self.settings.last_folder = str(paths[0] if paths[0].is_dir() else paths[0].parent)
        self.browser.add_paths(paths, select_first=True)
        self.browser_dock.show()

    def _on_opened(self, items, unreadable) -> None:
        """Announce a finished load, and keep the opened paths that gave a study in Recent."""
        from p2p_desktop.gui.browser import plural

        opening, self._opening = self._opening, []
        loaded = [Path(i.path).resolve() for i in items]
        for p in opening:
            root = p.resolve()
            if any(f == root or (p.is_dir() and root in f.parents) for f in loaded):
                self.settings.add_recent_path(p)
        parts = []
        if items:
            first = items[0].path.name
            parts.append(f"Opened {plural(len(items), 'study', 'studies')} (showing {first})"
                         if len(items) > 1 else f"Opened {first}")
        if unreadable:
            parts.append(f"{plural(len(unreadable), 'file')} could not be opened")
        if not parts:
            return
        self.last_open_message = "; ".join(parts) + "."
        log.info("%s", self.last_open_message)
        for bad in unreadable:
            log.warning("cannot open %s: %s", bad.path.name, bad.reason)
        if unreadable:
            self.browser_dock.show()
            box = QMessageBox(self)
            box.setIcon(QMessageBox.Icon.Warning)
            box.setWindowTitle("Some files could not be opened")
            box.setText(self.last_open_message)
            box.setInformativeText("\n".join(f"{b.path.name}: {b.reason}" for b in unreadable[:10])
                                   + (f"\n… and {len(unreadable) - 10} more" if len(unreadable) > 10 else ""))
            box.setDetailedText("\n".join(f"{b.path}: {b.reason}" for b in unreadable))
            box.setStandardButtons(QMessageBox.StandardButton.Ok)
            self.last_open_dialog = box
            box.open()
        self.show_status(self.last_open_message)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent_paths
        for path in recent:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _c=False, p=path: self.open_paths([p]))
        if recent:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear list", self.settings.clear_recent_paths)
        else:
            self.recent_menu.addAction("(none)").setEnabled(False)

    def _load(self, item, frame: int | None = None):
        from p2p_desktop.io import load_study

        return load_study(item.path, frame=frame, label=item.label)

    def _on_study_selected(self, item) -> None:
        try:
            study = self._load(item)
        except InputError as exc:
            self._on_nothing_selected(str(exc))
            return
        self._current_item = item
        self.set_study(study)

    def _on_nothing_selected(self, reason: str) -> None:
        """The selection is not a runnable study: Run is disabled with the reason shown (it
        never falls back to the previously selected study)."""
        self.current_study = None
        self._current_item = None
        self.viewer.set_warning("")
        self.viewer.show_message(reason)
        self.panel.set_blocked(reason)
        self.run_action.setToolTip(reason)
        self.show_status(reason)
        self._update_actions()

    def input_warnings(self) -> list[str]:
        """How the selected study differs from the selected classifier's training data."""
        from p2p_desktop.gui.attack_panel import classifier_card
        from p2p_desktop.input_check import input_warnings

        spec = self.panel.classifier_spec()
        card = classifier_card(spec) if spec and self.current_study is not None else None
        return input_warnings(self.current_study, card) if card is not None else []

    def _show_input_warnings(self) -> None:
        from p2p_desktop.input_check import WARNING_PREFIX

        lines = self.input_warnings()
        self.viewer.set_warning("\n".join("⚠ " + w[len(WARNING_PREFIX):] for w in lines) and
                                "⚠ This image is unlike what the classifier was trained on; its verdicts may "
                                "mean little:\n" + "\n".join("• " + w[len(WARNING_PREFIX):] for w in lines))

    def set_study(self, study) -> None:
        self.current_study = study
        self.panel.set_blocked("")
        self._show_input_warnings()
        self.run_action.setToolTip(self.run_action.statusTip())
        self.viewer.set_study(study)
        if self.tabs.currentWidget() is not self.results or not self.history.entries:
            self.tabs.setCurrentWidget(self.viewer)
        self.show_status(f"{study.name}: {study.width}×{study.height}" +
                         (f", frame {study.frame_index + 1} of {study.n_frames}" if study.n_frames > 1 else ""))
        self._update_actions()

    def _on_frame_requested(self, frame: int) -> None:
        if self._current_item is None:
            return
        try:
            self.set_study(self._load(self._current_item, frame))
        except InputError as exc:
            self.show_status(str(exc))

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt API
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt API
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.open_paths(paths)
            event.acceptProposedAction()

    # -- runs ------------------------------------------------------------------------------------------
    def is_busy(self) -> bool:
        """An attack, a batch evaluation or an export is running."""
        return self.runner.is_running() or self.batch.runner.is_running() or self.export_runner.is_running()

    def run_attack(self) -> bool:
        """Start the configured attack on the current study (the Run button). False if refused."""
        if self.is_busy():
            self.show_status("A job is already running.")
            return False
        if self.current_study is None:
            self.show_error("Nothing to attack", self.panel.blocked_reason
                            or "Open and select a study first (File ▸ Open files…).")
            return False
        try:
            attack = self.panel.build_attack()
        except InputError as exc:
            self.show_status(f"Cannot run: {exc}")
            return False
        request = AttackRequest(study=self.current_study, attack=attack, classifier=self.panel.classifier_spec(),
                                backbone=self.panel.backbone_spec() or None, device=self.panel.device())
        self._run_study, self._run_request = self.current_study, request
        from p2p_desktop.gui.attack_panel import classifier_classes

        title = f"{attack.name} on {self.current_study.name}"
        self.monitor.start(title, attack.total_steps(), classifier_classes(request.classifier))
        self.monitor_dock.show()
        self.monitor_dock.raise_()
        self.panel.set_running(True)
        log.info("run %s: classifier %s, device %s, config %s", title, request.classifier, request.device,
                 attack.config.to_dict())
        self.runner.start(attack_job(request, self.models), title=title, device=request.device)
        self._update_actions()
        return True

    def cancel_run(self) -> None:
        if self.runner.is_running():
            self.runner.cancel()
            self.show_status("Cancelling…")
        if self.batch.runner.is_running():
            self.batch.runner.cancel()

    def _on_run_status(self, text: str) -> None:
        self.monitor.set_status(text)
        self.show_status(text)

    def _on_run_succeeded(self, result) -> None:
        request = self._run_request
        entry = RunEntry(self.history.next_number(), result, self._run_study,
                         classifier_spec=request.classifier if request else "",
                         backbone_spec=request.backbone if request and result.backbone is not None else None)
        self.history.add(entry, select=False)
        self.show_entry(entry)
        self.history.select(entry.number)
        self.details_dock.raise_()  # the run's probabilities, metrics and notes
        verdict = result.outcome
        self.monitor.finish(f"{entry.title}: {verdict}")
        log.info("run #%d finished: %s, %s → %s, SSIM %s, %.2f s", entry.number, verdict, result.original_label,
                 result.adversarial_label, result.metrics.get("ssim"), result.seconds)
        self.show_status(f"Run #{entry.number}: {entry.verdict}")

    def _on_run_failed(self, message: str, details: str) -> None:
        self.monitor.finish("Run failed", completed=False)
        self.show_error("The attack failed", message, details)

    def _on_run_cancelled(self) -> None:
        self.monitor.finish("Run cancelled — nothing was kept", completed=False)
        log.info("run cancelled")
        self.show_status("Run cancelled.")

    def _on_run_finished(self) -> None:
        self.panel.set_running(False)
        self._update_actions()
        self.run_finished.emit()

    def _on_batch_running(self, running: bool) -> None:
        self.panel.set_running(running)
        self._update_actions()

    # -- results ---------------------------------------------------------------------------------------
    def show_entry(self, entry) -> None:
        self.results.show_entry(entry)
        self.tabs.setCurrentWidget(self.results)
        self._update_actions()

    def compare_entries(self, a, b) -> None:
        self.compare.show_pair(a, b)
        self.tabs.setCurrentWidget(self.compare)

    def current_entry(self):
        return self.results.entry

    def _update_actions(self) -> None:
        busy = self.is_busy()
        self.run_action.setEnabled(not busy and self.current_study is not None and self.panel._valid)
        self.cancel_action.setEnabled(busy)
        self.exports.update_actions(self.export_actions, self.results.entry is not None)

    # -- exports (gui/exports.py: the export job on a worker, one action per export format) ------------------
    def export(self, key: str, folder: str | None = None, *, value=None, deidentify: bool | None = None) -> bool:
        """Export the shown run as format ``key`` of the export-format table (see :class:`Exports`)."""
        return self.exports.export(key, folder, value=value, deidentify=deidentify)

    def export_png(self, folder: str | None = None) -> bool:
        """Write the shown run's adversarial PNG and signed perturbation (.npy) to ``folder``."""
        return self.export("png", folder)

    def export_dicom(self, folder: str | None = None, deidentify: bool | None = None) -> bool:
        """Write the adversarial image as a derived DICOM (optionally de-identified: PS3.15
        basic profile, and an anonymous file name)."""
        return self.export("dicom", folder, deidentify=deidentify)

    def export_report(self, folder: str | None = None, formats=("html", "pdf"), deidentify: bool | None = None) -> bool:
        """Write the run's full record, as ``p2p-desktop attack`` does, with the HTML/PDF report."""
        return self.export("report", folder, value=tuple(formats), deidentify=deidentify)

    @property
    def last_export(self) -> list[str]:
        """The files the last export wrote."""
        return self.exports.last

    def _pseudonym(self) -> str:
        """The shown run's pseudonym for de-identified exports (shared by every export of it)."""
        return self.exports.pseudonym()

    # -- messages ------------------------------------------------------------------------------------------
    def show_status(self, text: str) -> None:
        self.status_label.setText(text)

    def show_error(self, title: str, message: str, details: str = "") -> QMessageBox:
        """A non-blocking error dialog (kept as ``last_error_dialog``) plus a log entry."""
        self.errors.append((title, message))
        log.error("%s: %s", title, message)
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Critical)
        box.setWindowTitle(title)
        box.setText(title)
        box.setInformativeText(message)
        if details:
            box.setDetailedText(details)
        box.setStandardButtons(QMessageBox.StandardButton.Ok)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        self.last_error_dialog = box
        box.open()
        self.show_status(f"{title}: {message}")
        return box

    def show_about(self) -> None:
        import html

        from p2p_desktop import __version__
        from p2p_desktop.attacks.registry import available

        attacks = ", ".join(f"{s.name} ({s.summary.split(':')[0].strip()})" if s.source == "builtin" and s.summary
                            else f"{s.name} ({'plugin' if s.source != 'builtin' else 'built in'})"
                            for s in available())
        QMessageBox.about(self, "About P2P Desktop",
                          f"<b>P2P Desktop {__version__}</b><br>Measure how breast-ultrasound classifiers can be "
                          f"fooled. Attacks: {html.escape(attacks)}.<br>Models, attacks and results stay on this "
                          "machine (it works offline); the only thing that leaves it is what you exchange with a "
                          "DICOM node you configured yourself: Send to PACS… (or <tt>--send-dicom</tt>) sends the "
                          "derived DICOM, Tools ▸ PACS… queries and retrieves, and sends and retrievals are "
                          "recorded in the audit log.<br><br>The demo models are trained on synthetic phantoms. "
                          "The demo diffusion backbone's prompt steers only how a finding is imaged (gain, contrast, "
                          "speckle), never which finding it is, and the demo classifiers were trained to ignore most "
                          "of that: P2P fools them less often than the pixel attacks do. A success that redraws the "
                          "lesion as another class is not an adversarial example. On a phantom, the results "
                          "table's \"Label kept?\" row gives the label-preservation oracle's verdict; only a "
                          "success with the label kept is valid.")

    def show_models(self) -> None:
        from p2p_desktop.models import registry

        lines = []
        for entry in registry.entries():
            try:
                status = registry.verify_entry(entry)
            except Exception as exc:  # noqa: BLE001
                status = f"error: {exc}"
            lines.append(f"{entry.kind:<10} {entry.name:<28} {status}")
        QMessageBox.information(self, "Models", "\n".join(lines) or
                                "No models registered. The demo models belong in resources/models.")

    # -- plugins ------------------------------------------------------------------------------------------
    def approve_plugin(self, info) -> bool:
        """Ask the user to trust a plugin shown with its path and SHA-256 (tests replace this)."""
        from p2p_desktop.gui.plugins_dialog import ask_to_enable

        return ask_to_enable(self, info)

    def import_metric_weights(self, files=None) -> list[dict] | None:
        """Tools > Import metric weights…: the files chosen (or ``files``) through the same core function as
        ``p2p-desktop models import-weights``; what it enabled, or why not, in a message box."""
        from PySide6.QtWidgets import QMessageBox

        from p2p_desktop.errors import InputError
        from p2p_desktop.metrics.import_weights import PUBLISHED, import_weights

        if files is None:
            names = " ".join(PUBLISHED)
            files, _ = QFileDialog.getOpenFileNames(self, "Import metric weights", self.settings.last_folder,
                                                    f"Metric weights ({names});;All files (*)")
            if not files:
                return None
        try:
            records = import_weights(files)
        except InputError as exc:
            QMessageBox.warning(self, "Import metric weights", str(exc))
            return None
        QMessageBox.information(self, "Import metric weights", "\n".join(
            f"{r['name']}: verified, {'already in place' if r['already'] else 'imported'}; enables {r['enables']}"
            for r in records))
        return records

    def show_plugins(self):
        """The Plugins dialog (non-modal); enabling refreshes the attack and classifier lists."""
        from p2p_desktop.gui.plugins_dialog import PluginsDialog

        dialog = PluginsDialog(self, approve=self.approve_plugin)
        dialog.changed.connect(self._plugins_changed)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        self.plugins_dialog = dialog
        dialog.open()
        return dialog

    def review_changed_plugins(self) -> list[str]:
        """Ask again for every enabled plugin whose files changed; returns the re-approved names."""
        from p2p_desktop import plugins

        approved = []
        for info in plugins.discover():
            if info.status == "changed":
                if self.approve_plugin(info):
                    plugins.enable(info.name)
                    approved.append(info.name)
                else:
                    plugins.disable(info.name)
        if approved:
            self._plugins_changed()
        return approved

    def _plugins_changed(self) -> None:
        from p2p_desktop import plugins

        plugins.load_plugins()
        self.panel.refresh_attacks()
        self.panel.refresh_models()

    # -- closing --------------------------------------------------------------------------------------------
    def confirm_close(self) -> bool:
        """Ask whether to cancel the running job and close (tests replace this)."""
        answer = QMessageBox.question(self, "A job is running",
                                      "A job is still running. Cancel it and close the window?",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Close at once: a running job is asked first, then cancelled (its worker sees the
        token within one iteration) and the window goes away without waiting for it; the
        application waits for the worker thread when it quits (:meth:`shutdown`)."""
        if self._closed:
            event.accept()
            return
        if self.is_busy():
            if self.ask_before_close and not self.confirm_close():
                event.ignore()
                return
            self._close_pending = True
            for runner in self.job_runners():
                runner.cancel()
            log.info("window closed during a job: the job was cancelled")
        self.browser.cancel()
        self.settings.save_window_state(self.saveGeometry(), self.saveState(LAYOUT_VERSION))
        self.settings.sync()
        self.log_panel.detach()
        self._closed = True
        super().closeEvent(event)
        self.closed.emit()

    def job_runners(self) -> tuple[JobRunner, ...]:
        return self.runner, self.batch.runner, self.export_runner, self.browser.runner

    def shutdown(self, timeout_ms: int = 60000) -> bool:
        """Cancel every job and wait for the threads (used when the application quits)."""
        for runner in self.job_runners():
            runner.cancel()
        return all(r.wait(timeout_ms) for r in self.job_runners())
