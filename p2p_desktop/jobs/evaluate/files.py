"""Where a batch evaluation writes: the file names of its folder, the adversarial images' paths,
and the one way it replaces a file whole (through :func:`p2p_desktop.io.outputs.atomic_write_bytes`)."""

from __future__ import annotations

import os
from pathlib import Path

from p2p_desktop.errors import OutputError
from p2p_desktop.io.outputs import safe_name

__all__ = ["PER_IMAGE_FILE", "STATE_FILE", "SUMMARY_FILES", "ADVERSARIAL_DIR", "safe_name", "adversarial_path",
           "replace_file"]

PER_IMAGE_FILE = "per_image.csv"
STATE_FILE = "evaluation_state.json"
SUMMARY_FILES = {"summary-md": "summary.md", "summary-csv": "summary.csv", "summary-json": "summary.json"}
ADVERSARIAL_DIR = "adversarial"


def adversarial_path(out_dir: str | Path, classifier: str, attack: str, image: str) -> Path:
    """Where the adversarial of a successful (image, classifier, attack) is written."""
    rel = Path(image)
    name = rel.name if rel.suffix.lower() == ".png" else rel.name + ".png"
    return Path(out_dir) / ADVERSARIAL_DIR / safe_name(classifier) / safe_name(attack) / rel.parent / name


def replace_file(path: str | Path, data: bytes) -> Path:
    """Put ``data`` at ``path``, replacing what is there: the file is either old or new, never half.

    The bytes are written (and fsynced) beside it by the project's atomic writer, then renamed
    over ``path`` — a resumed batch rewrites its state and tables in place.
    """
    from p2p_desktop.io.outputs import atomic_write_bytes

    path = Path(path)
    fresh = atomic_write_bytes(path.with_name(f".{path.name}.new"), data)
    try:
        os.replace(fresh, path)
    except OSError as exc:
        fresh.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
