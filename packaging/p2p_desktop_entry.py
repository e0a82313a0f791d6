"""Entry script of the frozen ``p2p-desktop`` program (PyInstaller).

torch is imported before Qt: on Windows, Qt's and torch's DLLs share names (OpenMP, MSVC
runtime pieces) and whichever loads first wins the DLL search; torch must see its own. So
torch comes first on Windows always, and elsewhere whenever the desktop app may open.
Sub-commands, ``--version`` and ``--help`` never load Qt, and there torch stays lazy (as in
a source install): ``p2p-desktop --version`` answers in well under a second instead of
paying torch's start-up. The rest is ``p2p_desktop.cli.main.main()``.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

__all__ = ["gui_may_open"]

# Offline by construction (cli/main.py sets these too; set here before torch/transformers load).
for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_k, "1")


def gui_may_open(argv: list[str]) -> bool:
    """False when the arguments ask for a sub-command, ``--version`` or ``--help`` (no Qt then);
    True for no arguments or studies to open."""
    value_next = False
    for arg in argv:
        if value_next:
            value_next = False
            continue
        if arg in ("--version", "-h", "--help"):
            return False
        if arg == "--screenshot":  # the only top-level option that takes a value
            value_next = True
            continue
        if not arg.startswith("-"):
            # a sub-command, or a study to open (``p2p-desktop FILE|FOLDER ...``: the app opens);
            # a folder named like a sub-command only costs torch's start-up time here
            return os.path.exists(arg)
    return True


if sys.platform == "win32" or gui_may_open(sys.argv[1:]):
    import torch  # noqa: F401  - before Qt (DLL search order on Windows)


def _main() -> int:
    from p2p_desktop.cli.main import main

    return main()


if __name__ == "__main__":
    multiprocessing.freeze_support()  # a frozen child process must not re-run the app
    sys.exit(_main())
