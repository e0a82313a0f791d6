"""Entry script of the frozen ``p2p-desktop`` program (PyInstaller).

torch is imported before anything else, Qt in particular: on Windows, Qt's and torch's
DLLs share names (e.g. OpenMP and MSVC runtimes) and whichever loads first wins the DLL
search; torch must see its own. The rest is ``p2p_desktop.cli.main.main()``.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

# Offline by construction (cli/main.py sets these too; set here before torch/transformers load).
for _k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_k, "1")

import torch  # noqa: E402,F401  - first, before Qt (DLL search order on Windows)


def _main() -> int:
    from p2p_desktop.cli.main import main

    return main()


if __name__ == "__main__":
    multiprocessing.freeze_support()  # a frozen child process must not re-run the app
    sys.exit(_main())
