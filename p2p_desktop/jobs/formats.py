"""THE export-format table: one row per thing a run can be exported as.

The CLI flags of ``attack`` (and what ``rerun`` repeats), the GUI's export actions (menu, tool
bar, results tool bar) and the writer of a run's outputs (:func:`p2p_desktop.jobs.attack.write_run_outputs`)
all read :data:`FORMATS`; a new format is one row here plus its writer function::

    ExportFormat("tiff", "TIFF", ".tif", _write_tiff, cli_flag="--export-tiff", ...)

A row's writer is ``write(result, study, outs, value, ctx)``: ``value`` is the option's value
(True for an on/off flag, the parsed value of a flag with one), ``ctx`` the :class:`WriteContext`.
Writers import their heavy modules when called, so reading the table costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ExportFormat", "WriteContext", "FORMATS", "export_format", "cli_formats", "deidentifiable"]


@dataclass(frozen=True)
class WriteContext:
    """What a writer may need beyond the result, the study and the output set."""

    input_sha256: str | None = None
    deidentify: bool = False
    audit_log: Any = None  # the log whose chain head a report shows
    label: str | None = None  # the true label the user gave, if any


@dataclass(frozen=True)
class ExportFormat:
    """One export format (see the module docstring)."""

    key: str  # short name: the audit record's ``what``, the ``exports`` key of write_run_outputs
    label: str  # shown in messages: "DICOM export failed"
    suffix: str  # the file suffix it writes
    write: Callable[..., Any]  # write(result, study, outs, value, ctx)
    asks_deidentify: bool = False  # the GUI asks "de-identify?"; the CLI's --deidentify applies to it
    cli_flag: str | None = None  # the ``attack`` option; None: not a CLI option (always written)
    cli_help: str = ""
    cli_metavar: str | None = None  # the option takes a value (parsed by ``parse``); None: on/off
    parse: Callable[[str], Any] | None = None
    default: Any = True  # the value when exported from the GUI without choosing one
    action_text: str = ""  # the GUI action
    action_tip: str = ""
    deidentify_question: str = ""  # the GUI's question when ``asks_deidentify``
    deidentify_default: bool = True  # its default answer for a run with no pseudonym yet
    shortcut: str | None = None
    icon: str | None = None  # a QStyle.StandardPixmap name
    whole_record: bool = False  # lists the run's outputs: written after the provenance and result JSON, and
    # its GUI export writes the whole record, as ``attack`` does (PNG, perturbation, provenance, result JSON)

    @property
    def option(self) -> str | None:
        """The argparse destination of :attr:`cli_flag`, also the key in a provenance's ``options``."""
        return self.cli_flag.lstrip("-").replace("-", "_") if self.cli_flag else None

    def recorded(self, value: Any) -> Any:
        """``value`` as a provenance's ``options`` records it (bool, or a list for a valued option)."""
        if self.cli_metavar:
            return list(value) if isinstance(value, (list, tuple)) else list(self.default) if value else []
        return bool(value)


# -- writers -------------------------------------------------------------------------------------------
def _write_images(result, study, outs, value, ctx: WriteContext) -> None:
    from p2p_desktop.export.images import write_image_outputs

    write_image_outputs(result, study, outs)


def _write_dicom(result, study, outs, value, ctx: WriteContext) -> None:
    from p2p_desktop.export.dicom import export_dicom

    export_dicom(result, study, outs, deidentify=ctx.deidentify)


def _write_tiff(result, study, outs, value, ctx: WriteContext) -> None:
    from p2p_desktop.export.tiff import write_tiff

    write_tiff(result, study, outs)


def _write_reports(result, study, outs, value, ctx: WriteContext) -> None:
    from p2p_desktop.export.report import REPORT_FORMATS, write_reports

    write_reports(result, study, outs, tuple(value) if isinstance(value, (tuple, list)) else REPORT_FORMATS,
                  input_sha256=ctx.input_sha256, deidentified=ctx.deidentify, audit_log=ctx.audit_log,
                  given_label=ctx.label)


def _parse_reports(text: str) -> tuple[str, ...]:
    from p2p_desktop.export.report import parse_formats

    return parse_formats(text)


#: The de-identify question of the formats that hold pixels only (no header to clean).
_PLAIN_DEID = ("Yes names the {what} by the run's random pseudonym, not after the source, and their audit "
               "record leaves out the input's path and SHA-256. Burned-in text in the pixels is not removed.")


# -- the table (order = order of writing, of the CLI options and of the GUI actions) ----------------------
FORMATS: dict[str, ExportFormat] = {f.key: f for f in (
    ExportFormat("png", "PNG", ".png", _write_images, asks_deidentify=True,
                 action_text="Export PNG…", shortcut="Ctrl+E", icon="SP_DialogSaveButton",
                 action_tip="Save the adversarial image (PNG) and the perturbation (.npy)",
                 deidentify_question="De-identify the exported files?\n\n" + _PLAIN_DEID.format(what="PNG and .npy"),
                 deidentify_default=False),
    ExportFormat("dicom", "DICOM", ".dcm", _write_dicom, asks_deidentify=True,
                 cli_flag="--export-dicom",
                 cli_help="also write the adversarial image as a DICOM derived from the source "
                          "(Secondary Capture for plain images)",
                 action_text="Export DICOM…", icon="SP_DriveHDIcon",
                 action_tip="Save the adversarial image as a derived DICOM",
                 deidentify_question="De-identify the exported file (DICOM PS3.15 basic profile)?\n\n"
                                     "Ultrasound images often carry burned-in patient text, which de-identification "
                                     "cannot remove from the pixels."),
    ExportFormat("tiff", "TIFF", ".tif", _write_tiff, cli_flag="--export-tiff",
                 cli_help="also write the adversarial image as a 16-bit TIFF (grey or RGB)",
                 action_text="Export TIFF…", icon="SP_FileIcon",
                 action_tip="Save the adversarial image as a 16-bit TIFF", asks_deidentify=True,
                 deidentify_question="De-identify the exported file?\n\n" + _PLAIN_DEID.format(what="TIFF"),
                 deidentify_default=False),
    ExportFormat("report", "Report", ".html", _write_reports, asks_deidentify=True, whole_record=True,
                 cli_flag="--report", cli_metavar="FORMATS", parse=_parse_reports,
                 cli_help="audit report formats, comma-separated: html, pdf (e.g. --report html,pdf)",
                 default=("html", "pdf"), action_text="Export report…", icon="SP_FileDialogDetailedView",
                 action_tip="Save an HTML/PDF report of the run",
                 deidentify_question="De-identify the report?\n\nYes leaves out the patient attributes, the "
                                     "input's path and its SHA-256, and names the files by a random pseudonym.",
                 deidentify_default=False),
)}


def export_format(key: str) -> ExportFormat:
    """The row of ``key`` (KeyError names the known ones)."""
    try:
        return FORMATS[key]
    except KeyError:
        raise KeyError(f"unknown export format {key!r} (known: {', '.join(FORMATS)})") from None


def cli_formats() -> list[ExportFormat]:
    """The rows that are ``attack`` options, in table order."""
    return [f for f in FORMATS.values() if f.cli_flag]


def deidentifiable() -> list[ExportFormat]:
    """The CLI rows ``--deidentify`` applies to."""
    return [f for f in cli_formats() if f.asks_deidentify]
