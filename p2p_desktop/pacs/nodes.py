"""Configured DICOM nodes and our own AE title, kept in the user's data folder.

The settings live in ``user_data_dir()/pacs.json`` (``$P2P_DESKTOP_HOME`` moves the whole
folder, which tests use)::

    {"ae_title": "P2P_DESKTOP", "storage_port": 11113,
     "nodes": [{"name": "orthanc", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242,
                "tls": {"cert": null, "key": null, "ca": null}}]}

``storage_port`` is the loopback port of the storage SCP that receives C-MOVE results; the
node must know our AE title at that port (its move destination). Qt-free.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from p2p_desktop.pacs.errors import PacsError

__all__ = ["Node", "WebNode", "node_from_json", "TLSFiles", "PacsSettings", "settings_path", "load_settings",
           "save_settings", "parse_address", "resolve_node", "check_ae_title", "check_port", "DEFAULT_AE_TITLE",
           "DEFAULT_STORAGE_PORT"]

DEFAULT_AE_TITLE = "P2P_DESKTOP"
DEFAULT_STORAGE_PORT = 11113
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ADDRESS = re.compile(r"^(?P<aet>[^@]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\[\]]+):(?P<port>\d+)$")


def check_ae_title(value: str, what: str = "AE title") -> str:
    """A valid AE title (1-16 printable ASCII characters, no backslash, not only spaces)."""
    text = str(value).strip()
    if not text or len(text) > 16 or not all(32 <= ord(c) < 127 for c in text) or "\\" in text:
        raise PacsError(f"{what} {value!r} is not valid: use 1-16 ASCII letters, digits, spaces, '_' or '-'")
    return text


def check_port(value: Any, what: str = "port") -> int:
    """A valid TCP port number (1-65535) from ``value``; PacsError otherwise."""
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise PacsError(f"{what} {value!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise PacsError(f"{what} {port} is outside 1-65535")
    return port


@dataclass(frozen=True)
class TLSFiles:
    """Optional TLS: our certificate and key (client authentication) and the CA to trust."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key or self.ca)

    def check(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise PacsError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        for what, path in (("certificate", self.cert), ("key", self.key), ("CA file", self.ca)):
            if path and not Path(path).expanduser().is_file():
                raise PacsError(f"TLS {what} not found: {path}")


@dataclass(frozen=True)
class Node:
    """A remote DICOM node (PACS, VNA, validation viewer)."""

    name: str
    ae_title: str
    host: str
    port: int
    tls: TLSFiles = field(default_factory=TLSFiles)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name or ""):
            raise PacsError(f"node name {self.name!r} is not valid: use letters, digits, '.', '_' or '-'")
        object.__setattr__(self, "ae_title", check_ae_title(self.ae_title, "node AE title"))
        host = str(self.host or "").strip()
        if not host or any(c.isspace() for c in host):
            raise PacsError(f"node host {self.host!r} is not valid")
        object.__setattr__(self, "host", host.strip("[]"))
        object.__setattr__(self, "port", check_port(self.port, "node port"))

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"

    def describe(self) -> str:
        return self.address if self.name == self.address else f"{self.name} ({self.address})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Node:
        if not isinstance(data, dict):
            raise PacsError("a node entry in the PACS settings is not an object")
        tls = data.get("tls") or {}
        try:
            return cls(name=data["name"], ae_title=data["ae_title"], host=data["host"], port=data["port"],
                       tls=TLSFiles(tls.get("cert"), tls.get("key"), tls.get("ca")))
        except KeyError as exc:
            raise PacsError(f"a node entry in the PACS settings lacks {exc.args[0]!r}") from None


@dataclass(frozen=True)
class WebNode:
    """A DICOMweb node (QIDO-RS / WADO-RS / STOW-RS), e.g. ``http://host:8042/dicom-web``."""

    name: str
    url: str
    tls: TLSFiles = field(default_factory=TLSFiles)

    def __post_init__(self) -> None:
        from urllib.parse import urlparse

        url = str(self.url or "").strip().rstrip("/")
        parts = urlparse(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
            raise PacsError(f"DICOMweb URL {self.url!r} is not valid (e.g. http://pacs:8042/dicom-web)")
        object.__setattr__(self, "url", url)
        if not (_NAME.match(self.name or "") or self.name == url):
            raise PacsError(f"node name {self.name!r} is not valid: use letters, digits, '.', '_' or '-'")

    ae_title = ""  # DICOMweb has no AE titles

    @property
    def host(self) -> str:
        from urllib.parse import urlparse

        return urlparse(self.url).hostname or ""

    @property
    def port(self) -> int:
        from urllib.parse import urlparse

        parts = urlparse(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def address(self) -> str:
        return self.url

    def describe(self) -> str:
        return self.url if self.name == self.url else f"{self.name} ({self.url})"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "tls": asdict(self.tls)}


def node_from_json(data: dict[str, Any]) -> Node | WebNode:
    """A configured node from its JSON form: a DICOMweb node when it has a ``url``, else a DIMSE node."""
    if isinstance(data, dict) and "url" in data:
        tls = data.get("tls") or {}
        return WebNode(name=data.get("name", ""), url=data["url"],
                       tls=TLSFiles(tls.get("cert"), tls.get("key"), tls.get("ca")))
    return Node.from_json(data)


@dataclass(frozen=True)
class PacsSettings:
    """Our AE title, the C-MOVE storage port and the configured nodes."""

    ae_title: str = DEFAULT_AE_TITLE
    storage_port: int = DEFAULT_STORAGE_PORT
    nodes: tuple[Node | WebNode, ...] = ()

    def node(self, name: str) -> Node | WebNode | None:
        return next((n for n in self.nodes if n.name == name), None)

    def with_node(self, node: Node | WebNode, *, replace_existing: bool = False) -> PacsSettings:
        if self.node(node.name) is not None and not replace_existing:
            raise PacsError(f"a node named {node.name!r} exists already (remove it first)")
        return replace(self, nodes=tuple(n for n in self.nodes if n.name != node.name) + (node,))

    def without_node(self, name: str) -> PacsSettings:
        if self.node(name) is None:
            raise PacsError(f"no node named {name!r} (see: p2p-desktop pacs nodes list)")
        return replace(self, nodes=tuple(n for n in self.nodes if n.name != name))

    def to_json(self) -> dict[str, Any]:
        return {"ae_title": self.ae_title, "storage_port": self.storage_port,
                "nodes": [n.to_json() for n in self.nodes]}


def settings_path() -> Path:
    """Where the PACS settings are saved: ``pacs.json`` in the user data folder."""
    from p2p_desktop.paths import user_data_dir

    return user_data_dir() / "pacs.json"


def load_settings(path: str | os.PathLike | None = None) -> PacsSettings:
    """The saved settings, or the defaults when there is no file yet."""
    path = Path(path) if path else settings_path()
    if not path.is_file():
        return PacsSettings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PacsError(f"cannot read the PACS settings {path}: {exc}") from None
    if not isinstance(data, dict):
        raise PacsError(f"the PACS settings {path} are not a JSON object")
    return PacsSettings(ae_title=check_ae_title(data.get("ae_title", DEFAULT_AE_TITLE), "our AE title"),
                        storage_port=check_port(data.get("storage_port", DEFAULT_STORAGE_PORT), "storage port"),
                        nodes=tuple(node_from_json(n) for n in data.get("nodes", [])))


def save_settings(settings: PacsSettings, path: str | os.PathLike | None = None) -> Path:
    """Replace the settings file atomically (a crash leaves the old file); it is private (0600)."""
    from p2p_desktop.errors import OutputError
    from p2p_desktop.io.outputs import atomic_replace_json

    path = Path(path) if path else settings_path()
    try:
        return atomic_replace_json(path, settings.to_json(), private=True)
    except OutputError as exc:
        raise PacsError(f"cannot write the PACS settings ({exc})") from None


def parse_address(text: str) -> Node | None:
    """``AET@HOST:PORT`` as an unnamed node, or None when ``text`` is not of that form."""
    m = _ADDRESS.match(text.strip())
    if not m:
        return None
    node = Node(name="adhoc", ae_title=m["aet"], host=m["host"], port=m["port"])
    object.__setattr__(node, "name", node.address)  # an unconfigured node is named by its address
    return node


def resolve_node(text: str, settings: PacsSettings | None = None) -> Node | WebNode:
    """A configured node by name, ``AET@HOST:PORT``, or a DICOMweb URL (``http(s)://...``)."""
    settings = settings if settings is not None else load_settings()
    found = settings.node(text)
    if found is not None:
        return found
    if text.startswith(("http://", "https://")):
        node = WebNode(name="adhoc", url=text)
        object.__setattr__(node, "name", node.url)
        return node
    if "@" in text:
        node = parse_address(text)
        if node is None:
            raise PacsError(f"{text!r} is not AET@HOST:PORT (e.g. ORTHANC@127.0.0.1:4242)")
        return node
    names = ", ".join(n.name for n in settings.nodes) or "none configured"
    raise PacsError(f"unknown node {text!r} (configured: {names}); give a node name, AET@HOST:PORT "
                    "or a DICOMweb URL")
