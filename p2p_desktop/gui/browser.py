"""The study browser: files and folders as a Patient → Study → Series → Instance tree (DICOM),
datasets by class folder (PNG/JPEG), thumbnails, and unreadable files with their reason.

Folders are scanned and thumbnails decoded on a worker thread (:func:`load_job`), so opening a
large dataset never freezes the window; an unreadable file is listed, never fatal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from p2p_desktop.gui.imageview import array_to_pixmap, thumbnail_array
from p2p_desktop.gui.worker import JobRunner

__all__ = ["BrowserItem", "Unreadable", "StudyBrowser", "load_job", "plural", "distinct_names"]


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 file``, ``2 files`` (``many`` for irregular plurals)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"

def distinct_names(paths) -> dict[Path, str]:
    """Row names that tell same-named files apart: a file whose name is unique among ``paths``
    keeps it (``a.dcm``); same-named ones get as many parent folders as it takes
    (``jane/phi.dcm``, ``copy/phi.dcm``)."""
    groups: dict[str, list[Path]] = {}
    for p in paths:
        groups.setdefault(Path(p).name, []).append(Path(p))
    names: dict[Path, str] = {}
    for name, group in groups.items():
        depth, deepest = 1, max(len(p.parts) for p in group)
        while True:
            labels = {p: os.sep.join(p.parts[-depth:]) if depth > 1 else name for p in group}
            if len(set(labels.values())) == len(group) or depth >= deepest:
                break
            depth += 1
        names.update(labels)
    return names


ROLE = Qt.ItemDataRole.UserRole
UNREADABLE_ROLE = Qt.ItemDataRole.UserRole + 1
THUMB = 48
#: Side files a dataset folder may hold that are not studies (not listed as unreadable).
SIDECAR_SUFFIXES = (".json", ".csv", ".txt", ".md", ".html", ".pdf", ".npy", ".log", ".yaml", ".yml")


@dataclass
class BrowserItem:
    """What the browser keeps per loadable file (no full image: studies load on selection)."""

    path: Path
    kind: str  # "dicom" or "image"
    label: str | None = None  # class folder in a dataset
    root: Path | None = None  # the folder it was found in (None for a file opened directly)
    n_frames: int = 1
    size: tuple[int, int] = (0, 0)  # (width, height)
    channels: int = 1
    has_mask: bool = False
    metadata: object = None  # StudyMetadata
    thumbnail: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Unreadable:
    """A file the browser lists but cannot open, with the reason."""

    path: Path
    reason: str


def _reason(exc: BaseException, path: Path) -> str:
    text = " ".join(str(exc).split())
    prefix = f"cannot load {path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _item_from_study(study, root: Path | None, label: str | None) -> BrowserItem:
    return BrowserItem(path=Path(study.path), kind=study.kind, label=label, root=root,
                       n_frames=study.n_frames, size=(study.width, study.height), channels=study.channels,
                       has_mask=study.mask is not None, metadata=study.metadata,
                       thumbnail=thumbnail_array(study.image, THUMB))


def load_job(paths: list[Path]):
    """Job: scan folders, load each study once for its header and thumbnail.

    Reports ``("item", BrowserItem)`` and ``("unreadable", Unreadable)`` events.
    """

    def job(report, status, cancel):
        from p2p_desktop.errors import Cancelled, InputError
        from p2p_desktop.io import load_study, scan_folder

        for path in paths:
            path = Path(path)
            if path.is_dir():
                status(f"scanning {path}…")
                try:
                    scan = scan_folder(path, cancel=cancel)
                except InputError as exc:
                    report(("unreadable", Unreadable(path, _reason(exc, path))))
                    continue
                for skipped in scan.skipped:
                    if Path(skipped.path).suffix.lower() not in SIDECAR_SUFFIXES:
                        report(("unreadable", Unreadable(Path(skipped.path), skipped.reason)))
                todo = [(Path(e.path), e.label, path) for e in scan.entries]
                if not todo and not scan.skipped:
                    report(("unreadable", Unreadable(path, "no DICOM or image files in this folder")))
            else:
                todo = [(path, None, None)]
            for i, (file, label, root) in enumerate(todo, 1):
                cancel.check()
                status(f"loading {file.name} ({i}/{len(todo)})…")
                try:
                    study = load_study(file, label=label)
                except Cancelled:
                    raise
                except InputError as exc:
                    report(("unreadable", Unreadable(file, _reason(exc, file))))
                except Exception as exc:  # noqa: BLE001 - one bad file never stops the browser
                    report(("unreadable", Unreadable(file, f"internal error ({type(exc).__name__}: {exc})")))
                else:
                    report(("item", _item_from_study(study, root, label)))
        return len(paths)

    return job


class StudyBrowser(QWidget):
    """Tree of opened studies; ``study_selected(BrowserItem)`` when an instance is chosen."""

    study_selected = Signal(object)
    #: after a load: the studies (BrowserItem) and the unreadable files (Unreadable) it brought
    opened = Signal(list, list)
    #: the current row is not a loadable study (an unreadable file, a group); the reason
    selection_cleared = Signal(str)
    loading_finished = Signal()
    status_message = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.items: dict[Path, BrowserItem] = {}
        self.unreadable: dict[Path, Unreadable] = {}
        self._pending: list[Path] = []
        self._nodes: dict[tuple, QTreeWidgetItem] = {}
        self._item_nodes: dict[Path, QTreeWidgetItem] = {}
        self._leaf_prefix: dict[Path, str] = {}  # "#3 " before a DICOM instance's file name
        self._study_patients: dict[str, dict[tuple, QTreeWidgetItem]] = {}  # study UID -> patient -> study node
        self._select_first = False
        self._batch_items: list[BrowserItem] = []
        self._batch_unreadable: list[Unreadable] = []

        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Study", "Details"])
        self.tree.setIconSize(QSize(THUMB, THUMB))
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setUniformRowHeights(False)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.tree.header().setStretchLastSection(True)
        self.tree.setColumnWidth(0, 230)
        self.tree.currentItemChanged.connect(self._on_current_changed)

        self.attributes = QTableWidget(0, 2)
        self.attributes.setHorizontalHeaderLabels(["Attribute", "Value"])
        self.attributes.verticalHeader().setVisible(False)
        self.attributes.horizontalHeader().setStretchLastSection(True)
        self.attributes.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.attributes.setTabKeyNavigation(False)  # Tab leaves the table
        self.attributes.setAlternatingRowColors(True)
        self.attributes.setWordWrap(True)

        self.summary = QLabel("")
        self.summary.setObjectName("muted")
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.tree)
        split.addWidget(self.attributes)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(split, 1)
        layout.addWidget(self.summary)

        self.runner = JobRunner(self)
        self.runner.progress.connect(self._on_loaded)
        self.runner.status.connect(self.status_message)
        self.runner.failed.connect(lambda msg, _tb: self.status_message.emit(f"loading failed: {msg}"))
        self.runner.finished.connect(self._on_load_finished)

    # -- loading ---------------------------------------------------------------------------------
    def is_loading(self) -> bool:
        return self.runner.is_running() or bool(self._pending)

    def add_paths(self, paths, select_first: bool = False) -> None:
        """Open files and/or folders (loaded in the background)."""
        new = [Path(p) for p in paths]
        self._select_first = self._select_first or select_first
        self._pending.extend(new)
        if not self.runner.is_running():
            self._start_next()

    def _start_next(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self.runner.start(load_job(batch), title="open studies")

    def _on_load_finished(self) -> None:
        if self._pending:
            self._start_next()
            return
        self._update_summary()
        if self._select_first:  # nothing loadable arrived
            self._select_first = False
        items, bad = self._batch_items, self._batch_unreadable
        self._batch_items, self._batch_unreadable = [], []
        self.status_message.emit(f"{plural(len(self.items), 'study', 'studies')}, {len(self.unreadable)} unreadable")
        self.opened.emit(items, bad)  # after the totals: the announcement is the last word
        self.loading_finished.emit()

    def cancel(self) -> None:
        self._pending.clear()
        self.runner.cancel()

    def _on_loaded(self, event) -> None:
        kind, payload = event
        if kind == "item":
            self._add_item(payload)
        elif kind == "unreadable":
            self._add_unreadable(payload)

    # -- tree -----------------------------------------------------------------------------------------
    def _node(self, key: tuple, parent: QTreeWidgetItem | None, text: str, details: str = "",
              tooltip: str = "") -> QTreeWidgetItem:
        node = self._nodes.get(key)
        if node is None:
            node = QTreeWidgetItem([text, details])
            if parent is None:
                self.tree.addTopLevelItem(node)
            else:
                parent.addChild(node)
            node.setExpanded(True)
            font = node.font(0)
            font.setBold(parent is None)
            node.setFont(0, font)
            self._nodes[key] = node
        if tooltip:
            node.setToolTip(0, tooltip)
            node.setToolTip(1, tooltip)
        return node

    def _add_item(self, item: BrowserItem) -> None:
        key = item.path.resolve()
        if key in self.items:  # opened again: it counts as opened, and is selected if first
            self._batch_items.append(self.items[key])
            if self._select_first:
                self._select_first = False
                self._select_node(self._item_nodes[key])
            return
        self._batch_items.append(item)
        self.items[key] = item
        self.unreadable.pop(key, None)
        if item.kind == "dicom" and item.metadata is not None:
            leaf = self._add_dicom(item)
        else:
            leaf = self._add_image(item)
        leaf.setData(0, ROLE, str(key))
        if item.thumbnail is not None:
            leaf.setIcon(0, QIcon(array_to_pixmap(item.thumbnail)))
        leaf.setToolTip(0, str(item.path))
        self._item_nodes[key] = leaf
        self._name_rows(key.name)
        self._update_summary()
        if self._select_first:  # show the first study at once, not after the whole folder
            self._select_first = False
            self._select_node(leaf)

    def _name_rows(self, name: str) -> None:
        """(Re)name the rows of the files called ``name``: same-named files from different
        folders show as many parent folders as tell them apart (the full path is the tooltip)."""
        keys = [k for k in self._item_nodes if k.name == name]
        for key, label in distinct_names(keys).items():
            self._item_nodes[key].setText(0, self._leaf_prefix.get(key, "") + label)

    def _select_node(self, node: QTreeWidgetItem) -> None:
        self.tree.setCurrentItem(node)
        self.tree.scrollToItem(node, QAbstractItemView.ScrollHint.EnsureVisible)

    def _add_dicom(self, item: BrowserItem) -> QTreeWidgetItem:
        md = item.metadata
        patient = md.patient_name or "(no name)"
        pid = f" ({md.patient_id})" if md.patient_id else ""
        patient_key = ("patient", md.patient_name, md.patient_id)
        p_node = self._node(patient_key, None, f"Patient {patient}{pid}",
                            "DICOM", tooltip=f"Patient name: {patient}\nPatient ID: {md.patient_id}")
        # studies and series are keyed under their patient: files that share a Study Instance UID
        # but name different patients are never filed under one of them (the conflict is shown)
        date = _format_date(md.study_date)
        s_text = " · ".join(t for t in (date, md.study_description) if t) or "Study"
        study_key = (*patient_key, md.study_uid or str(item.path))
        s_node = self._node(("study", *study_key), p_node, s_text, "",
                            tooltip=f"Study Instance UID: {md.study_uid}")
        if md.study_uid:
            self._mark_shared_study(md.study_uid, patient_key, s_node)
        series_bits = [f"Series {md.series_number}" if md.series_number else "Series",
                       md.modality, md.series_description]
        r_node = self._node(("series", *study_key, md.series_uid or str(item.path)), s_node,
                            " · ".join(b for b in series_bits if b), md.manufacturer,
                            tooltip=f"Series Instance UID: {md.series_uid}")
        inst = f"#{md.instance_number} " if md.instance_number else ""
        frames = f"{item.n_frames} frames · " if item.n_frames > 1 else ""
        self._leaf_prefix[item.path.resolve()] = inst
        leaf = QTreeWidgetItem([f"{inst}{item.path.name}", f"{frames}{item.size[0]}×{item.size[1]}"])
        r_node.addChild(leaf)
        return leaf

    def _mark_shared_study(self, uid: str, patient_key: tuple, node: QTreeWidgetItem) -> None:
        """Flag the studies whose Study Instance UID other patients' files carry too."""
        studies = self._study_patients.setdefault(uid, {})
        studies[patient_key] = node
        if len(studies) < 2:
            return
        for key, study_node in studies.items():
            others = "; ".join(f"{p[1] or '(no name)'} ({p[2] or 'no ID'})" for p in studies if p != key)
            tip = (f"Study Instance UID: {uid}\n⚠ Files of another patient carry the same Study Instance UID "
                   f"({others}): check which patient this study belongs to.")
            study_node.setToolTip(0, tip)
            study_node.setToolTip(1, tip)
            study_node.setText(1, "⚠ UID shared")
            study_node.setForeground(1, QBrush(QColor("#b3261e")))

    def _add_image(self, item: BrowserItem) -> QTreeWidgetItem:
        if item.root is not None:
            top = self._node(("dataset", str(item.root)), None, f"Dataset {item.root.name}", "images",
                             tooltip=str(item.root))
            parent = self._node(("class", str(item.root), item.label), top,
                                item.label or "(no class folder)", "class")
        else:
            parent = self._node(("images",), None, "Images", "files")
        mask = " · mask" if item.has_mask else ""
        leaf = QTreeWidgetItem([item.path.name, f"{item.size[0]}×{item.size[1]}{mask}"])
        parent.addChild(leaf)
        self._count_children(parent)
        return leaf

    def _count_children(self, node: QTreeWidgetItem) -> None:
        if node.text(1) in ("class",) or node.text(1).endswith((" images", " image")):
            node.setText(1, plural(node.childCount(), "image"))

    def _add_unreadable(self, entry: Unreadable) -> None:
        key = entry.path.resolve()
        if key in self.items:
            return
        self._batch_unreadable.append(entry)
        if key in self.unreadable:
            return
        self.unreadable[key] = entry
        top = self._node(("unreadable",), None, "Unreadable files", "")
        leaf = QTreeWidgetItem([entry.path.name, entry.reason])
        leaf.setData(0, UNREADABLE_ROLE, str(key))
        leaf.setToolTip(0, f"{entry.path}\n{entry.reason}")
        leaf.setToolTip(1, entry.reason)
        leaf.setForeground(1, QBrush(QColor("#b3261e")))
        leaf.setIcon(0, self.style().standardIcon(self.style().StandardPixmap.SP_MessageBoxWarning))
        top.addChild(leaf)
        top.setText(1, plural(top.childCount(), "file"))
        self._update_summary()

    def _update_summary(self) -> None:
        self.summary.setText(f"{plural(len(self.items), 'study', 'studies')} · {len(self.unreadable)} unreadable")

    # -- selection ---------------------------------------------------------------------------------------
    def item_for(self, path) -> BrowserItem | None:
        return self.items.get(Path(path).resolve())

    def select_path(self, path) -> bool:
        node = self._item_nodes.get(Path(path).resolve())
        if node is None:
            return False
        self._select_node(node)
        return True

    def select_first(self, kind: str | None = None) -> bool:
        """Select the first study (of ``kind`` when given); False if there is none."""
        for key, node in self._item_nodes.items():
            if kind is None or self.items[key].kind == kind:
                self.tree.setCurrentItem(node)
                return True
        return False

    def current_item(self) -> BrowserItem | None:
        node = self.tree.currentItem()
        key = node.data(0, ROLE) if node is not None else None
        return self.items.get(Path(key)) if key else None

    def _on_current_changed(self, current: QTreeWidgetItem | None, _previous) -> None:
        key = current.data(0, ROLE) if current is not None else None
        item = self.items.get(Path(key)) if key else None
        self._show_attributes(item, current)
        if item is not None:
            self.study_selected.emit(item)
            return
        bad = self.unreadable.get(Path(current.data(0, UNREADABLE_ROLE))) \
            if current is not None and current.data(0, UNREADABLE_ROLE) else None
        if bad is not None:
            self.selection_cleared.emit(f"{bad.path.name} cannot be opened: {bad.reason}")
        else:
            self.selection_cleared.emit("Select a study (an image) in the Studies list to run an attack.")

    def _show_attributes(self, item: BrowserItem | None, node: QTreeWidgetItem | None) -> None:
        rows: list[tuple[str, str]] = []
        bad = self.unreadable.get(Path(node.data(0, UNREADABLE_ROLE))) \
            if node is not None and node.data(0, UNREADABLE_ROLE) else None
        if bad is not None:  # the reason in full, wrapped
            rows += [("File", bad.path.name), ("Cannot be opened", bad.reason)]
        elif item is not None:
            rows.append(("File", item.path.name))  # the full path is in the tooltip
            rows.append(("Size", f"{item.size[0]} × {item.size[1]} × {item.channels}"))
            if item.n_frames > 1:
                rows.append(("Frames", str(item.n_frames)))
            if item.label:
                rows.append(("Class", item.label))
            rows.append(("Lesion mask", "yes" if item.has_mask else "no"))
            md = item.metadata
            if item.kind == "dicom" and md is not None:
                burned = md.burned_in_annotation or "unknown"
                rows += [("Patient", md.patient_name), ("Patient ID", md.patient_id),
                         ("Study date", _format_date(md.study_date)), ("Study", md.study_description),
                         ("Series", md.series_description or md.series_number), ("Modality", md.modality),
                         ("Manufacturer", md.manufacturer), ("Instance", md.instance_number),
                         ("Burned-in annotation", burned), ("Transfer syntax", md.transfer_syntax),
                         ("Study UID", md.study_uid), ("Series UID", md.series_uid),
                         ("SOP Instance UID", md.sop_instance_uid)]
        elif node is not None and node.toolTip(0):
            rows.append(("", node.toolTip(0)))
        self.attributes.setRowCount(len(rows))
        for r, (name, value) in enumerate(rows):
            self.attributes.setItem(r, 0, QTableWidgetItem(name))
            cell = QTableWidgetItem(value or "")
            cell.setToolTip(str(bad.path if bad is not None else item.path) if name == "File" and (bad or item)
                            else value or "")
            if name == "Cannot be opened":
                cell.setForeground(QBrush(QColor("#b3261e")))
            if name == "Burned-in annotation" and value != "NO":
                cell.setForeground(QBrush(QColor("#b3261e")))
                cell.setToolTip("Ultrasound images often carry burned-in patient text; check before sharing")
            self.attributes.setItem(r, 1, cell)
        self.attributes.resizeColumnToContents(0)
        self.attributes.resizeRowsToContents()


def _format_date(value: str) -> str:
    v = (value or "").strip()
    if len(v) == 8 and v.isdigit():
        return f"{v[:4]}-{v[4:6]}-{v[6:]}"
    return v
