"""Typed, frozen, validated configs shared by the GUI forms, the CLI, reports and re-runs.

Declare fields with :func:`param`; the metadata (help, bounds, choices) drives validation,
GUI form generation and tooltips::

    @dataclass(frozen=True)
    class PGDConfig(AttackConfig):
        eps: float = param(0.05, help="L∞/L2 budget in [0,1] pixel units", min=0.0, max=1.0)
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

from p2p_desktop.errors import InputError

__all__ = ["param", "Config", "field_specs", "FieldSpec"]

T = TypeVar("T", bound="Config")


def param(default: Any, *, help: str, min: float | None = None, max: float | None = None,
          choices: tuple | None = None, min_exclusive: bool = False, advanced: bool = False,
          label: str | None = None) -> Any:
    """A config field with the metadata used for validation, the GUI and ``--help``."""
    meta = {"help": help, "min": min, "max": max, "choices": choices,
            "min_exclusive": min_exclusive, "advanced": advanced, "label": label}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults in frozen configs")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldSpec:
    """One config field as the CLI, the GUI forms and provenance see it: name, type, default, help, bounds."""

    name: str
    type: Any  # the resolved annotation
    default: Any
    help: str
    min: float | None
    max: float | None
    choices: tuple | None
    advanced: bool
    label: str
    optional: bool
    min_exclusive: bool = False


def _resolved_hints(cls) -> dict[str, Any]:
    import sys

    module = sys.modules.get(cls.__module__)
    return typing.get_type_hints(cls, globalns=vars(module) if module else None)


def field_specs(cls_or_obj) -> list[FieldSpec]:
    """The :class:`FieldSpec` of each init field of a config dataclass (or of an instance's class), in order."""
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    hints = _resolved_hints(cls)
    specs = []
    for f in fields(cls):
        if not f.init:
            continue
        tp = hints.get(f.name, f.type)
        args = typing.get_args(tp)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), tp) if optional else tp
        m = f.metadata
        specs.append(FieldSpec(
            name=f.name, type=base, default=f.default if f.default is not MISSING else None,
            help=m.get("help", ""), min=m.get("min"), max=m.get("max"), choices=m.get("choices"),
            advanced=bool(m.get("advanced", False)), label=m.get("label") or f.name.replace("_", " "),
            optional=optional, min_exclusive=bool(m.get("min_exclusive", False)),
        ))
    return specs


@dataclass(frozen=True)
class Config:
    """Base for frozen configs: validates on construction, round-trips through dicts."""

    def __post_init__(self) -> None:
        for spec in field_specs(self):
            value = getattr(self, spec.name)
            object.__setattr__(self, spec.name, self._check(spec, value))
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; raise :class:`InputError`. Subclasses extend."""

    def _check(self, spec: FieldSpec, value: Any) -> Any:
        name = f"{type(self).__name__.removesuffix('Config').lower() or 'config'}.{spec.name}"
        if value is None or (value == "" and spec.optional):
            if spec.optional:
                return None
            raise InputError(f"{name}: a value is required")
        tp = spec.type
        try:
            if tp is bool:
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                        raise ValueError(value)
                    value = low in ("1", "true", "yes", "on")
                else:
                    value = bool(value)
            elif tp is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError(value)
                value = int(value)
            elif tp is float:
                if isinstance(value, bool):
                    raise ValueError(value)
                value = float(value)
                if value != value or value in (float("inf"), float("-inf")):
                    raise ValueError(value)
            elif tp is str:
                value = str(value)
        except (TypeError, ValueError):
            raise InputError(f"{name}: {value!r} is not a valid {getattr(tp, '__name__', tp)}") from None
        if spec.choices is not None and value not in spec.choices:
            raise InputError(f"{name}: {value!r} is not one of {', '.join(map(str, spec.choices))}")
        if spec.min is not None and isinstance(value, (int, float)):
            if spec.min_exclusive and value <= spec.min:
                raise InputError(f"{name}: must be greater than {spec.min}, got {value}")
            if value < spec.min:
                raise InputError(f"{name}: must be at least {spec.min}, got {value}")
        if spec.max is not None and isinstance(value, (int, float)) and value > spec.max:
            raise InputError(f"{name}: must be at most {spec.max}, got {value}")
        return value

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"{cls.__name__}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)

    def replace(self: T, **changes: Any) -> T:
        return self.from_dict({**self.to_dict(), **changes})
