"""Device selection: ``auto`` picks CUDA, then MPS, then CPU."""

from __future__ import annotations

from p2p_desktop.errors import InputError

__all__ = ["resolve_device", "DEVICES", "DTYPES", "check_dtype"]

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "fp32", "fp16", "bf16")


def resolve_device(name: str = "auto") -> str:
    """The torch device for ``name`` ("auto" picks CUDA, then MPS, then the CPU); an unknown one is an InputError."""
    import torch

    name = (name or "auto").lower()
    if name not in DEVICES and not name.startswith("cuda:"):
        raise InputError(f"unknown device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but no CUDA GPU is available (use --device cpu)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' requested but Apple MPS is not available (use --device cpu)")
    return name


def check_dtype(device: str, dtype: str | None) -> str:
    """Refuse a precision the device cannot run (one clear line); returns the dtype name.

    fp16 is a GPU precision (CUDA, MPS): on CPU most half-precision kernels are missing or
    emulated, so it is refused there (use bf16 or fp32). bf16 needs a CUDA GPU that supports it
    (compute capability 8.0+), or a CPU; on MPS it is probed.
    """
    import torch

    name = (dtype or "auto").lower()
    if name not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    kind = str(device).split(":")[0]
    if name == "fp16" and kind == "cpu":
        raise InputError("dtype fp16 cannot run on the CPU (no half-precision kernels); use bf16 or fp32 on CPU, "
                         "or --device cuda")
    if name == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError("dtype bf16 is not supported by this CUDA GPU; use fp16 or fp32")
    if name in ("fp16", "bf16") and kind == "mps":
        try:
            torch.ones(2, 2, device="mps", dtype=torch.float16 if name == "fp16" else torch.bfloat16) @ \
                torch.ones(2, 2, device="mps", dtype=torch.float16 if name == "fp16" else torch.bfloat16)
        except (RuntimeError, TypeError):
            raise InputError(f"dtype {name} is not supported on this Apple GPU (MPS); use fp32") from None
    return name
