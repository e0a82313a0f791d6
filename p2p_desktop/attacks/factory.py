"""Building attack instances from plain options (CLI flags, evaluation settings, re-runs)."""

from __future__ import annotations

__all__ = ["build_attack", "parse_params"]


def parse_params(items: list[str]) -> dict[str, str]:
    """``--param KEY=VALUE`` items as a dict (dashes in keys become underscores); InputError if malformed."""
    from p2p_desktop.errors import InputError

    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--param {item!r}: expected KEY=VALUE")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def build_attack(name: str, *, preset=None, target=None, eps=None, steps=None, seed=0, params=None):
    """An attack instance from CLI-style options (validated; bad values raise InputError)."""
    from dataclasses import fields

    from p2p_desktop.attacks.registry import get
    from p2p_desktop.errors import InputError

    cls = get(name)
    known = {f.name for f in fields(cls.Config)}
    overrides: dict = dict(params or {})
    overrides["seed"] = seed
    if target:
        overrides["target"] = target
    for key, value in (("eps", eps), ("steps", steps)):
        if value is not None:
            if key not in known:
                raise InputError(f"--{key} does not apply to attack {name!r}")
            overrides[key] = value
    return cls.from_preset(preset, **overrides)
