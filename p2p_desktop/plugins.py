"""Plugins: one registry over two sources, discovered without importing anything.

Sources
  * folders: every ``*/plugin.json`` under the shipped ``plugins/`` folder, the user plugin
    folder (``<user data>/plugins``) and ``$P2P_DESKTOP_PLUGIN_PATH`` (os.pathsep-separated);
  * the Python entry-point group ``p2p_desktop.plugins``: entry name ``<kind>.<name>``,
    value ``module:attr``.

A manifest (``plugin.json``)::

    {"name": "mi-fgsm", "kind": "attack", "entry": "mi_fgsm:MIFGSM",
     "summary": "Momentum iterative FGSM", "version": "1.0"}

``kind`` is ``attack`` (``attr`` is an :class:`~p2p_desktop.attacks.base.Attack` subclass) or
``classifier`` (``attr`` is a callable ``load(device="cpu") -> Classifier``).

Plugins are code: one is imported only once the user has enabled it, which records its path
and SHA-256; if its files change, it is disabled again until re-approved. A broken plugin is
listed with its error and never stops the program.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as md
import importlib.util
import json
import os
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from p2p_desktop.errors import InputError
from p2p_desktop.paths import builtin_plugins_dir, user_data_dir

__all__ = ["PluginInfo", "ENTRY_POINT_GROUP", "KINDS", "plugin_dirs", "discover", "enable", "disable",
           "load_plugin_object", "register_enabled", "find"]

ENTRY_POINT_GROUP = "p2p_desktop.plugins"
KINDS = ("attack", "classifier")
_lock = threading.Lock()
_registered: set[str] = set()


@dataclass(frozen=True)
class PluginInfo:
    """What is known about a plugin without importing it."""

    name: str
    kind: str
    entry: str  # module:attr
    source: str  # "folder" or "entry-point"
    path: str  # manifest file or module file
    sha256: str
    summary: str = ""
    version: str = ""
    status: str = "disabled"  # enabled | disabled | changed | broken
    error: str = ""

    @property
    def enabled(self) -> bool:
        return self.status == "enabled"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plugin_dirs() -> list[Path]:
    dirs = [builtin_plugins_dir(), user_data_dir() / "plugins"]
    extra = os.environ.get("P2P_DESKTOP_PLUGIN_PATH", "")
    dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    return dirs


def _state_path() -> Path:
    return user_data_dir() / "plugins-enabled.json"


def _read_state() -> dict[str, dict[str, str]]:
    try:
        data = json.loads(_state_path().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_state(state: dict[str, dict[str, str]]) -> None:
    from p2p_desktop.io.outputs import atomic_write_bytes

    path = _state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_write_bytes(path.with_name(path.name + ".new"), json.dumps(state, indent=2).encode())
    os.replace(tmp, path)


def _hash_folder(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _check_fields(name: Any, kind: Any, entry: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        return "manifest has no 'name'"
    if kind not in KINDS:
        return f"kind {kind!r} is not one of {', '.join(KINDS)}"
    if not isinstance(entry, str) or ":" not in entry:
        return "'entry' must be 'module:attr'"
    return ""


def _folder_plugins() -> list[PluginInfo]:
    out: list[PluginInfo] = []
    for d in plugin_dirs():
        if not d.is_dir():
            continue
        for manifest in sorted(d.glob("*/plugin.json")):
            folder = manifest.parent
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise ValueError("manifest must be a JSON object")
            except (OSError, ValueError) as exc:
                out.append(PluginInfo(name=folder.name, kind="?", entry="", source="folder", path=str(manifest),
                                      sha256="", status="broken", error=f"unreadable manifest: {exc}"))
                continue
            name, kind, entry = data.get("name"), data.get("kind"), data.get("entry")
            error = _check_fields(name, kind, entry)
            out.append(PluginInfo(
                name=str(name or folder.name), kind=str(kind), entry=str(entry or ""), source="folder",
                path=str(manifest), sha256=_hash_folder(folder), summary=str(data.get("summary", "")),
                version=str(data.get("version", "")), status="broken" if error else "disabled", error=error))
    return out


def _entry_point_plugins() -> list[PluginInfo]:
    out: list[PluginInfo] = []
    try:
        eps = md.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # noqa: BLE001 - broken metadata must not stop discovery
        return out
    for ep in eps:
        kind, _, name = ep.name.partition(".")
        error = _check_fields(name, kind, ep.value)
        module = ep.value.partition(":")[0]
        path, digest = "", ""
        dist = getattr(ep, "dist", None)
        if dist is not None:
            rel = module.replace(".", "/")
            for cand in (f"{rel}.py", f"{rel}/__init__.py"):
                f = Path(str(dist.locate_file(cand)))
                if f.is_file():
                    path, digest = str(f), hashlib.sha256(f.read_bytes()).hexdigest()
                    break
        if not path and not error:
            error = f"module {module!r} of entry point {ep.name!r} not found"
        out.append(PluginInfo(name=name or ep.name, kind=kind, entry=ep.value, source="entry-point", path=path,
                              sha256=digest, summary=f"entry point of {dist.metadata['Name'] if dist else '?'}",
                              status="broken" if error else "disabled", error=error))
    return out


def discover() -> list[PluginInfo]:
    """Every plugin with its status; never imports plugin code, never raises."""
    state = _read_state()
    out = []
    for info in _folder_plugins() + _entry_point_plugins():
        if info.status != "broken":
            approved = state.get(info.name)
            if approved and approved.get("sha256") == info.sha256 and approved.get("path") == info.path:
                info = PluginInfo(**{**info.to_dict(), "status": "enabled"})
            elif approved:
                info = PluginInfo(**{**info.to_dict(), "status": "changed",
                                     "error": "files changed since it was enabled; enable it again to approve"})
        out.append(info)
    return out


def find(name: str) -> PluginInfo | None:
    return next((p for p in discover() if p.name == name), None)


def enable(name: str) -> PluginInfo:
    """Approve a plugin at its current path and SHA-256 (the GUI asks the user first)."""
    info = find(name)
    if info is None:
        raise InputError(f"no plugin named {name!r}")
    if info.status == "broken":
        raise InputError(f"plugin {name!r} is broken: {info.error}")
    with _lock:
        state = _read_state()
        state[name] = {"path": info.path, "sha256": info.sha256}
        _write_state(state)
    return PluginInfo(**{**info.to_dict(), "status": "enabled", "error": ""})


def disable(name: str) -> None:
    with _lock:
        state = _read_state()
        if state.pop(name, None) is not None:
            _write_state(state)
        _registered.discard(name)


def load_plugin_object(info: PluginInfo) -> Any:
    """Import an ENABLED plugin and return its ``attr``; errors become InputError."""
    if info.status != "enabled":
        raise InputError(
            f"plugin {info.name!r} is {info.status}: it runs code from {info.path} (sha256 {info.sha256[:12]}…); "
            f"enable it with `p2p-desktop plugins enable {info.name}` or in the app's Plugins dialog")
    module_name, _, attr = info.entry.partition(":")
    try:
        if info.source == "folder":
            folder = Path(info.path).parent
            unique = f"p2p_desktop_plugin_{hashlib.sha1(str(folder).encode()).hexdigest()[:10]}"
            mod_file = folder / (module_name.replace(".", "/") + ".py")
            if not mod_file.is_file():
                mod_file = folder / module_name.replace(".", "/") / "__init__.py"
            key = f"{unique}.{module_name}"
            module = sys.modules.get(key)
            if module is None:
                spec = importlib.util.spec_from_file_location(key, mod_file)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot import {mod_file}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[key] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(key, None)
                    raise
        else:
            module = importlib.import_module(module_name)
        return getattr(module, attr)
    except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not fatal
        raise InputError(f"plugin {info.name!r} failed to load ({info.entry}): {type(exc).__name__}: {exc}") from None


def register_enabled() -> list[PluginInfo]:
    """Register every enabled plugin in the attack and model registries (lazily imported)."""
    from p2p_desktop.attacks import registry as attacks
    from p2p_desktop.models import registry as models

    infos = discover()
    for info in infos:
        if info.status != "enabled" or info.name in _registered:
            continue
        if info.kind == "attack":
            attacks.register(attacks.AttackSpec(
                name=info.name, target=info.entry, summary=info.summary or f"plugin {info.name}",
                source="plugin", loader=lambda info=info: load_plugin_object(info)))
        elif info.kind == "classifier":
            models.register(models.ModelEntry(
                name=info.name, kind="classifier", path=Path(info.path), card={"plugin": info.to_dict()},
                loader=lambda device="cpu", info=info: load_plugin_object(info)(device=device), source="plugin"))
        _registered.add(info.name)
    return infos
