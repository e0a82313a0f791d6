"""Exceptions the user sees. Each carries one readable line.

``InputError``  -> CLI exit 2 (bad file, bad parameter, missing model)
``Cancelled``   -> CLI exit 3 (user cancelled; nothing written)
anything else   -> CLI exit 1 (internal error, traceback goes to a log file)
"""

from __future__ import annotations

__all__ = ["P2PError", "InputError", "ModelError", "UnsafeFileError", "Cancelled", "OutputError",
           "OutOfMemory"]


class P2PError(Exception):
    """Base class of the errors this program reports to users."""

    exit_code = 1


class InputError(P2PError):
    """Bad input: unreadable study, invalid parameter, wrong arguments."""

    exit_code = 2


class ModelError(InputError):
    """A model file or folder is missing, malformed or does not match its card."""


class UnsafeFileError(InputError):
    """A file would execute code if loaded (pickle payload, TorchScript, remote code)."""


class OutputError(InputError):
    """An output cannot be written where asked (inside the input study, disk full, ...)."""


class Cancelled(P2PError):
    """The user cancelled the job; nothing was written."""

    exit_code = 3


class OutOfMemory(P2PError):
    """The device ran out of memory, also after a retry at lower cost where one exists."""

    exit_code = 1
