"""What every reader needs, in one module below them all: one-line load errors, the
regular-file check, and the file-type sniffing by content (``DICM`` marker, image magic).

The readers (:mod:`.dicom`, :mod:`.images`) and the dispatcher (:mod:`.loader`) import this
module and never each other's private helpers, so there is no import cycle among them:
``loader`` → ``dicom``/``images`` → ``files``.
"""

from __future__ import annotations

from pathlib import Path

from p2p_desktop.errors import InputError

__all__ = ["DICOM_SUFFIXES", "one_line", "input_error", "describe", "check_regular_file",
           "sniff_image_format", "has_dicom_marker"]

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)


def one_line(text: object, limit: int = 300) -> str:
    """``text`` as one printable line (control characters escaped), at most ``limit`` long."""
    text = " ".join(str(text).split())
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def input_error(path: Path, reason: str) -> InputError:
    """The one-line :class:`InputError` every loader raises: ``cannot load PATH: reason``."""
    return InputError(one_line(f"cannot load {path}: {one_line(reason)}", 600))


def describe(exc: BaseException) -> str:
    """``TypeName: message`` of an exception on one short line (the name alone if no message)."""
    msg = one_line(str(exc), 200)
    name = type(exc).__name__
    return f"{name}: {msg}" if msg else name


def check_regular_file(path: Path, folder_hint: str = "") -> None:
    """Refuse a missing path, a folder (``folder_hint`` in brackets after the reason) and
    anything not a regular file (a pipe, socket or device would block or never end)."""
    if not path.exists():
        raise input_error(path, "no such file")
    if path.is_dir():
        raise input_error(path, "is a folder, not a file" + (f" ({folder_hint})" if folder_hint else ""))
    if not path.is_file():
        raise input_error(path, "not a regular file (a pipe, socket or device); refused")


def sniff_image_format(head: bytes) -> str | None:
    """'PNG', 'JPEG', 'TIFF' or 'BMP' from a file's first bytes, else None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def has_dicom_marker(head: bytes) -> bool:
    """Whether a file's first 132 bytes end with the ``DICM`` marker of a DICOM file."""
    return len(head) == 132 and head[128:132] == b"DICM"
