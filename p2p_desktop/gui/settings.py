"""Persistent app settings (QSettings): recent folders, model choices, device, window layout.

The app stores them in the user's settings (INI format). Tests and the smoke test pass their
own file, so the user's settings are never read or written there::

    settings = AppSettings.at(tmp_path / "settings.ini")
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

__all__ = ["AppSettings", "ORGANISATION", "APPLICATION", "MAX_RECENT"]

ORGANISATION = "p2p-desktop"
APPLICATION = "p2p-desktop"
MAX_RECENT = 10


def _as_list(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


class AppSettings:
    """Typed access to the few values the app keeps between starts."""

    def __init__(self, qsettings: QSettings) -> None:
        self.q = qsettings

    @classmethod
    def user(cls) -> AppSettings:
        """The user's settings ($P2P_DESKTOP_SETTINGS names a file to use instead)."""
        path = os.environ.get("P2P_DESKTOP_SETTINGS")
        if path:
            return cls.at(path)
        return cls(QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANISATION, APPLICATION))

    @classmethod
    def at(cls, path: str | os.PathLike) -> AppSettings:
        """Settings kept in one INI file (tests, smoke test, portable installs)."""
        return cls(QSettings(str(path), QSettings.Format.IniFormat))

    @property
    def path(self) -> str:
        return self.q.fileName()

    def sync(self) -> None:
        self.q.sync()

    # -- plain values ------------------------------------------------------------
    def get(self, key: str, default: str = "") -> str:
        value = self.q.value(key, default)
        return default if value is None else str(value)

    def set(self, key: str, value) -> None:
        self.q.setValue(key, "" if value is None else value)

    # -- lists --------------------------------------------------------------------
    def _list(self, key: str) -> list[str]:
        return _as_list(self.q.value(key, []))

    def _push(self, key: str, item: str, limit: int = MAX_RECENT) -> None:
        items = [i for i in self._list(key) if i != item]
        self.q.setValue(key, [item, *items][:limit])

    @property
    def recent_paths(self) -> list[str]:
        """Files and folders opened recently, newest first."""
        return self._list("recent/paths")

    def add_recent_path(self, path: str | os.PathLike) -> None:
        self._push("recent/paths", str(Path(path)))

    def clear_recent_paths(self) -> None:
        self.q.remove("recent/paths")

    @property
    def last_folder(self) -> str:
        return self.get("recent/last_folder", "")

    @last_folder.setter
    def last_folder(self, value: str) -> None:
        self.set("recent/last_folder", value)

    @property
    def model_paths(self) -> list[str]:
        """Classifier model cards the user added (shown with the registered models)."""
        return self._list("models/classifier_paths")

    def add_model_path(self, path: str | os.PathLike) -> None:
        self._push("models/classifier_paths", str(Path(path)), limit=20)

    @property
    def backbone_paths(self) -> list[str]:
        """Diffusion backbone folders the user added."""
        return self._list("models/backbone_paths")

    def add_backbone_path(self, path: str | os.PathLike) -> None:
        self._push("models/backbone_paths", str(Path(path)), limit=20)

    # -- run choices --------------------------------------------------------------------
    @property
    def classifier(self) -> str:
        return self.get("run/classifier", "")

    @classifier.setter
    def classifier(self, value: str) -> None:
        self.set("run/classifier", value)

    @property
    def backbone(self) -> str:
        return self.get("run/backbone", "")

    @backbone.setter
    def backbone(self, value: str) -> None:
        self.set("run/backbone", value)

    @property
    def device(self) -> str:
        return self.get("run/device", "auto") or "auto"

    @device.setter
    def device(self, value: str) -> None:
        self.set("run/device", value)

    @property
    def attack(self) -> str:
        return self.get("run/attack", "")

    @attack.setter
    def attack(self, value: str) -> None:
        self.set("run/attack", value)

    @property
    def export_folder(self) -> str:
        return self.get("export/folder", "")

    @export_folder.setter
    def export_folder(self, value: str) -> None:
        self.set("export/folder", value)

    # -- window layout ----------------------------------------------------------------
    def window_state(self) -> tuple[QByteArray | None, QByteArray | None]:
        geometry = self.q.value("window/geometry")
        state = self.q.value("window/state")
        return (geometry if isinstance(geometry, QByteArray) else None,
                state if isinstance(state, QByteArray) else None)

    def save_window_state(self, geometry: QByteArray, state: QByteArray) -> None:
        self.q.setValue("window/geometry", geometry)
        self.q.setValue("window/state", state)
