"""The one progress event of the project: attacks, batch evaluation, PACS transfers and GUI jobs
all report with :class:`Progress`, and the CLI bar and the GUI worker consume only this type.

An attack fills ``loss``, ``probs`` and ``success`` (one event per iteration); a batch job or a
transfer reports ``step`` of ``total`` with a ``message``. ``eta`` is derived from ``elapsed``,
never hand-made by the producer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Progress", "ProgressCallback"]


@dataclass
class Progress:
    """``step`` of ``total`` units done (1-based), after ``elapsed`` seconds."""

    step: int
    total: int
    loss: float | None = None
    probs: dict[str, float] = field(default_factory=dict)
    success: bool | None = None
    message: str = ""
    elapsed: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    start: int = 0  # units already done when ``elapsed`` began (a resumed batch): not part of the pace

    @property
    def fraction(self) -> float:
        """Share done, in [0, 1] (0 when the total is unknown)."""
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace so far, or None before the first unit or past the end."""
        run = self.step - self.start
        if run <= 0 or self.total <= 0 or self.step > self.total or self.elapsed <= 0:
            return None
        return self.elapsed / run * (self.total - self.step)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the ``--json`` progress lines of the CLI)."""
        return {"step": self.step, "total": self.total, "loss": self.loss, "probs": self.probs,
                "success": self.success, "message": self.message, "elapsed": self.elapsed,
                **({"extra": self.extra} if self.extra else {}), **({"start": self.start} if self.start else {})}


ProgressCallback = Callable[[Progress], None]
