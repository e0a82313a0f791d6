"""Registered models: the embedded demo bundle (``resources/models/*/card.json``) and plugins.

A passive table: plugins are added once at start-up by :func:`p2p_desktop.plugins.load_plugins`
(this module never imports the plugin loader, nor the model loaders). :func:`resolve` is the one
place a model name becomes an entry; ``load_classifier`` and ``load_backbone`` call it.

A card names its files and their SHA-256. A classifier card has ``weights`` + ``sha256``;
a backbone card (``kind: "backbone"``) has ``files: {relative path: sha256}`` covering the
whole diffusers folder. ``verify`` re-hashes; a model whose hash does not match is reported
and never loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2p_desktop.errors import ModelError
from p2p_desktop.hashing import sha256_file
from p2p_desktop.paths import models_dir

__all__ = ["ModelEntry", "entries", "find", "names", "resolve", "verify_entry", "register", "unregister",
           "clear_plugins"]


@dataclass
class ModelEntry:
    """A registered model (classifier or backbone): its name, kind, card and where it comes from."""

    name: str
    kind: str  # "classifier" or "backbone"
    path: Path  # the card (or plugin manifest)
    card: dict[str, Any] = field(default_factory=dict)
    loader: Callable[..., Any] | None = None  # plugins supply their own loader
    source: str = "bundle"

    def files(self) -> dict[Path, str | None]:
        """Every file the model consists of, with its expected SHA-256."""
        base = self.path.parent
        if "files" in self.card:
            return {base / rel: digest for rel, digest in self.card["files"].items()}
        if "weights" in self.card:
            return {base / self.card["weights"]: self.card.get("sha256")}
        return {}

    @property
    def folder(self) -> Path:
        return self.path.parent


_extra: dict[str, ModelEntry] = {}
_verified: dict[tuple[str, tuple], str] = {}


def register(entry: ModelEntry) -> None:
    """Add a model from a plugin (or a test) to the registry."""
    _extra[entry.name] = entry


def unregister(name: str) -> None:
    """Remove a model added with :func:`register` (bundled models stay)."""
    _extra.pop(name, None)


def clear_plugins() -> None:
    """Forget every model a plugin registered (before a refresh)."""
    for name in [n for n, e in _extra.items() if e.source == "plugin"]:
        _extra.pop(name)


def _bundle_entries() -> list[ModelEntry]:
    out: list[ModelEntry] = []
    root = models_dir()
    if not root.is_dir():
        return out
    for card_path in sorted(root.glob("*/card.json")):
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            card = {"name": card_path.parent.name, "kind": "unknown", "_error": "card.json unreadable"}
        out.append(ModelEntry(name=str(card.get("name", card_path.parent.name)),
                              kind=str(card.get("kind", "classifier")), path=card_path, card=card))
    return out


def entries(kind: str | None = None) -> list[ModelEntry]:
    """Registered models (bundled, then added), optionally only those of ``kind``."""
    items = _bundle_entries() + list(_extra.values())
    return [e for e in items if kind is None or e.kind == kind]


def names(kind: str | None = None) -> list[str]:
    """Names of the registered models, optionally only those of ``kind``."""
    return [e.name for e in entries(kind)]


def find(name: str) -> ModelEntry | None:
    """The registered model called ``name``, or None."""
    for e in entries():
        if e.name == name:
            return e
    return None


def resolve(name: str, kind: str, otherwise: str = "") -> ModelEntry:
    """The registered ``kind`` model called ``name``; a bundled one only once its files verify.

    ``otherwise`` names what else the caller accepts (paths), for the not-found message.
    """
    entry = find(name)
    if entry is None or (entry.kind != kind and "_error" not in entry.card):  # an unreadable card: "invalid"
        known = ", ".join(names(kind)) or "none registered"
        raise ModelError(f"{kind} {name!r} not found: give a registered name ({known})"
                         + (f", {otherwise}" if otherwise else ""))
    if entry.source == "bundle":
        status = verify_entry(entry)
        if status != "verified":
            raise ModelError(f"{kind} {entry.name!r} in {entry.folder} is {status}: its files do not match "
                             "card.json (run `p2p-desktop models verify` for details)")
    return entry


def verify_entry(entry: ModelEntry, *, force: bool = False) -> str:
    """``verified``, ``missing``, ``corrupted`` (hash mismatch), ``unverified`` (no hash) or ``invalid``."""
    if "_error" in entry.card:
        return "invalid"
    files = entry.files()
    if not files:
        return "unverified" if entry.source != "bundle" else "invalid"
    key = (entry.name, tuple(sorted((str(p), p.stat().st_mtime_ns if p.exists() else 0) for p in files)))
    if not force and key in _verified:
        return _verified[key]
    status = "verified"
    for path, digest in files.items():
        if not path.is_file():
            status = "missing"
            break
        if not digest:
            status = "unverified"
            continue
        if sha256_file(path) != digest:
            status = "corrupted"
            break
    _verified[key] = status
    return status
