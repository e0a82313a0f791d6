"""The attack registry. Built-in attacks register exactly like plugins: by name -> ``module:attr``.

Nothing is imported until an attack is asked for, so a broken attack is reported, not fatal.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from p2p_desktop.errors import InputError

__all__ = ["AttackSpec", "BUILTIN", "register", "available", "get", "spec"]


@dataclass(frozen=True)
class AttackSpec:
    name: str
    target: str  # "package.module:ClassName"
    summary: str = ""
    requires_backbone: bool = False
    source: str = "builtin"  # "builtin" or "plugin"
    loader: Callable[[], Any] | None = field(default=None, compare=False)  # plugins import through this


BUILTIN: tuple[AttackSpec, ...] = (
    AttackSpec("fgsm", "p2p_desktop.attacks.fgsm:FGSM", "Fast Gradient Sign Method (one L∞/L2 step)"),
    AttackSpec("pgd", "p2p_desktop.attacks.pgd:PGD", "Projected Gradient Descent (L∞/L2, random start)"),
    AttackSpec("diff-pgd", "p2p_desktop.attacks.diff_pgd:DiffPGD",
               "Diff-PGD: PGD through SDEdit on a latent diffusion backbone", True),
    AttackSpec("p2p", "p2p_desktop.attacks.p2p:P2P",
               "Prompt2Perturb: learnable text conditioning of a frozen latent diffusion model", True),
)

_specs: dict[str, AttackSpec] = {s.name: s for s in BUILTIN}


def register(spec: AttackSpec) -> None:
    """Register an attack (used by the plugin loader)."""
    _specs[spec.name] = spec


def _with_plugins() -> None:
    from p2p_desktop import plugins

    plugins.register_enabled()


def available() -> list[AttackSpec]:
    """Built-in attacks and enabled attack plugins."""
    _with_plugins()
    return list(_specs.values())


def spec(name: str) -> AttackSpec:
    _with_plugins()
    try:
        return _specs[name]
    except KeyError:
        from p2p_desktop import plugins

        info = plugins.find(name)
        if info is not None and info.kind == "attack":
            plugins.load_plugin_object(info)  # raises the "not enabled / broken" message
        raise InputError(f"unknown attack {name!r}: choose one of {', '.join(_specs)}") from None


def get(name: str):
    """Import and return the attack class registered as ``name``."""
    s = spec(name)
    if s.loader is not None:
        return s.loader()
    module_name, _, attr = s.target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except Exception as exc:  # noqa: BLE001 - a broken attack must not crash the app
        raise InputError(f"attack {name!r} could not be loaded from {s.target}: {exc}") from None
    return cls
