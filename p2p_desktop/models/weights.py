"""Safe loading of weight files: safetensors, or ``torch.load(weights_only=True)`` (PyTorch's
restricted unpickler: tensors and plain containers only). Never plain pickle."""

from __future__ import annotations

import zipfile
from pathlib import Path

from p2p_desktop.errors import ModelError, UnsafeFileError

__all__ = ["load_state_dict", "WEIGHT_SUFFIXES"]

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/code/") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_state_dict(path: str | Path) -> dict:
    """Load a state dict from ``path`` without ever executing code from the file.

    ``.safetensors`` is read with safetensors. ``.pt``/``.pth`` go through
    ``torch.load(weights_only=True)``; a file that needs arbitrary unpickling (a pickle
    payload, a whole pickled module) or is TorchScript is refused with
    :class:`UnsafeFileError`. There is no fallback to full unpickling.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{path.name}: not a valid safetensors file ({exc})") from None
    if suffix in (".pt", ".pth", ".ckpt", ".bin"):
        if _is_torchscript(path):
            raise UnsafeFileError(
                f"{path.name} is a TorchScript archive, which contains code; "
                "it is not loaded (export a state dict as .safetensors instead)"
            )
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
            text = str(exc)
            if "Weights only load failed" in text or "Unsupported global" in text or "GLOBAL" in text:
                raise UnsafeFileError(
                    f"{path.name} needs full unpickling, which could run code; refused "
                    "(save the weights with safetensors or as a plain state dict)"
                ) from None
            raise ModelError(f"{path.name}: not a readable weights file ({text.splitlines()[0][:200]})") from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ModelError(f"{path.name} does not hold a state dict of tensors")
        return obj
    raise ModelError(f"{path.name}: unsupported weights format {suffix!r} (use .safetensors, .pt or .pth)")
