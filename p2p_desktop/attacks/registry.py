"""The attack registry: a passive table of name -> ``module:attr``.

Built-in attacks are one row each in :data:`BUILTIN`; plugins are added once at start-up by
:func:`p2p_desktop.plugins.load_plugins` (this module never imports the plugin loader). What an
attack is — its summary and its needs (``requires_backbone``) — is read from its class, never
repeated here. Nothing is imported until an attack is asked for, so a broken attack is
reported, not fatal.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p2p_desktop.errors import InputError

__all__ = ["AttackSpec", "BUILTIN", "register", "unregister", "mark_unavailable", "clear_plugins", "available",
           "get", "spec"]


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: its name and where its class lives.

    ``summary`` and ``requires_backbone`` come from the class. A plugin's class is imported only
    when it is asked for, so until then its manifest's summary (``manifest_summary``) stands in.
    """

    name: str
    target: str  # "package.module:ClassName"
    manifest_summary: str = ""  # plugins: the manifest's words, shown until the class is imported
    source: str = "builtin"  # "builtin" or "plugin"
    loader: Callable[[], Any] | None = field(default=None, compare=False)  # plugins import through this

    def attack_class(self):
        """The attack class (imported on first use; a broken one raises :class:`InputError`)."""
        return get(self.name)

    @property
    def summary(self) -> str:
        """One line on what the attack does: the class's ``summary``."""
        cls = _classes.get(self.name)
        if cls is None and self.source == "builtin":
            try:
                cls = self.attack_class()
            except InputError:
                cls = None
        if cls is not None and getattr(cls, "summary", ""):
            return str(cls.summary)
        return self.manifest_summary or f"plugin {self.name}"

    @property
    def control(self) -> bool:
        """Whether the attack is a control (the class's ``control``), named so in every table."""
        try:
            return bool(getattr(self.attack_class(), "control", False))
        except InputError:
            return False

    @property
    def requires_backbone(self) -> bool:
        """Whether the attack needs a latent diffusion backbone (the class's ``requires_backbone``)."""
        return bool(getattr(self.attack_class(), "requires_backbone", False))


#: The built-in attacks, one row each; adding a row (and its file) is all a new attack needs.
BUILTIN: tuple[AttackSpec, ...] = (
    AttackSpec("fgsm", "p2p_desktop.attacks.fgsm:FGSM"),
    AttackSpec("pgd", "p2p_desktop.attacks.pgd:PGD"),
    AttackSpec("diff-pgd", "p2p_desktop.attacks.diff_pgd:DiffPGD"),
    AttackSpec("p2p", "p2p_desktop.attacks.p2p:P2P"),
    AttackSpec("deepfool", "p2p_desktop.attacks.deepfool:DeepFool"),
    # controls (``control = True``): baselines that show how much of P2P's effect its optimisation does
    AttackSpec("random-prompt", "p2p_desktop.attacks.random_prompt:RandomPrompt"),
    AttackSpec("p2p-lr0", "p2p_desktop.attacks.p2p_lr0:P2PLr0"),
    AttackSpec("rerender", "p2p_desktop.attacks.rerender:Rerender"),
)

_specs: dict[str, AttackSpec] = {s.name: s for s in BUILTIN}
_unavailable: dict[str, str] = {}  # known plugin names that cannot run (disabled, changed): why
_classes: dict[str, type] = {}  # plugin classes imported this session (their summary then shows)


def register(spec: AttackSpec) -> None:
    """Register an attack (the plugin loader does, once at start-up and on refresh)."""
    _specs[spec.name] = spec
    _unavailable.pop(spec.name, None)
    _classes.pop(spec.name, None)


def unregister(name: str) -> None:
    """Remove a registered attack (built-ins stay)."""
    if name in _specs and _specs[name].source != "builtin":
        _specs.pop(name)
    _unavailable.pop(name, None)
    _classes.pop(name, None)


def mark_unavailable(name: str, reason: str) -> None:
    """A known attack (a plugin not enabled, say) that cannot run: ``spec(name)`` raises ``reason``."""
    if name not in _specs:
        _unavailable[name] = reason


def clear_plugins() -> None:
    """Forget everything plugins registered (before a refresh)."""
    for name in [n for n, s in _specs.items() if s.source != "builtin"]:
        unregister(name)
    _unavailable.clear()


def available() -> list[AttackSpec]:
    """Built-in attacks and registered (enabled) attack plugins."""
    return list(_specs.values())


def spec(name: str) -> AttackSpec:
    """The registered spec of attack ``name``; InputError if it is unknown or unavailable (and why)."""
    try:
        return _specs[name]
    except KeyError:
        if name in _unavailable:
            raise InputError(_unavailable[name]) from None
        raise InputError(f"unknown attack {name!r}: choose one of {', '.join(_specs)}") from None


def get(name: str):
    """Import and return the attack class registered as ``name``."""
    s = spec(name)
    if s.loader is not None:
        cls = s.loader()
        _classes[name] = cls
        return cls
    module_name, _, attr = s.target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except Exception as exc:  # noqa: BLE001 - a broken attack must not crash the app
        raise InputError(f"attack {name!r} could not be loaded from {s.target}: {exc}") from None
    _classes[name] = cls
    return cls
