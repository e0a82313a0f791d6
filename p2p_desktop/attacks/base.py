"""The one interface every attack implements (built-in or plugin).

An attack is a small class with a frozen ``Config`` and a ``run`` method::

    class PGD(Attack):
        name = "pgd"
        Config = PGDConfig
        def run(self, x, ctx) -> AttackOutput: ...

``run`` receives the image as a (1, C, H, W) float tensor in [0, 1] in the source's geometry
and an :class:`AttackContext`. It must call ``ctx.step(...)`` once per iteration (which
reports progress and raises :class:`~p2p_desktop.errors.Cancelled` when the user cancels),
and return the adversarial image — in the source's geometry, or at the attack's working
resolution (the runner maps it back). It never writes files.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from p2p_desktop.cancel import CancelToken
from p2p_desktop.config import Config, param
from p2p_desktop.errors import InputError
from p2p_desktop.progress import Progress

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from p2p_desktop.models.classifier import Classifier

__all__ = ["AttackConfig", "StepEvent", "StepCallback", "AttackContext", "AttackOutput", "Attack"]


@dataclass(frozen=True)
class AttackConfig(Config):
    """Fields every attack has."""

    seed: int = param(0, help="Random seed: same seed + same device gives the same output.", min=0, max=2**63 - 1)
    target: str | None = param(
        None, help="Target class for a targeted attack; empty means untargeted (any wrong class)."
    )


#: One iteration of an attack: the project's one progress event (:class:`p2p_desktop.progress.Progress`).
StepEvent = Progress
StepCallback = Callable[[StepEvent], None]


@dataclass
class AttackContext:
    """What an attack needs besides the image: the model, labels, backbone, reporting."""

    classifier: Classifier
    label: int  # index of the true class
    target: int | None  # index of the target class (targeted mode) or None
    device: str = "cpu"
    backbone: Any = None  # p2p_desktop.models.backbone.Backbone for diffusion attacks
    on_step: StepCallback | None = None
    cancel: CancelToken = field(default_factory=CancelToken)
    generator: Any = None  # torch.Generator seeded from the config
    history: list[StepEvent] = field(default_factory=list)
    # Maps an attack output (1, C, h, w) in [0,1] to the image exactly as it will be written
    # (source geometry, quantised to the source's levels), on the classifier's device. Set by
    # the runner; attacks that pick among candidates use it so their verdict is the written one.
    written: Callable[[Any], Any] | None = None
    # The study being attacked (set by the runner): the rerender control reads its generator record.
    study: Any = None
    # What the attack a control stands against found on this image (its output info, e.g. P2P's
    # ``parameter_change`` and iterations), when the caller ran it first (``evaluate`` does).
    reference: dict[str, Any] | None = None
    _t0: float = field(default_factory=time.perf_counter)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.classifier.classes

    def is_adversarial(self, pred: int) -> bool:
        """Targeted: predicted == target. Untargeted: predicted != true label."""
        return pred == self.target if self.target is not None else pred != self.label

    def step(self, step: int, total: int, loss: float, probs, *, success: bool | None = None,
             message: str = "", **extra: Any) -> None:
        """Report one iteration, then honour a pending cancel (raises ``Cancelled``)."""
        if hasattr(probs, "detach"):
            probs = probs.detach().float().cpu().reshape(-1).tolist()
        if not isinstance(probs, dict):
            probs = {c: float(p) for c, p in zip(self.classes, probs)}
        event = StepEvent(step=step, total=total, loss=float(loss), probs=probs, success=success,
                          message=message, elapsed=time.perf_counter() - self._t0, extra=extra)
        self.history.append(event)
        if self.on_step is not None:
            self.on_step(event)
        self.cancel.check()


@dataclass
class AttackOutput:
    """What ``Attack.run`` returns."""

    adversarial: torch.Tensor  # (1, C, h, w) in [0,1]
    iterations: int
    info: dict[str, Any] = field(default_factory=dict)  # e.g. nearest words, chosen t


class Attack(ABC):
    """Base class: subclasses set ``name``, ``Config``, ``summary`` and implement ``run``."""

    name: ClassVar[str]
    Config: ClassVar[type[AttackConfig]] = AttackConfig
    summary: ClassVar[str] = ""
    requires_backbone: ClassVar[bool] = False
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: A control: a baseline that shows how much of an attack's effect its optimisation does (a
    #: random change of the same size, the same pipeline without learning, a re-acquisition).
    #: Tables name controls as such (``"control": true``).
    control: ClassVar[bool] = False
    #: The attack a control stands against (its presets follow that attack's in ``evaluate``).
    control_for: ClassVar[str | None] = None
    #: One line on what a control compares against (the tables' notes print it).
    control_note: ClassVar[str] = ""

    def __init__(self, config: AttackConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = self.Config(**overrides)
        elif overrides:
            config = config.replace(**overrides)
        if not isinstance(config, self.Config):
            raise InputError(f"{self.name}: expected {self.Config.__name__}, got {type(config).__name__}")
        self.config = config

    @classmethod
    def from_preset(cls, preset: str | None, **overrides: Any) -> Attack:
        base: dict[str, Any] = {}
        if preset:
            if preset not in cls.presets:
                known = ", ".join(cls.presets) or "none"
                raise InputError(f"{cls.name}: unknown preset {preset!r} (known: {known})")
            base = dict(cls.presets[preset])
        return cls(cls.Config.from_dict({**base, **overrides}))

    @abstractmethod
    def run(self, x: torch.Tensor, ctx: AttackContext) -> AttackOutput:
        """Attack the (1, C, H, W) image ``x`` in [0,1]; report each step with ``ctx.step``."""

    def total_steps(self) -> int:
        """How many steps ``run`` will report at most (for progress bars)."""
        return int(getattr(self.config, "steps", 1))

    def cheaper(self) -> Attack | None:
        """The same attack at lower memory cost (same method, e.g. fewer timesteps per batch), or
        None. The runner retries once with it after an out-of-memory error."""
        return None
