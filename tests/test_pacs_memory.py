"""A PACS node cannot exhaust our memory (issue 28 item 3): received instances are streamed to
disk, checked against the memory budget and the free disk space while they arrive, and one over
it is refused with one line, an audit record of the failed retrieval and nothing left behind.

The node is a real, hostile pynetdicom C-GET SCP on loopback (tests/hostile_scp.py, in its own
process) serving one very large instance; the retrieving CLI runs in a subprocess, under a real
cgroup memory limit where the machine allows it (the instance arrived whole in memory, about 4x
its size at the peak: a 1 GB instance in a 3 GB cgroup was killed with exit 137, no message, no
audit record and an empty folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.cgroup import memory_limited

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parent.parent
MB = 2**20

_CLI = (
    "import sys\n"
    "from p2p_desktop.cli.main import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('PEAK_KB', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))\n"
    "sys.exit(rc)\n")


@contextmanager
def hostile_node(folder: Path, size: int, move_port: int = 0):
    """The hostile SCP serving one instance of about ``size`` bytes (C-MOVE to ``move_port``);
    yields its port-file info."""
    folder.mkdir(parents=True, exist_ok=True)
    port_file = folder / "port.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.hostile_scp", str(port_file), str(size), str(folder),
                             str(move_port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the hostile node did not start: {proc.stderr.read() if proc.poll() else ''}")
            time.sleep(0.1)
        time.sleep(0.1)
        yield json.loads(port_file.read_text())
    finally:
        proc.kill()
        proc.wait()


def _retrieve(tmp_path: Path, node: dict, wrap=lambda argv: argv, env_extra: dict | None = None,
              method: str = "get", storage_port: int = 0):
    spool = tmp_path / "tmpdir"  # pynetdicom's temporary files would land here
    spool.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "P2P_DESKTOP_MEMORY_BUDGET"}
    env.update({"P2P_DESKTOP_HOME": str(tmp_path / "home"), "P2P_DESKTOP_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
                "TMPDIR": str(spool), "PYTHONPATH": str(REPO), **(env_extra or {})})
    argv = [sys.executable, "-c", _CLI, "pacs", "retrieve", f"{node['ae_title']}@127.0.0.1:{node['port']}",
            "--study", node["study"], "--out", str(tmp_path / "study"), "--method", method,
            "--ae-title", "P2PTEST", "--timeout", "60"]
    argv += ["--storage-port", str(storage_port)] if storage_port else []
    proc = subprocess.run(wrap(argv), capture_output=True, text=True, env=env, timeout=240)
    peak = int(proc.stdout.split("PEAK_KB")[1].split()[0]) * 1024 if "PEAK_KB" in proc.stdout else None
    return proc, peak


def _audit(tmp_path: Path) -> list[dict]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _assert_refused(tmp_path: Path, proc, node: dict) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-1500:])
    assert len(lines) == 1 and "budget" in lines[0] and "refused" in lines[0], proc.stderr
    assert not (tmp_path / "study").exists()  # no partial file, no empty folder
    assert list((tmp_path / "tmpdir").iterdir()) == []  # nothing spooled left behind
    rec = _audit(tmp_path)[-1]
    assert rec["event"] == "pacs-retrieve" and rec["data"]["study_instance_uid"] == node["study"]
    assert rec["data"]["status"].startswith("failed:") and "budget" in rec["data"]["status"], rec


def test_instance_over_the_budget_is_refused_in_a_real_cgroup(tmp_path):
    """640 MB instance, 600 MB cgroup: was exit 137 with no message; now one line, exit 2, audited."""
    with memory_limited(600 * 10**6) as wrap, hostile_node(tmp_path / "node", 640 * MB) as node:
        proc, _peak = _retrieve(tmp_path, node, wrap)
    _assert_refused(tmp_path, proc, node)
    assert "memory" in proc.stderr


def test_large_instance_within_the_budget_is_streamed_to_disk(tmp_path):
    """256 MB instance in the same 600 MB cgroup: received whole (it took about 4x its size in
    memory, and was killed); now it streams to disk and the process stays far below its size."""
    with memory_limited(600 * 10**6) as wrap, hostile_node(tmp_path / "node", 256 * MB) as node:
        proc, peak = _retrieve(tmp_path, node, wrap)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-1500:])
    files = list((tmp_path / "study").iterdir())
    assert [f.name for f in files] == [f"{node['sop']}.dcm"]
    assert abs(files[0].stat().st_size - node["size"]) < 4096  # our file meta instead of the node's
    assert peak is not None and peak < 200 * MB, f"peak {peak / MB:.0f} MB for a {node['size'] / MB:.0f} MB instance"
    assert list((tmp_path / "tmpdir").iterdir()) == []
    assert [p.name for p in (tmp_path / "study").iterdir() if p.name.startswith(".")] == []
    assert _audit(tmp_path)[-1]["data"]["status"] == "success"


def test_budget_from_the_environment_refuses_without_root(tmp_path):
    """$P2P_DESKTOP_MEMORY_BUDGET (no cgroup needed): a 64 MB instance against a 32 MB budget."""
    with hostile_node(tmp_path / "node", 64 * MB) as node:
        start = time.monotonic()
        proc, peak = _retrieve(tmp_path, node, env_extra={"P2P_DESKTOP_MEMORY_BUDGET": "32M"})
        elapsed = time.monotonic() - start
    _assert_refused(tmp_path, proc, node)
    assert "32 MiB" in proc.stderr
    assert elapsed < 40, f"{elapsed:.0f} s: it waited for the 60 s DIMSE timeout instead of stopping at once"


def test_c_move_instance_over_the_budget_is_refused(tmp_path):
    """The same over C-MOVE: the node connects to our storage SCP and sends the instance there."""
    from tests.orthanc import free_port

    port = free_port()
    with hostile_node(tmp_path / "node", 64 * MB, move_port=port) as node:
        start = time.monotonic()
        proc, _peak = _retrieve(tmp_path, node, env_extra={"P2P_DESKTOP_MEMORY_BUDGET": "32M"}, method="move",
                                storage_port=port)
        elapsed = time.monotonic() - start
    _assert_refused(tmp_path, proc, node)
    assert elapsed < 40, f"{elapsed:.0f} s: it waited for the 60 s DIMSE timeout instead of stopping at once"
