"""Decode budgets by the memory the whole pipeline needs, checked before anything is decoded.

A small file can expand to gigabytes: an RLE DICOM or a PNG of one colour compresses a 25
megapixel frame into kilobytes. Decoding it, converting it to float, resampling it for the
classifier and the backbone, the attack's copies, metrics and encoding the outputs take about
:data:`BYTES_PER_PIXEL` bytes of working memory per pixel of the frame. :func:`check_decode_budget`
refuses a frame whose need exceeds the memory available *now* (the smallest of the system's
available memory, the container's cgroup limit and the process's address-space limit), with
one line, before decoding: without it the kernel's out-of-memory killer ends the program with
no message at all.

``$P2P_DESKTOP_MEMORY_BUDGET`` (bytes, or with a K/M/G suffix) sets the budget explicitly.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

__all__ = ["BYTES_PER_PIXEL", "ENV_VAR", "available_memory", "memory_budget", "check_decode_budget"]

BYTES_PER_PIXEL = 150
ENV_VAR = "P2P_DESKTOP_MEMORY_BUDGET"


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    for limit_f, used_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                            ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                             "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _read_int(limit_f)
        if limit is not None and limit < 2**60:
            used = _read_int(used_f) or 0
            return max(limit - used, 0)
    return None


def _address_space_available() -> int | None:
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            size = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        size = 0
    return max(soft - size, 0)


def available_memory() -> int | None:
    """Bytes this process can still use (None when the system does not say)."""
    values = [v for v in (_meminfo_available(), _cgroup_available(), _address_space_available()) if v is not None]
    return min(values) if values else None


def _parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B")
    factor = 1
    for suffix, f in (("K", 2**10), ("M", 2**20), ("G", 2**30), ("T", 2**40)):
        if text.endswith(suffix):
            text, factor = text[:-1], f
            break
    return int(float(text) * factor)


def memory_budget() -> int | None:
    """``$P2P_DESKTOP_MEMORY_BUDGET`` if set (and valid), else :func:`available_memory`."""
    env = os.environ.get(ENV_VAR)
    if env:
        try:
            value = _parse_size(env)
            if value > 0:
                return value
        except ValueError:
            pass
    return available_memory()


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_decode_budget(width: int, height: int) -> str | None:
    """None when a ``width`` x ``height`` frame fits the memory budget, else the reason (one line)."""
    need = int(width) * int(height) * BYTES_PER_PIXEL
    budget = memory_budget()
    if budget is None or need <= budget:
        return None
    return (f"a {width}x{height} frame needs about {_gb(need)} of working memory "
            f"({BYTES_PER_PIXEL} bytes per pixel) but only {_gb(budget)} is available; refused before decoding")
