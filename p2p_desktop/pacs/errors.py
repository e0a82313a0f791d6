"""The one error type of the PACS package."""

from __future__ import annotations

from p2p_desktop.errors import InputError

__all__ = ["PacsError"]


class PacsError(InputError):
    """A network or protocol failure, or a bad node: one readable line (CLI exit 2)."""
