"""Helpers shared by the sub-commands: JSON on stdout, progress bars on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from p2p_desktop.jsonsafe import finite_json

__all__ = ["emit_json", "progress_bar", "add_device_arg", "add_dtype_arg", "apply_dtype", "split_list", "seed_arg",
           "finite_json", "outputs_complete", "TERMINATION"]


class _Termination:
    """Where the running command stands for a SIGTERM or Ctrl-C (``p2p_desktop.cli.main``):
    before :func:`outputs_complete` it cancels (everything written rolled back, exit 3); after,
    the outputs are complete and stay, so it ends the command with exit 0 and says so."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.complete = False  # the command's outputs are written and audited
        self.requested = False  # a SIGTERM arrived (also one whose exception was swallowed)


TERMINATION = _Termination()


def outputs_complete() -> None:
    """Say that the command's outputs are written and audited: a termination from now on keeps
    them and exits 0 (one that arrived while they were committed is acted on now)."""
    TERMINATION.complete = True
    if TERMINATION.requested:
        raise KeyboardInterrupt("terminated")


def emit_json(obj: Any) -> None:
    """Exactly one JSON object on stdout (strict JSON: no NaN or Infinity)."""
    sys.stdout.write(json.dumps(finite_json(obj), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


def progress_bar(total: int, desc: str, unit: str = "it"):
    """A tqdm bar on stderr (shows count, rate and ETA); silent when stderr is not a TTY and
    P2P_PROGRESS is unset, so logs stay clean."""
    import os

    from tqdm import tqdm

    disable = not (sys.stderr.isatty() or os.environ.get("P2P_PROGRESS"))
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable,
                dynamic_ncols=True, leave=False)


def add_device_arg(p) -> None:
    """Add the ``--device`` option (auto, cpu, cuda or mps)."""
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="compute device (default: auto = CUDA, then MPS, then CPU)")


def seed_arg(text: str) -> int:
    """argparse type of ``--seed``: a whole number from 0 to 2^63-1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 0 <= value <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2^63-1, got {text}")
    return value


def add_dtype_arg(p, default_help: str = "the preset's, else auto") -> None:
    """Add the ``--dtype`` option: precision of the diffusion backbone (``default_help`` names the default)."""
    p.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"],
                   help="precision of the diffusion backbone for diff-pgd/p2p (auto: fp16 on CUDA, fp32 elsewhere; "
                        f"default: {default_help}); recorded in the provenance")


def apply_dtype(attack, dtype: str | None, device: str):
    """The attack with ``--dtype`` applied (see :func:`p2p_desktop.attacks.procedure.apply_dtype`)."""
    from p2p_desktop.attacks.procedure import apply_dtype as _apply

    return _apply(attack, dtype, device)


def split_list(text: str | None) -> list[str]:
    """The non-empty items of a comma-separated option, stripped (empty for None)."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]
