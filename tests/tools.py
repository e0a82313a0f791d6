"""System tools some checks need (DICOM validator, DCMTK, poppler).

``require_tool`` skips the test with the reason when the tool is missing, so a missing tool is
reported in pytest's summary instead of letting the check pass silently.
scripts/install-system-deps.sh installs every one of them (CI runs it as root).
"""

from __future__ import annotations

import shutil

import pytest

PACKAGES = {"dciodvfy": "dicom3tools", "dcm2pnm": "dcmtk", "pdftotext": "poppler-utils",
            "pdftoppm": "poppler-utils", "chromium": "chromium"}


def require_tool(name: str) -> str:
    """The tool's path; skips the calling test (with the Debian package to install) when absent."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {PACKAGES.get(name, name)}; "
                    "scripts/install-system-deps.sh installs it)")
    return path
