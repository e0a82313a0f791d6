"""Run a command under a real cgroup memory limit (v1 or v2), or skip with the reason.

``memory_limited(limit_bytes)`` is a context manager that makes a fresh memory group with that
limit and yields ``wrap(argv) -> argv``: a command that enters the group and then ``exec``s
``argv``, so the process (and its children) are limited from the start. The group is removed
afterwards. It skips the test when the process is not root or the machine has no usable
memory controller (no cgroup v1 ``memory`` hierarchy, no cgroup v2 with ``memory`` enabled).
"""

from __future__ import annotations

import os
import shlex
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path("/sys/fs/cgroup")


def _v2_root() -> Path | None:
    for root in (ROOT, ROOT / "unified"):
        try:
            if "memory" in (root / "cgroup.subtree_control").read_text().split():
                return root
        except OSError:
            continue
    return None


@contextmanager
def memory_limited(limit: int):
    """A fresh memory cgroup limited to ``limit`` bytes; yields ``wrap(argv) -> argv``."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("a real cgroup memory limit needs root")
    name = f"p2p-test-{uuid.uuid4().hex[:12]}"
    v1 = ROOT / "memory"
    if (v1 / "memory.limit_in_bytes").is_file():
        group, limit_file = v1 / name, "memory.limit_in_bytes"
    elif _v2_root() is not None:
        group, limit_file = _v2_root() / name, "memory.max"
    else:
        pytest.skip("no cgroup memory controller (neither cgroup v1 'memory' nor cgroup v2 with memory enabled)")
    try:
        group.mkdir()
        (group / limit_file).write_text(str(int(limit)))
        if limit_file == "memory.limit_in_bytes" and (group / "memory.memsw.limit_in_bytes").is_file():
            try:  # no swap either, where the kernel accounts it
                (group / "memory.memsw.limit_in_bytes").write_text(str(int(limit)))
            except OSError:
                pass
        elif (group / "memory.swap.max").is_file():
            (group / "memory.swap.max").write_text("0")
    except OSError as exc:
        if group.exists():
            group.rmdir()
        pytest.skip(f"cannot make a memory cgroup at {group}: {exc}")
    procs = group / "cgroup.procs"

    def wrap(argv: list[str]) -> list[str]:
        return ["/bin/sh", "-c", f"echo $$ > {shlex.quote(str(procs))} && exec {shlex.join(argv)}"]

    try:
        yield wrap
    finally:
        for _ in range(50):  # the processes have exited; the kernel may take a moment to let go
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
