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
and SHA-256; if its files change, it is disabled again until re-approved. A folder plugin's files
are those of its folder; an entry-point plugin's are every file its distribution's ``RECORD``
lists (one missing, or a module in its package folders that the RECORD does not list, makes it
broken). A broken plugin is listed with its error and never stops the program.

:func:`load_plugins` discovers them and registers the enabled ones in the (passive) attack and
model registries: once at start-up, and again only when the user enables or disables one.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
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
           "load_plugin_object", "load_plugins", "find"]

ENTRY_POINT_GROUP = "p2p_desktop.plugins"
KINDS = ("attack", "classifier")
_lock = threading.Lock()


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
    """Folders searched for plugins: the built-in one, the user's, then ``$P2P_DESKTOP_PLUGIN_PATH``."""
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
    except (OSError, ValueError, RecursionError):
        return {}


def _write_state(state: dict[str, dict[str, str]]) -> None:
    from p2p_desktop.io.outputs import atomic_replace_json

    atomic_replace_json(_state_path(), state)


class PluginIntegrityError(Exception):
    """Plugin files that cannot be verified safely (a symlink leaving the folder, an unreadable file, a
    distribution file missing or not in its RECORD)."""


def _snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every file of a plugin folder (``__pycache__`` and bytecode left out: never imported),
    read once: ``{relative posix path: source bytes}`` for ``.py`` files (what is imported is
    what is hashed) and ``{relative posix path: sha256 hex}`` for the others (streamed, so a
    large data file is never held in memory).

    Symlinks are followed only while they stay inside the folder (a symlinked sub-folder is
    walked like a real one); one that leaves the folder, or dangles, is refused, so what is
    hashed is exactly what can be imported.
    """
    root = folder.resolve()
    files: dict[str, bytes] = {}

    def walk(real: Path, rel: str, depth: int) -> None:
        if depth > 32:
            raise PluginIntegrityError(f"folders nested too deep at {rel or '.'}")
        for entry in sorted(os.scandir(real), key=lambda e: e.name):
            name = entry.name
            if name == "__pycache__" or name.endswith((".pyc", ".pyo")):
                continue
            sub = f"{rel}/{name}" if rel else name
            target = Path(entry.path)
            if entry.is_symlink():
                try:
                    target = target.resolve(strict=True)
                except (OSError, RuntimeError):
                    raise PluginIntegrityError(f"symlink {sub} dangles or loops") from None
                if target != root and root not in target.parents:
                    raise PluginIntegrityError(f"symlink {sub} leaves the plugin folder (to {target})")
            if target.is_dir():
                walk(target, sub, depth + 1)
            elif target.is_file():
                try:
                    if name.endswith(".py"):
                        files[sub] = target.read_bytes()
                    else:
                        from p2p_desktop.hashing import sha256_file

                        files[sub] = sha256_file(target)
                except OSError as exc:
                    raise PluginIntegrityError(f"cannot read {sub}: {exc.strerror or exc}") from None
    walk(root, "", 0)
    return files


def _hash_snapshot(files: dict[str, bytes | str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        value = files[rel]
        h.update(rel.encode() + b"\0")
        h.update(bytes.fromhex(value) if isinstance(value, str) else hashlib.sha256(value).digest())
    return h.hexdigest()


def _hash_folder(folder: Path) -> str:
    return _hash_snapshot(_snapshot(folder))


def _check_fields(name: Any, kind: Any, entry: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        return "manifest has no 'name'"
    if kind not in KINDS:
        return f"kind {kind!r} is not one of {', '.join(KINDS)}"
    if not isinstance(entry, str) or ":" not in entry:
        return "'entry' must be 'module:attr'"
    module, _, attr = entry.partition(":")
    if not module or not all(part.isidentifier() for part in module.split(".")) or not attr.isidentifier():
        return (f"'entry' {entry!r} must be 'module:attr' with a module inside the plugin's folder "
                "(dotted names only, no leading dot)")
    reserved = _reserved_names()
    if name.strip() in reserved:
        return f"name {name!r} is taken by the built-in {reserved[name.strip()]}; rename the plugin"
    return ""


def _reserved_names() -> dict[str, str]:
    """Names a plugin may not take: built-in attacks and bundled models."""
    from p2p_desktop.attacks.registry import BUILTIN

    out = {s.name: "attack" for s in BUILTIN}
    try:
        from p2p_desktop.models.registry import _bundle_entries

        out.update({e.name: f"{e.kind} model" for e in _bundle_entries()})
    except Exception:  # noqa: BLE001 - a damaged bundle must not stop plugin discovery
        pass
    return out


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
            except (OSError, ValueError, RecursionError) as exc:
                out.append(PluginInfo(name=folder.name, kind="?", entry="", source="folder", path=str(manifest),
                                      sha256="", status="broken", error=f"unreadable manifest: {exc}"))
                continue
            name, kind, entry = data.get("name"), data.get("kind"), data.get("entry")
            error = _check_fields(name, kind, entry)
            try:
                snap = _snapshot(folder)
                digest = _hash_snapshot(snap)
            except (OSError, PluginIntegrityError) as exc:
                snap, digest, error = {}, "", error or f"refused: {exc}"
            if not error and _module_file(snap, entry.partition(":")[0]) is None:
                error = f"entry module {entry.partition(':')[0]!r} is not a .py file inside the plugin folder"
            out.append(PluginInfo(
                name=str(name or folder.name), kind=str(kind), entry=str(entry or ""), source="folder",
                path=str(manifest), sha256=digest, summary=str(data.get("summary", "")),
                version=str(data.get("version", "")), status="broken" if error else "disabled", error=error))
    return out


def _dist_name(dist) -> str:
    try:
        return str(dist.metadata["Name"] or "?")
    except Exception:  # noqa: BLE001 - broken metadata
        return "?"


def _dist_snapshot(dist) -> tuple[dict[str, bytes | str], Path]:
    """Every file an installed distribution's ``RECORD`` lists (its ``__pycache__`` left out:
    never imported), read once like a folder plugin's (:func:`_snapshot`), keyed by its RECORD
    path; and the folder those paths are relative to.

    Refused: a distribution without a RECORD, a listed file that is missing, and an importable
    file (``.py``, bytecode, extension module) inside one of its package folders that the RECORD
    does not list, so nothing can be added to or dropped from what the user approved unseen.
    """
    import posixpath

    from p2p_desktop.hashing import sha256_file

    name = _dist_name(dist)
    try:
        listed_paths = dist.files
    except Exception as exc:  # noqa: BLE001 - an unreadable RECORD
        raise PluginIntegrityError(f"cannot read the RECORD of {name}: {exc}") from None
    if listed_paths is None:
        raise PluginIntegrityError(f"the distribution {name} lists no files (no RECORD); reinstall it with pip")
    base = Path(os.path.abspath(str(dist.locate_file(""))))
    files: dict[str, bytes | str] = {}
    listed: set[Path] = set()
    for entry in listed_paths:
        rel = posixpath.normpath(str(entry).replace(os.sep, "/"))
        if "__pycache__" in rel.split("/"):
            continue
        target = Path(os.path.abspath(str(dist.locate_file(entry))))
        listed.add(target)
        if not target.is_file():
            what = "missing" if not os.path.lexists(target) else "not a file"
            raise PluginIntegrityError(f"{rel} is listed in the RECORD of {name} but {what}")
        try:
            files[rel] = target.read_bytes() if rel.endswith(".py") else sha256_file(target)
        except OSError as exc:
            raise PluginIntegrityError(f"cannot read {target}: {exc.strerror or exc}") from None
    importable = tuple(importlib.machinery.all_suffixes())
    packages = {t.parent for t in listed if t.name == "__init__.py" and t.parent != base}
    for folder in sorted(packages):
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for extra in sorted(names):
                path = Path(root) / extra
                if extra.endswith(importable) and path not in listed:
                    shown = os.path.relpath(path, base).replace(os.sep, "/")
                    raise PluginIntegrityError(f"{shown} is in the distribution's folder but not in its RECORD")
    return files, base


def _entry_module(dist, module: str) -> tuple[str, Path] | None:
    """``(relative path, file)`` of an entry point's module inside its distribution's folder, or None."""
    rel = module.replace(".", "/")
    for cand in (f"{rel}.py", f"{rel}/__init__.py"):
        f = Path(os.path.abspath(str(dist.locate_file(cand))))
        if f.is_file():
            return cand, f
    return None


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
        found = _entry_module(dist, module) if dist is not None else None
        if found is not None:
            rel, path = found[0], str(found[1])
        if found is not None and not error:
            try:
                files, _base = _dist_snapshot(dist)
                if rel not in files:
                    raise PluginIntegrityError(f"the entry module {rel} is not a file the RECORD of "
                                               f"{_dist_name(dist)} lists (an editable install?): "
                                               "its code cannot be verified")
                digest = _hash_snapshot(files)
            except (OSError, PluginIntegrityError) as exc:
                error = f"refused: {exc}"
        if not path and not error:
            error = f"module {module!r} of entry point {ep.name!r} not found"
        out.append(PluginInfo(name=name or ep.name, kind=kind, entry=ep.value, source="entry-point", path=path,
                              sha256=digest, summary=f"entry point of {_dist_name(dist) if dist else '?'}",
                              status="broken" if error else "disabled", error=error))
    return out


def discover() -> list[PluginInfo]:
    """Every plugin with its status; never imports plugin code, never raises."""
    state = _read_state()
    out = []
    seen: dict[str, str] = {}
    for info in _folder_plugins() + _entry_point_plugins():
        if info.status != "broken" and info.name in seen:
            info = PluginInfo(**{**info.to_dict(), "status": "broken",
                                 "error": f"name {info.name!r} is already used by the plugin at {seen[info.name]}"})
        if info.status != "broken":
            seen[info.name] = info.path
            approved = state.get(info.name)
            if approved and approved.get("sha256") == info.sha256 and approved.get("path") == info.path:
                info = PluginInfo(**{**info.to_dict(), "status": "enabled"})
            elif approved:
                info = PluginInfo(**{**info.to_dict(), "status": "changed",
                                     "error": "files changed since it was enabled; enable it again to approve"})
        out.append(info)
    return out


def find(name: str) -> PluginInfo | None:
    """The discovered plugin called ``name``, or None."""
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
    """Withdraw the approval of plugin ``name`` (nothing happens if it was not enabled)."""
    with _lock:
        state = _read_state()
        if state.pop(name, None) is not None:
            _write_state(state)


def _module_file(files: dict[str, bytes | str], module: str) -> tuple[str, bool] | None:
    """``(relative path, is_package)`` of ``module`` inside a snapshot, or None."""
    rel = module.replace(".", "/")
    if f"{rel}.py" in files:
        return f"{rel}.py", False
    if f"{rel}/__init__.py" in files:
        return f"{rel}/__init__.py", True
    return None


class _SourceLoader(importlib.abc.Loader):
    """Executes one module from source bytes that were hashed: no bytecode is read or written."""

    def __init__(self, source: bytes, origin: str) -> None:
        self.source, self.origin = source, origin

    def create_module(self, spec):  # default module creation
        return None

    def exec_module(self, module) -> None:
        code = compile(self.source, self.origin, "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - the approved plugin's verified source


class _SnapshotFinder(importlib.abc.MetaPathFinder):
    """Serves the modules of one verified plugin snapshot under a private package name, so a
    plugin's own sub-imports (``from . import helper``) also come from what was hashed."""

    def __init__(self, package: str, folder: Path, files: dict[str, bytes]) -> None:
        self.package, self.folder, self.files = package, folder, files

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(self.package + "."):
            return None
        found = _module_file(self.files, fullname[len(self.package) + 1:])
        if found is None:
            return None
        rel, is_pkg = found
        origin = str(self.folder / rel)
        spec = importlib.machinery.ModuleSpec(fullname, _SourceLoader(self.files[rel], origin), origin=origin,
                                              is_package=is_pkg)
        if is_pkg:
            spec.submodule_search_locations = []  # sub-modules come from this finder only
        spec.has_location = True
        return spec


_finders: dict[str, _SnapshotFinder] = {}
_loaded: dict[str, dict[str, str]] = {}


def loaded(name: str) -> dict[str, str] | None:
    """The identity of a plugin imported in this session (name, kind, entry, path, sha256), or None:
    what provenance records for a run that used it."""
    return _loaded.get(name)


def _approved_sha(info: PluginInfo) -> str | None:
    approved = _read_state().get(info.name)
    if approved and approved.get("path") == info.path:
        return approved.get("sha256")
    return None


def _changed(info: PluginInfo) -> InputError:
    return InputError(f"plugin {info.name!r} is changed: its files changed since it was enabled, so it is not run; "
                      f"enable it again with `p2p-desktop plugins enable {info.name}` to approve the new code")


def _refusal(info: PluginInfo) -> InputError:
    """Why a plugin that is not enabled does not run, and how to enable it."""
    return InputError(
        f"plugin {info.name!r} is {info.status}: it runs code from {info.path} (sha256 {info.sha256[:12]}…); "
        f"enable it with `p2p-desktop plugins enable {info.name}` or in the app's Plugins dialog")


def _import_folder_plugin(info: PluginInfo, module_name: str, approved: str):
    folder = Path(info.path).parent
    files = _snapshot(folder)  # read once: what is hashed is what is executed
    if _hash_snapshot(files) != approved:
        raise _changed(info)
    package = f"p2p_desktop_plugin_{hashlib.sha256((str(folder) + approved).encode()).hexdigest()[:16]}"
    key = f"{package}.{module_name}"
    if key in sys.modules:
        return sys.modules[key]
    with _lock:
        finder = _finders.get(package)
        if finder is None or finder not in sys.meta_path:
            finder = _SnapshotFinder(package, folder, files)
            sys.meta_path.insert(0, finder)
            _finders[package] = finder
        if package not in sys.modules:  # also when something cleared the plugin's modules from sys.modules
            parent = importlib.util.module_from_spec(
                importlib.machinery.ModuleSpec(package, None, is_package=True))
            parent.__path__ = []
            sys.modules[package] = parent
    if _module_file(files, module_name) is None:
        raise ImportError(f"module {module_name!r} is not a .py file inside {folder}")
    try:
        return importlib.import_module(key)
    except BaseException:
        for m in [m for m in sys.modules if m == key or m.startswith(key + ".")]:
            sys.modules.pop(m, None)
        raise


class _DistFinder(importlib.abc.MetaPathFinder):
    """Serves the Python modules of one verified distribution snapshot under their own names
    (its top-level packages and modules), so the package around an entry module, and whatever
    the plugin imports from its distribution later, is also what was hashed and approved."""

    def __init__(self, tops: frozenset[str], base: Path, files: dict[str, bytes | str], sha256: str) -> None:
        self.tops, self.base, self.files, self.sha256 = tops, base, files, sha256

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] not in self.tops:
            return None
        found = _module_file(self.files, fullname)
        if found is None or not isinstance(self.files[found[0]], bytes):
            return None  # e.g. an extension module: found on disk (its hash was checked)
        rel, is_pkg = found
        origin = str(self.base / rel)
        spec = importlib.machinery.ModuleSpec(fullname, _SourceLoader(self.files[rel], origin), origin=origin,
                                              is_package=is_pkg)
        if is_pkg:
            spec.submodule_search_locations = [str(Path(origin).parent)]
        spec.has_location = True
        return spec


_dist_finders: dict[str, _DistFinder] = {}


def _entry_point_dist(info: PluginInfo):
    """The installed distribution whose entry point ``info`` is (at the same module file), or None."""
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        if ep.value != info.entry or ep.name.partition(".")[2] != info.name or dist is None:
            continue
        rel = info.entry.partition(":")[0].replace(".", "/")
        if info.path in (os.path.abspath(str(dist.locate_file(c))) for c in (f"{rel}.py", f"{rel}/__init__.py")):
            return dist
    return None


def _import_entry_point_plugin(info: PluginInfo, module_name: str, approved: str):
    module = sys.modules.get(module_name)
    if module is not None and getattr(module, "__p2p_plugin_sha256__", None) == approved:
        return module
    dist = _entry_point_dist(info)
    if dist is None:
        raise ImportError(f"cannot read {info.path}: no installed distribution declares this entry point now")
    files, base = _dist_snapshot(dist)  # read once: what is hashed is what is executed
    if _hash_snapshot(files) != approved:
        raise _changed(info)
    rel = _module_file(files, module_name)
    if rel is None or str(base / rel[0]) != info.path:
        raise ImportError(f"module {module_name!r} is not a file the distribution's RECORD lists")
    tops = frozenset(r.split("/")[0].removesuffix(".py") for r in files
                     if r.endswith(".py") and not r.startswith("..") and ".dist-info/" not in r
                     and ".data/" not in r)
    with _lock:
        finder = _dist_finders.get(module_name.partition(".")[0])
        if finder is None or finder.sha256 != approved or finder.base != base or finder not in sys.meta_path:
            for old in {id(f): f for t in tops if (f := _dist_finders.get(t)) is not None}.values():
                if old in sys.meta_path:
                    sys.meta_path.remove(old)
            finder = _DistFinder(tops, base, files, approved)
            sys.meta_path.insert(0, finder)
            _dist_finders.update(dict.fromkeys(tops, finder))
    if module_name.rpartition(".")[0]:
        importlib.import_module(module_name.rpartition(".")[0])  # the parent package, as approved
    source = files[rel[0]]
    is_pkg = rel[1]
    spec = importlib.machinery.ModuleSpec(module_name, _SourceLoader(source, info.path), origin=info.path,
                                          is_package=is_pkg)
    if is_pkg:
        spec.submodule_search_locations = [str(Path(info.path).parent)]
    spec.has_location = True
    module = importlib.util.module_from_spec(spec)
    module.__p2p_plugin_sha256__ = approved
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_plugin_object(info: PluginInfo) -> Any:
    """Import an ENABLED plugin and return its ``attr``; errors become InputError.

    The approval is checked again here, at import time, against the files as they are now
    (a plugin edited after start-up is refused as "changed", whatever ``info`` says), and the
    module is executed from exactly the bytes that were hashed: from source, never from a
    ``.pyc`` (none is read or written), with ``entry`` resolved inside the plugin folder.
    """
    if info.status != "enabled":
        raise _refusal(info)
    module_name, _, attr = info.entry.partition(":")
    approved = _approved_sha(info)
    if approved is None or approved != info.sha256:
        raise _changed(info)
    try:
        if info.source == "folder":
            module = _import_folder_plugin(info, module_name, approved)
        else:
            module = _import_entry_point_plugin(info, module_name, approved)
        obj = getattr(module, attr)
    except InputError:
        raise
    except PluginIntegrityError as exc:
        raise InputError(f"plugin {info.name!r} refused: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not fatal
        raise InputError(f"plugin {info.name!r} failed to load ({info.entry}): {type(exc).__name__}: {exc}") from None
    _loaded[info.name] = {"name": info.name, "kind": info.kind, "entry": info.entry, "source": info.source,
                          "path": info.path, "sha256": approved, "version": info.version}
    return obj


def _current(info: PluginInfo) -> PluginInfo:
    """The plugin as it is now (status and hash), not as it was when it was registered: a plugin
    edited, disabled or re-approved during a session is loaded by its present approval."""
    now = next((p for p in discover() if p.name == info.name and p.path == info.path), None)
    return now if now is not None else PluginInfo(**{**info.to_dict(), "status": "disabled"})


def load_plugins() -> list[PluginInfo]:
    """Discover the plugins and register the enabled ones in the attack and model registries.

    Called once at start-up (``cli/main.py``, ``gui/app.py``) and again only on an explicit
    refresh (the Plugins dialog enabling or disabling one). Nothing is imported: a registered
    plugin is imported when first asked for, and re-checked against its approval then. A plugin
    that is known but not enabled is recorded as unavailable, with how to enable it. Never raises.
    """
    from p2p_desktop.attacks import registry as attacks
    from p2p_desktop.models import registry as models

    infos = discover()
    attacks.clear_plugins()
    models.clear_plugins()
    for info in infos:
        if info.status != "enabled":
            if info.kind == "attack":
                attacks.mark_unavailable(info.name, str(_refusal(info)))
            continue
        if info.kind == "attack":
            attacks.register(attacks.AttackSpec(
                name=info.name, target=info.entry, manifest_summary=info.summary or f"plugin {info.name}",
                source="plugin", loader=lambda info=info: load_plugin_object(_current(info))))
        elif info.kind == "classifier":
            models.register(models.ModelEntry(
                name=info.name, kind="classifier", path=Path(info.path), card={"plugin": info.to_dict()},
                loader=lambda device="cpu", info=info: load_plugin_object(_current(info))(device=device),
                source="plugin"))
    return infos
