"""Decode budgets by the memory the whole pipeline needs, checked before anything is decoded.

A small file can expand to gigabytes: an RLE DICOM or a PNG of one colour compresses a 25
megapixel frame into kilobytes. Decoding it, converting it to float, resampling it for the
classifier and the backbone, the attack's copies, metrics and encoding the outputs take about
:data:`BYTES_PER_PIXEL` bytes of working memory per pixel of the frame, plus :data:`FIXED_BYTES`
that do not grow with it (the models and torch's buffers, loaded after the check).
:func:`check_decode_budget` refuses a frame whose need exceeds the memory available *now* (the
smallest of the system's available memory, the limits of the process's own cgroup and each of
its ancestors, v1 or v2, and the process's address-space limit), with one line, before
decoding: without it the kernel's out-of-memory killer ends the program with no message at all.

``$P2P_DESKTOP_MEMORY_BUDGET`` (bytes, or with a K/M/G suffix) sets the budget explicitly.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

__all__ = ["BYTES_PER_PIXEL", "FIXED_BYTES", "ENV_VAR", "available_memory", "cgroup_available", "memory_budget",
           "check_decode_budget"]

# Measured (CPU, demo classifier and backbone, one-frame 8-bit RLE DICOM, --export-dicom):
#     python benchmarks/memory_per_pixel.py --sizes 1024,2048,4096
# peak resident memory above the memory in use at this check grows by 204 bytes per pixel for
# FGSM and PGD and 200 for P2P (1024² to 4096²; 4096²: 3.5-3.7 GiB above the check, 4.1-4.3 GiB
# peak in all), plus 253 MiB (FGSM, PGD) to 478 MiB (P2P, demo backbone) that do not grow with
# the frame. Budgeted with a margin of about 20 %.
BYTES_PER_PIXEL = 250
FIXED_BYTES = 600 * 2**20
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


_NO_LIMIT = 2**60  # cgroup v1 writes "no limit" as 2^63 rounded down to a page


def _read_stat(path: Path, key: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    return None


def _self_cgroups(proc_root: Path) -> tuple[str | None, str | None]:
    """The process's memory group in cgroup v1 and its cgroup v2 group (paths inside each
    hierarchy), from ``/proc/self/cgroup``."""
    v1 = v2 = None
    try:
        text = (proc_root / "self" / "cgroup").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        if hier == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v1, v2


def _mount_roots(proc_root: Path) -> dict[str, str]:
    """Which group each cgroup mount shows at its mount point ("v1" for the memory controller's,
    "v2" for the unified hierarchy), from ``/proc/self/mountinfo``: in a container without its own
    cgroup namespace, /sys/fs/cgroup/memory *is* the container's group, not the hierarchy's root."""
    roots: dict[str, str] = {}
    try:
        text = (proc_root / "self" / "mountinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return roots
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 3:
            continue
        if rest[0] == "cgroup2":
            roots.setdefault("v2", fields[3])
        elif rest[0] == "cgroup" and "memory" in rest[2].split(","):
            roots.setdefault("v1", fields[3])
    return roots


def _relative(path: str, mount_root: str) -> str:
    path, mount_root = "/" + path.strip("/"), "/" + mount_root.strip("/")
    if mount_root == "/":
        return path.strip("/")
    if path == mount_root or path.startswith(mount_root + "/"):
        return path[len(mount_root):].strip("/")
    return ""  # the group is outside what is mounted: the mount point is the nearest we see


def _levels(mount: Path, rel: str) -> list[Path]:
    """The group's folder and each ancestor's up to the mount point, nearest first."""
    parts = [p for p in rel.split("/") if p and p not in (".", "..")]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _headroom(limit: int | None, usage: int | None, inactive_file: int | None) -> int | None:
    if limit is None or limit >= _NO_LIMIT:
        return None
    used = max((usage or 0) - (inactive_file or 0), 0)  # page cache the kernel reclaims first
    return max(limit - used, 0)


def cgroup_available(proc_root: str | os.PathLike = "/proc",
                     cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int | None:
    """Bytes the process's cgroups still allow: the smallest limit minus usage over the process's
    own memory group and each ancestor, in cgroup v1 (``memory.limit_in_bytes``, and
    ``hierarchical_memory_limit`` for ancestors outside the mount) and v2 (``memory.max``).
    Usage does not count inactive page cache (reclaimed before the out-of-memory killer runs).
    None when no group on the way has a limit. ``proc_root`` and ``cgroup_root`` are for tests."""
    proc_root, cgroup_root = Path(proc_root), Path(cgroup_root)
    v1, v2 = _self_cgroups(proc_root)
    roots = _mount_roots(proc_root)
    found: list[int] = []
    if v1 is not None:
        mount = cgroup_root / "memory"
        levels = _levels(mount, _relative(v1, roots.get("v1", "/")))
        for n, level in enumerate(levels):
            usage = _read_int(str(level / "memory.usage_in_bytes"))
            inactive = _read_stat(level / "memory.stat", "total_inactive_file")
            room = _headroom(_read_int(str(level / "memory.limit_in_bytes")), usage, inactive)
            if room is not None:
                found.append(room)
            if n == 0:  # the kernel's figure for the whole chain, including ancestors not mounted here
                room = _headroom(_read_stat(level / "memory.stat", "hierarchical_memory_limit"), usage, inactive)
                if room is not None:
                    found.append(room)
    if v2 is not None:
        mount = cgroup_root if (cgroup_root / "cgroup.controllers").is_file() else cgroup_root / "unified"
        for level in _levels(mount, _relative(v2, roots.get("v2", "/"))):
            room = _headroom(_read_int(str(level / "memory.max")), _read_int(str(level / "memory.current")),
                             _read_stat(level / "memory.stat", "inactive_file"))
            if room is not None:
                found.append(room)
    return min(found) if found else None


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
    values = [v for v in (_meminfo_available(), cgroup_available(), _address_space_available()) if v is not None]
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
    need = int(width) * int(height) * BYTES_PER_PIXEL + FIXED_BYTES
    budget = memory_budget()
    if budget is None or need <= budget:
        return None
    return (f"a {width}x{height} frame needs about {_gb(need)} of working memory "
            f"({BYTES_PER_PIXEL} bytes per pixel and {_gb(FIXED_BYTES)} for the models) but only {_gb(budget)} "
            "is available; refused before decoding")
