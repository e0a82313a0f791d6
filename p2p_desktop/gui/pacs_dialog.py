"""PACS dialogs: query a DICOM node and retrieve a study into the study browser, and send the
shown run's derived DICOM to a node ("Send to PACS…" beside Export DICOM).

The network work runs on a :class:`~p2p_desktop.gui.worker.JobRunner` thread through the
Qt-free :mod:`p2p_desktop.pacs`; progress and Cancel go through the job's callbacks and
cancel token. Errors are one line in the dialog and an error dialog of the main window.
Nodes and our AE title are the ones ``p2p-desktop pacs nodes`` manages (the user's pacs.json).
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStyle,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from p2p_desktop.gui.worker import JobRunner

__all__ = ["PacsDialog", "SendDialog", "NodeEditor", "install_pacs_actions", "COLUMNS"]

log = logging.getLogger("p2p_desktop.gui")

COLUMNS = (("PatientID", "Patient ID"), ("PatientName", "Patient name"), ("StudyDate", "Date"),
           ("ModalitiesInStudy", "Modalities"), ("StudyDescription", "Description"),
           ("NumberOfStudyRelatedInstances", "Instances"), ("StudyInstanceUID", "Study UID"))


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "\\".join(str(v) for v in value)
    return str(value)


class NodeEditor(QDialog):
    """Add a node: name, AE title, host, port, or a DICOMweb URL instead (TLS files through
    ``p2p-desktop pacs nodes add``)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add DICOM node")
        self.name_edit = QLineEdit()
        self.aet_edit = QLineEdit()
        self.aet_edit.setMaxLength(16)
        self.host_edit = QLineEdit()
        self.port_spin = QSpinBox()
        self.port_spin.setRange(1, 65535)
        self.port_spin.setValue(104)
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText("or a DICOMweb URL, e.g. http://pacs:8042/dicom-web")
        form = QFormLayout(self)
        form.addRow("Name", self.name_edit)
        form.addRow("AE title", self.aet_edit)
        form.addRow("Host", self.host_edit)
        form.addRow("Port", self.port_spin)
        form.addRow("DICOMweb", self.url_edit)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def values(self) -> tuple[str, str, str, int, str]:
        return (self.name_edit.text().strip(), self.aet_edit.text().strip(), self.host_edit.text().strip(),
                self.port_spin.value(), self.url_edit.text().strip())


class _NodeChooser(QWidget):
    """A node combo box with "Add…", and our AE title; shared by both dialogs."""

    error = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.combo = QComboBox()
        self.combo.setMinimumWidth(260)
        self.add_button = QPushButton("Add…")
        self.add_button.clicked.connect(self._ask_add)
        self.our_aet = QLabel("")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Node"))
        row.addWidget(self.combo, 1)
        row.addWidget(self.add_button)
        row.addWidget(self.our_aet)
        self.reload()

    def settings(self):
        from p2p_desktop.pacs import load_settings

        return load_settings()

    def reload(self, select: str | None = None) -> None:
        from p2p_desktop.pacs import PacsError

        try:
            settings = self.settings()
        except PacsError as exc:
            self.error.emit(str(exc))
            return
        current = select or self.combo.currentData()
        self.combo.clear()
        for node in settings.nodes:
            self.combo.addItem(f"{node.name}  ({node.address})", node.name)
        if current is not None:
            index = self.combo.findData(current)
            if index >= 0:
                self.combo.setCurrentIndex(index)
        self.our_aet.setText(f"as {settings.ae_title}")

    def add_node(self, name: str, ae_title: str, host: str, port: int, url: str = "") -> bool:
        """Save a node (a DICOMweb node when ``url`` is given) in the user's PACS settings and
        select it; False (and ``error``) if refused."""
        from p2p_desktop.pacs import Node, PacsError, WebNode, save_settings

        try:
            node = WebNode(name, url) if url else Node(name, ae_title, host, port)
            save_settings(self.settings().with_node(node))
        except PacsError as exc:
            self.error.emit(str(exc))
            return False
        self.reload(select=node.name)
        return True

    def _ask_add(self) -> None:
        editor = NodeEditor(self)
        if editor.exec() == QDialog.DialogCode.Accepted:
            self.add_node(*editor.values())

    def node(self):
        from p2p_desktop.pacs import PacsError

        name = self.combo.currentData()
        if name is None:
            raise PacsError("no node chosen: add one first (Add…)")
        settings = self.settings()
        node = settings.node(name)
        if node is None:
            raise PacsError(f"node {name!r} is no longer configured")
        return node, settings


class _JobDialog(QDialog):
    """A dialog with one job at a time: progress bar, Cancel, one status line."""

    def __init__(self, window=None, parent=None) -> None:
        super().__init__(parent if parent is not None else window)
        self.window_ = window
        self.runner = JobRunner(self)
        self.runner.progress.connect(self._on_progress)
        self.runner.status.connect(self._set_status)
        self.runner.failed.connect(self._on_failed)
        self.runner.cancelled.connect(lambda: self._set_status("Cancelled; nothing was kept."))
        self.runner.finished.connect(self._on_finished)
        self.errors: list[str] = []
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.runner.cancel)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.chooser = _NodeChooser()
        self.chooser.error.connect(self._show_error)

    def _progress_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        return row

    def _start(self, job, title: str) -> bool:
        if self.runner.is_running():
            return False
        self.progress.setRange(0, 0)  # busy until the first progress report
        self.cancel_button.setEnabled(True)
        self._set_busy(True)
        self.runner.start(job, title=title)
        return True

    def _set_busy(self, busy: bool) -> None:
        pass

    def _on_progress(self, event) -> None:
        """One :class:`~p2p_desktop.progress.Progress` of the transfer: instances done of total."""
        self.progress.setRange(0, max(event.total, 1))
        self.progress.setValue(event.step)
        self._set_status(event.message)

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _show_error(self, message: str) -> None:
        self.errors.append(message)
        self.status_label.setText(f"Error: {message}")
        if self.window_ is not None and hasattr(self.window_, "show_error"):
            self.window_.show_error(self.windowTitle(), message)

    def _on_failed(self, message: str, details: str) -> None:
        self._show_error(message)

    def _on_finished(self) -> None:
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self._set_busy(False)

    def stop(self, timeout_ms: int = 30000) -> bool:
        """Cancel the running job and wait for its thread."""
        self.runner.cancel()
        return self.runner.wait(timeout_ms)

    def done(self, result: int) -> None:  # closing the dialog cancels its job
        self.stop()
        super().done(result)


def _retrieve_folder(study_uid: str) -> Path:
    from p2p_desktop.paths import user_data_dir

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return user_data_dir() / "pacs" / "studies" / f"{study_uid[:64]}-{stamp}"


class PacsDialog(_JobDialog):
    """Choose a node, search its studies (C-FIND), retrieve one into the study browser."""

    retrieved = Signal(list)  # paths of the retrieved files

    def __init__(self, window=None, parent=None) -> None:
        super().__init__(window, parent)
        self.setWindowTitle("PACS query/retrieve")
        self.resize(980, 520)
        self.matches: list[dict] = []
        self.last_retrieved: list[str] = []
        self.echo_button = QPushButton("Echo")
        self.echo_button.setToolTip("C-ECHO: is the node there and does it accept us?")
        self.echo_button.clicked.connect(self.echo)
        self.patient_edit = QLineEdit()
        self.patient_edit.setPlaceholderText("Patient ID (wildcards * ?)")
        self.modality_edit = QLineEdit()
        self.modality_edit.setPlaceholderText("Modality, e.g. US")
        self.date_edit = QLineEdit()
        self.date_edit.setPlaceholderText("YYYYMMDD or YYYYMMDD-YYYYMMDD")
        self.search_button = QPushButton("Search")
        self.search_button.setDefault(True)
        self.search_button.clicked.connect(self.search)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([c[1] for c in COLUMNS])
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setTabKeyNavigation(False)  # Tab leaves the table
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(lambda: self._set_busy(self.runner.is_running()))
        self.table.doubleClicked.connect(lambda _index: self.retrieve_selected())
        self.method_combo = QComboBox()
        self.method_combo.addItem("C-GET", "get")
        self.method_combo.addItem("C-MOVE", "move")
        self.retrieve_button = QPushButton("Retrieve")
        self.retrieve_button.clicked.connect(self.retrieve_selected)

        top = QHBoxLayout()
        top.addWidget(self.chooser, 1)
        top.addWidget(self.echo_button)
        query = QHBoxLayout()
        for w in (self.patient_edit, self.modality_edit, self.date_edit):
            query.addWidget(w)
        query.addWidget(self.search_button)
        bottom = QHBoxLayout()
        bottom.addWidget(QLabel("Method"))
        bottom.addWidget(self.method_combo)
        bottom.addWidget(self.retrieve_button)
        bottom.addLayout(self._progress_row(), 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(query)
        layout.addWidget(self.table, 1)
        layout.addLayout(bottom)
        layout.addWidget(self.status_label)
        self.runner.succeeded.connect(self._on_succeeded)
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        for w in (self.echo_button, self.search_button, self.chooser):
            w.setEnabled(not busy)
        self.retrieve_button.setEnabled(not busy and self.selected_study() is not None)

    # -- actions
    def _node(self):
        from p2p_desktop.pacs import PacsError

        try:
            return self.chooser.node()
        except PacsError as exc:
            self._show_error(str(exc))
            return None

    def echo(self) -> bool:
        chosen = self._node()
        if chosen is None:
            return False
        node, settings = chosen

        def job(report, status, cancel):
            from p2p_desktop.pacs import echo

            status(f"C-ECHO {node.describe()}…")
            return "echo", echo(node, ae_title=settings.ae_title)

        return self._start(job, "pacs echo")

    def search(self) -> bool:
        chosen = self._node()
        if chosen is None:
            return False
        node, settings = chosen
        patient = self.patient_edit.text().strip() or None
        modality = self.modality_edit.text().strip() or None
        date = self.date_edit.text().strip() or None

        def job(report, status, cancel):
            from p2p_desktop.pacs import find

            status(f"searching {node.describe()}…")
            return "find", find(node, level="study", patient_id=patient, modality=modality, study_date=date,
                                ae_title=settings.ae_title, cancel=cancel)

        return self._start(job, "pacs find")

    def selected_study(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        return self.matches[rows[0].row()].get("StudyInstanceUID")

    def select_study(self, study_uid: str) -> bool:
        for row, match in enumerate(self.matches):
            if match.get("StudyInstanceUID") == study_uid:
                self.table.selectRow(row)
                return True
        return False

    def retrieve_selected(self) -> bool:
        """Retrieve the selected study on the worker thread, then add it to the study browser."""
        study_uid = self.selected_study()
        chosen = self._node()
        if chosen is None or not study_uid:
            return False
        node, settings = chosen
        method = self.method_combo.currentData()
        folder = _retrieve_folder(study_uid)

        def job(report, status, cancel):
            from p2p_desktop.pacs import retrieve

            status(f"retrieving {study_uid} from {node.describe()} by C-{method.upper()}…")
            transfer = retrieve(node, study_uid, folder, method=method, ae_title=settings.ae_title,
                                storage_port=settings.storage_port, cancel=cancel,
                                on_progress=report)
            return "retrieve", [str(p) for p in transfer.paths]

        return self._start(job, "pacs retrieve")

    # -- results
    def _on_succeeded(self, outcome) -> None:
        kind, value = outcome
        if kind == "echo":
            self._set_status(f"C-ECHO ok ({value * 1000:.0f} ms)")
        elif kind == "find":
            self._fill(value)
            self._set_status(f"{len(value)} stud{'y' if len(value) == 1 else 'ies'} found")
        elif kind == "retrieve":
            self.last_retrieved = value
            self.progress.setRange(0, max(len(value), 1))
            self.progress.setValue(len(value))
            self._set_status(f"retrieved {len(value)} instance(s) into {Path(value[0]).parent}")
            log.info("PACS: retrieved %d instance(s) (recorded in the audit log)", len(value))
            if self.window_ is not None and hasattr(self.window_, "open_paths"):
                self.window_.open_paths([Path(p) for p in value])
            self.retrieved.emit(value)

    def _fill(self, matches: list[dict]) -> None:
        self.matches = list(matches)
        self.table.setRowCount(0)
        for row, match in enumerate(self.matches):
            self.table.insertRow(row)
            for col, (key, _title) in enumerate(COLUMNS):
                self.table.setItem(row, col, QTableWidgetItem(_text(match.get(key))))
        self.table.resizeColumnsToContents()
        if self.matches:
            self.table.selectRow(0)


class SendDialog(_JobDialog):
    """Send the shown run's derived DICOM (optionally de-identified) to a node."""

    sent = Signal(object)  # the Transfer

    def __init__(self, window, parent=None) -> None:
        super().__init__(window, parent)
        self.setWindowTitle("Send to PACS")
        self.resize(640, 200)
        self.transfer = None
        self.deidentify_box = QCheckBox("De-identify (DICOM PS3.15 basic profile)")
        self.deidentify_box.setToolTip("Ultrasound images often carry burned-in patient text, which "
                                       "de-identification cannot remove from the pixels.")
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self.send)
        layout = QVBoxLayout(self)
        layout.addWidget(self.chooser)
        layout.addWidget(self.deidentify_box)
        row = QHBoxLayout()
        row.addWidget(self.send_button)
        row.addLayout(self._progress_row(), 1)
        layout.addLayout(row)
        layout.addWidget(self.status_label)
        self.runner.succeeded.connect(self._on_sent)

    def _set_busy(self, busy: bool) -> None:
        for w in (self.send_button, self.chooser, self.deidentify_box):
            w.setEnabled(not busy)

    def send(self) -> bool:
        from p2p_desktop.pacs import PacsError

        entry = self.window_.current_entry() if self.window_ is not None else None
        if entry is None:
            self._show_error("no result to send: run an attack first")
            return False
        try:
            node, settings = self.chooser.node()
        except PacsError as exc:
            self._show_error(str(exc))
            return False
        result, study = entry.result, entry.study
        deidentify = self.deidentify_box.isChecked()
        if deidentify:  # named by the run's pseudonym: the send's audit record names no source file
            from p2p_desktop.export.deidentify import deidentified_study

            pseudonym = getattr(self.window_, "_pseudonym", None)
            study = deidentified_study(study, pseudonym() if callable(pseudonym) else None)

        def job(report, status, cancel):
            import tempfile

            from p2p_desktop.export.dicom import export_dicom
            from p2p_desktop.io.outputs import OutputSet
            from p2p_desktop.pacs import send

            status("building the derived DICOM…")
            with tempfile.TemporaryDirectory(prefix="p2p-send-") as tmp:
                with OutputSet(tmp, [study.path]) as outs:
                    export_dicom(result, study, outs, deidentify=deidentify)
                status(f"sending to {node.describe()}…")
                return send(node, [r["path"] for r in outs.records], ae_title=settings.ae_title, cancel=cancel,
                            on_progress=report)

        return self._start(job, "pacs send")

    def _on_sent(self, transfer) -> None:
        self.transfer = transfer
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        uids = ", ".join(i.sop_instance_uid for i in transfer.instances)
        self._set_status(f"stored on {transfer.node.describe()}: {uids}")
        if self.deidentify_box.isChecked():  # its new UIDs would link the instance to the run's study in the log
            log.info("PACS: sent %d de-identified instance(s) to %s (recorded in the audit log)",
                     len(transfer.instances), transfer.node.describe())
        else:
            log.info("PACS: sent %s to %s (recorded in the audit log)", uids, transfer.node.describe())
        self.sent.emit(transfer)


def install_pacs_actions(window) -> None:
    """Add "Send to PACS…" beside Export DICOM (menus and tool bars; enabled with it) and
    "PACS…" in the Tools menu. The dialogs are kept as ``window.pacs_dialog`` / ``window.send_dialog``."""
    export = window.export_dicom_action
    send_action = QAction("Send to PACS…", window)
    send_action.setIcon(window.style().standardIcon(QStyle.StandardPixmap.SP_ArrowRight))
    send_action.setToolTip("Send the adversarial image as a derived DICOM to a PACS node (C-STORE)")
    send_action.setStatusTip(send_action.toolTip())
    send_action.triggered.connect(lambda _checked=False: open_send_dialog(window))
    for widget in list(export.associatedObjects()):
        if not isinstance(widget, QWidget):
            continue
        actions = widget.actions()
        index = actions.index(export) if export in actions else -1
        if 0 <= index < len(actions) - 1:
            widget.insertAction(actions[index + 1], send_action)
        else:
            widget.addAction(send_action)
    send_action.setEnabled(export.isEnabled())
    export.changed.connect(lambda: send_action.setEnabled(export.isEnabled()))
    pacs_action = QAction("PACS…", window)
    pacs_action.setToolTip("Query a DICOM node and retrieve a study into the study browser")
    pacs_action.triggered.connect(lambda _checked=False: open_pacs_dialog(window))
    tools = next((a.menu() for a in window.menuBar().actions()
                  if isinstance(a.menu(), QMenu) and a.text().replace("&", "") == "Tools"), None)
    (tools if tools is not None else window.menuBar()).addAction(pacs_action)
    window.pacs_send_action, window.pacs_action = send_action, pacs_action
    window.pacs_dialog = window.send_dialog = None
    # the window's shutdown cancels and waits for every job runner: include the dialogs'
    runners = window.job_runners
    window.job_runners = lambda: tuple(runners()) + tuple(
        d.runner for d in (window.pacs_dialog, window.send_dialog) if d is not None)


def open_pacs_dialog(window) -> PacsDialog:
    if getattr(window, "pacs_dialog", None) is None:
        window.pacs_dialog = PacsDialog(window)
    window.pacs_dialog.chooser.reload()
    window.pacs_dialog.show()
    window.pacs_dialog.raise_()
    return window.pacs_dialog


def open_send_dialog(window) -> SendDialog:
    if getattr(window, "send_dialog", None) is None:
        window.send_dialog = SendDialog(window)
    window.send_dialog.chooser.reload()
    window.send_dialog.show()
    window.send_dialog.raise_()
    return window.send_dialog
