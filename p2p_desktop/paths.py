"""Where bundled resources live (source checkout, installed package, or frozen bundle)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["resources_dir", "models_dir", "samples_dir", "user_data_dir", "builtin_plugins_dir", "documents_dir"]


def resources_dir() -> Path:
    """The ``resources/`` folder: $P2P_DESKTOP_RESOURCES, the frozen bundle, or the checkout."""
    env = os.environ.get("P2P_DESKTOP_RESOURCES")
    if env:
        return Path(env)
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def models_dir() -> Path:
    """The bundled models (``resources/models``)."""
    return resources_dir() / "models"


def samples_dir() -> Path:
    """The bundled sample studies (``resources/samples``)."""
    return resources_dir() / "samples"


def user_data_dir() -> Path:
    """Per-user folder for logs, the audit log and user plugins ($P2P_DESKTOP_HOME overrides)."""
    env = os.environ.get("P2P_DESKTOP_HOME")
    if env:
        return Path(env)
    from platformdirs import user_data_dir as _platform_data_dir

    # %LOCALAPPDATA%\p2p-desktop, ~/Library/Application Support/p2p-desktop, $XDG_DATA_HOME/p2p-desktop
    return Path(_platform_data_dir("p2p-desktop", appauthor=False, roaming=False))


def documents_dir() -> Path:
    """The user's documents folder (``~/Documents``, or the XDG/OS equivalent) when it exists,
    else the home folder: where an export's folder picker opens first."""
    try:
        from platformdirs import user_documents_dir

        docs = Path(user_documents_dir())
    except Exception:  # noqa: BLE001 - only a starting point for a dialog
        docs = Path.home() / "Documents"
    return docs if docs.is_dir() else Path.home()


def builtin_plugins_dir() -> Path:
    """The top-level ``plugins/`` folder shipped with the program (examples)."""
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "plugins"
    return Path(__file__).resolve().parent.parent / "plugins"
