"""Run ``p2p-desktop ARGS`` from source and record every file it opens (for ``frozen_jobs.py trace``).

An audit hook (PEP 578) sees each ``open`` event, whether from ``open()``, ``os.open`` or
``io.open_code``; the paths are appended to ``$P2P_TRACE_OPENS`` when the program exits. The
program runs exactly as ``p2p-desktop`` does: ``p2p_desktop.cli.main.main()``.
"""

from __future__ import annotations

import atexit
import os
import sys

__all__ = ["main"]

_OPENED: set[str] = set()


def _hook(event: str, args: tuple) -> None:
    if event in ("open", "os.open") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        _OPENED.add(os.path.abspath(path))


def _flush() -> None:
    target = os.environ.get("P2P_TRACE_OPENS")
    if target:
        with open(target, "a", encoding="utf-8", errors="replace") as fh:
            fh.writelines(p + "\n" for p in sorted(_OPENED))


def main() -> int:
    """Install the hook, then run the program with this process's arguments."""
    sys.addaudithook(_hook)
    atexit.register(_flush)
    from p2p_desktop.cli.main import main as program

    return program()


if __name__ == "__main__":
    sys.exit(main())
