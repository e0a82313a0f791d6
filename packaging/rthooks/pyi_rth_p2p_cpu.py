"""Runtime hook of the CPU build: hide CUDA devices.

The CPU build keeps only the CUDA libraries torch needs to import (they are link-time
dependencies of the CUDA wheel) and drops the ones loaded on demand (cuDNN engines,
cuSOLVER, ...), so a GPU must never be picked: ``--device auto`` falls back to CPU.
"""

import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["P2P_DESKTOP_BUILD"] = "cpu"
