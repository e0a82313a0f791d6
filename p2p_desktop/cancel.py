"""Cooperative cancellation shared by attacks, evaluation and export."""

from __future__ import annotations

import threading

from p2p_desktop.errors import Cancelled

__all__ = ["CancelToken"]


class CancelToken:
    """Thread-safe flag. Long loops call :meth:`check` once per step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if :meth:`cancel` was called."""
        if self._event.is_set():
            raise Cancelled("cancelled by the user")
