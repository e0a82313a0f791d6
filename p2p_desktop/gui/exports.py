"""The window's exports: one action per row of the export-format table
(:mod:`p2p_desktop.jobs.formats`), each running the export job (:func:`p2p_desktop.jobs.export.export`)
on a worker thread: every file or none, and its audit record.

The window asks here for a folder and, for the formats that may carry identity, whether to
de-identify; everything else (writing, naming by pseudonym, auditing) is the job's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QMessageBox

from p2p_desktop.gui.worker import JobRunner
from p2p_desktop.jobs.formats import FORMATS, export_format

__all__ = ["Exports"]

log = logging.getLogger("p2p_desktop.gui")


class _WithholdPseudonyms(logging.Filter):
    """Withholds the pseudonyms of de-identified exports from every record of the GUI's logger
    (``logs/gui.log`` and the Log panel): the log also names the studies that were run, so a
    pseudonym there would link it to its source. A backstop for messages that quote an output's
    path (an export's failure); the exports' own records name neither."""

    def __init__(self) -> None:
        super().__init__()
        self.pseudonyms: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.pseudonyms:
            text = record.getMessage()
            if any(p in text for p in self.pseudonyms):
                for p in self.pseudonyms:
                    text = text.replace(p, "deid-(withheld)")
                record.msg, record.args = text, None
        return True


_withheld = _WithholdPseudonyms()
log.addFilter(_withheld)


class Exports(QObject):
    """Exports of the run shown in the results view (``window.current_entry()``)."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.runner = JobRunner(window)
        self.runner.succeeded.connect(self._on_done)
        self.runner.failed.connect(
            lambda msg, details: window.show_error(f"{self.label()} export failed", msg, details))
        self.what = ""  # the key of the running (or last) export
        self.deidentified = False  # whether it is de-identified
        self.last: list[str] = []  # the files the last export wrote
        self._pseudonyms: dict = {}  # run number -> pseudonym of its de-identified exports

    def label(self) -> str:
        return FORMATS[self.what].label if self.what in FORMATS else self.what

    def update_actions(self, actions: dict[str, Any], can_export: bool) -> None:
        """Enable the export actions when a run is shown and no export is running."""
        for action in actions.values():
            action.setEnabled(can_export and not self.runner.is_running())

    def pseudonym(self) -> str:
        """The shown run's pseudonym for de-identified exports: random, made once per run, so its
        de-identified DICOM and report share it (kept in memory only, never written)."""
        from p2p_desktop.export.deidentify import pseudonym

        entry = self.window.current_entry()
        key = entry.number if entry is not None else None
        if key not in self._pseudonyms:
            self._pseudonyms[key] = pseudonym()
            _withheld.pseudonyms.add(self._pseudonyms[key])
        return self._pseudonyms[key]

    def _ask_deidentify(self, fmt, entry) -> bool | None:
        """The format's de-identification question; None when cancelled."""
        buttons = QMessageBox.StandardButton
        default = fmt.deidentify_default or entry.number in self._pseudonyms
        answer = QMessageBox.question(self.window, fmt.action_text.rstrip("…"), fmt.deidentify_question,
                                      buttons.Yes | buttons.No | buttons.Cancel, buttons.Yes if default else buttons.No)
        if answer == buttons.Cancel:
            return None
        return answer == buttons.Yes

    def export(self, key: str, folder: str | None = None, *, value: Any = None,
               deidentify: bool | None = None) -> bool:
        """Export the shown run as format ``key`` into ``folder`` (asked when None). A format that
        may carry identity asks whether to de-identify unless ``deidentify`` is given (plain when
        called with a folder, as scripts and tests do). False when refused or cancelled."""
        fmt = export_format(key)
        window = self.window
        entry = window.current_entry()
        if entry is None or self.runner.is_running():
            return False
        if folder is None:  # asked first, and checked before any other question
            folder = self._folder(fmt.label, entry.study)
            if not folder:
                return False
            if deidentify is None and fmt.asks_deidentify:
                deidentify = self._ask_deidentify(fmt, entry)
                if deidentify is None:
                    return False
        if not fmt.asks_deidentify or deidentify is None:
            deidentify = False  # a folder given by the caller (scripts, tests): plain unless asked
        from p2p_desktop.export.provenance import model_spec
        from p2p_desktop.jobs.export import export

        result, study = entry.result, entry.study
        name = self.pseudonym() if deidentify else None
        clf_spec = model_spec(entry.classifier_spec or None)
        bb_spec = model_spec(entry.backbone_spec) if result.backbone is not None else None
        value = fmt.default if value is None else value
        notes_before = len(result.notes)

        def job(report, status, cancel):
            status(f"exporting {key} to {folder}…")
            records = export(result, study, key, folder, value=value, deidentify=bool(deidentify), pseudonym=name,
                             classifier_spec=clf_spec, backbone_spec=bb_spec, cancel=cancel)
            return [r["path"] for r in records], list(result.notes[notes_before:])

        self.what, self.deidentified = key, bool(deidentify)
        self.runner.start(job, title=f"export {key}")
        window._update_actions()
        return True

    def _folder(self, label: str, study) -> str | None:
        """The folder picker, opened where this study's exports are allowed (the last export
        folder, else the documents folder or home); a folder the export would refuse (inside the
        input's folder) is refused here at once, with the reason. None when cancelled or refused."""
        from p2p_desktop.errors import OutputError
        from p2p_desktop.io.outputs import check_output_dir, export_start_folder

        settings = self.window.settings
        start = export_start_folder(settings.export_folder, [study.path])
        folder = QFileDialog.getExistingDirectory(self.window, f"Export {label} to folder", str(start))
        if not folder:
            return None
        try:
            check_output_dir(folder, [study.path])
        except OutputError as exc:
            self.window.show_error(f"{label} export failed", str(exc))
            return None
        settings.export_folder = folder
        return folder

    def _on_done(self, outcome) -> None:
        from p2p_desktop.gui.browser import plural

        paths, warnings = outcome
        self.last = paths
        if self.deidentified:  # no file name: the log names the study the run was on
            log.info("de-identified %s export: %s (names in the audit log)", self.what, plural(len(paths), "file"))
        else:
            log.info("%s export (recorded in the audit log): %s", self.what, ", ".join(paths))
        for w in warnings:
            log.warning("%s export: %s", self.what, w)
        folder = str(Path(paths[0]).parent) if paths else ""
        self.window.show_status(f"{self.label()} export: {plural(len(paths), 'file')} in {folder}"
                                + (f" — {warnings[0]}" if warnings else ""))
        # a warning must be read in full (e.g. pixels NOT cleaned): a banner above the images
        self.window.show_warning_banner("\n".join(f"⚠ {self.label()} export: {w}" for w in warnings))
        results = self.window.results
        if results.entry is not None:
            results.show_entry(results.entry)  # exporters may add notes
