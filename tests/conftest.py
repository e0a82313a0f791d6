"""Shared test fixtures: real test files, and a check that a folder was left untouched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def pydicom_file():
    """``pydicom_file(name) -> Path`` of a test file shipped inside pydicom (skip if absent)."""

    def get(name: str) -> Path:
        from pydicom.data import get_testdata_file

        found = get_testdata_file(name, download=False)
        if not found:
            pytest.skip(f"pydicom test file {name} is not installed")
        return Path(found)

    return get


@pytest.fixture
def ultrasound_file(pydicom_file):
    """``ultrasound_file() -> Path``: pydicom's ultrasound test file (US, RGB, 240x320; skip if absent)."""
    return lambda: pydicom_file("examples_rgb_color.dcm")


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            p = Path(dirpath) / name
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def unchanged():
    """``with unchanged(folder): ...`` fails if a file in ``folder`` was added, removed or
    modified inside the block."""
    from contextlib import contextmanager

    @contextmanager
    def check(folder: Path):
        before = _listing(Path(folder))
        yield
        after = _listing(Path(folder))
        assert after == before, f"files changed in {folder}: {set(after) ^ set(before) or 'modified'}"

    return check


@pytest.fixture(autouse=True, scope="session")
def _private_user_folders(tmp_path_factory):
    """Tests never touch the user's own settings, audit log, logs or plugin approvals."""
    home = tmp_path_factory.mktemp("p2p-home")
    old = {k: os.environ.get(k) for k in ("P2P_DESKTOP_HOME", "P2P_DESKTOP_AUDIT_LOG", "P2P_DESKTOP_AUDIT_KEY")}
    os.environ["P2P_DESKTOP_HOME"] = str(home)
    os.environ["P2P_DESKTOP_AUDIT_LOG"] = str(home / "audit.jsonl")
    # one installation key for the session's log: tests that move P2P_DESKTOP_HOME still sign it alike
    os.environ["P2P_DESKTOP_AUDIT_KEY"] = str(home / "audit.key")
    yield home
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
