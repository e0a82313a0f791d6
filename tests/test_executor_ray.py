"""``evaluate --executor ray`` on a real local Ray cluster (``ray start --head`` on loopback, started
by this module and stopped by its process ids): results equal to the serial executor, a worker
killed mid-run is replaced with every row written once, Ctrl-C exits 3 with the rows kept (and the
study resumes serially), an unreachable cluster or missing GPU is one line and exit 2."""

from __future__ import annotations

import csv
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# not imported here: Ray reads its authentication settings once, when first imported (in the fixture)
if importlib.util.find_spec("ray") is None:
    pytest.skip("the cluster extra (pip install 'p2p-desktop[cluster]') is part of dev", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = "demo-squeezenet1_1"
ATTACKS = ["fgsm", "pgd"]
PARAMS = {"pgd.steps": 30}  # long enough jobs that a kill lands while one is running


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    """Processes of the session the cluster's head started (Ray's workers get their own groups)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid:
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


@pytest.fixture(scope="module")
def cluster():
    """A one-node Ray cluster on loopback with its own token and short temp dir; yields its address."""
    base = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # Ray's socket paths must stay short
    token = base / "token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    os.environ.update({k: env[k] for k in saved})
    port = _free_port()
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--port", str(port),
         "--temp-dir", str(base / "r"), "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard=false",
         "--disable-usage-stats"],
        env=env, start_new_session=True, stdout=open(base / "head.log", "wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError as exc:
                if head.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"ray head did not start: {(base / 'head.log').read_text()[-2000:]}") from exc
                time.sleep(0.3)
        yield {"address": f"127.0.0.1:{port}", "env": env}
    finally:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
        for pid in _session_pids(head.pid):  # the head, GCS, raylet and every worker it started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        head.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Four unseen phantoms and the serial executor's results on them."""
    import torch

    from p2p_desktop.jobs.evaluate import evaluate
    from p2p_desktop.phantoms import write_png_dataset

    base = tmp_path_factory.mktemp("ray")
    write_png_dataset(base / "data", 4, seed=5000000, size=96)
    # one thread, as the workers and the CLI runs have (OMP_NUM_THREADS=1): a float reduction split
    # over two threads sums in another order, and 30 PGD sign steps amplify that into another image
    # (SSIM 0.9177 vs 0.9182 on a 2-core machine), which is not the executor's doing
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = evaluate(base / "data", ATTACKS, [CLASSIFIER], base / "serial", params=PARAMS)
    finally:
        torch.set_num_threads(threads)
    return base, serial


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "per_image.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _same(a: Path, b: Path) -> None:
    ra = {(r["image"], r["classifier"], r["attack"]): r for r in _rows(a)}
    rb_list = _rows(b)
    rb = {(r["image"], r["classifier"], r["attack"]): r for r in rb_list}
    assert len(rb) == len(rb_list), "a row was written twice"
    assert ra.keys() == rb.keys() and len(ra) > 0
    for key, r in ra.items():
        s = rb[key]
        assert s["success"] == r["success"] and s["adv_pred"] == r["adv_pred"] and s["error"] == r["error"], key
        for col in ("ssim", "psnr", "l2", "linf"):
            if r[col]:
                assert float(s[col]) == pytest.approx(float(r[col]), rel=1e-5, abs=1e-6), (key, col)
    adv_a = sorted(p.relative_to(a).as_posix() for p in (a / "adversarial").rglob("*.png"))
    adv_b = sorted(p.relative_to(b).as_posix() for p in (b / "adversarial").rglob("*.png"))
    assert adv_a == adv_b


def test_ray_equals_serial_and_survives_a_killed_worker(cluster, study):
    from p2p_desktop.executors.ray_executor import RayExecutor
    from p2p_desktop.jobs.evaluate import evaluate

    base, serial = study
    ex = RayExecutor(address=cluster["address"], workers=2)
    killed: dict = {}

    def started(executor):
        killed["pids"] = {w["pid"] for w in executor.worker_info()}

    def progress(event):
        # after the first row: kill a worker (SIGKILL, as the OOM killer would) while it holds a job
        if event.step >= 1 and "pid" not in killed and "pids" in killed:
            pid = sorted(killed["pids"])[0]
            os.kill(pid, signal.SIGKILL)
            killed["pid"] = pid

    ex.on_started = started
    result = evaluate(base / "data", ATTACKS, [CLASSIFIER], base / "ray", params=PARAMS, executor=ex,
                      on_progress=progress)
    assert "pid" in killed, "no worker was killed"
    # a replacement worker (a new process) produced results after the kill
    assert ex.workers_seen - killed["pids"], ex.workers_seen
    _same(base / "serial", base / "ray")
    assert [s["success_rate"] for s in result.summary] == [s["success_rate"] for s in serial.summary]


def _cli(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "p2p_desktop", *args], env=env, capture_output=True, text=True,
                          timeout=120, **kw)


def test_unreachable_cluster_and_missing_gpu_are_one_line_exit_2(cluster, study, tmp_path):
    base, _ = study
    common = ["evaluate", str(base / "data"), "--attacks", "fgsm", "--classifiers", CLASSIFIER, "--executor", "ray"]
    r = _cli(common + ["--out", str(tmp_path / "a"), "--ray-address", f"127.0.0.1:{_free_port()}"], cluster["env"])
    assert r.returncode == 2 and "cannot reach the Ray cluster" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = _cli(common + ["--out", str(tmp_path / "b"), "--ray-address", cluster["address"], "--gpus-per-worker", "1"],
             cluster["env"])
    assert r.returncode == 2 and "has 0 GPU(s)" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "b" / "per_image.csv").exists() or not _rows(tmp_path / "b")


def test_ctrl_c_exits_3_keeps_rows_and_resumes_serially(cluster, study, tmp_path):
    base, _ = study
    out = tmp_path / "c"
    args = ["evaluate", str(base / "data"), "--attacks", ",".join(ATTACKS), "--classifiers", CLASSIFIER,
            "--param", "pgd.steps=30", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "p2p_desktop", *args, "--executor", "ray", "--ray-address",
                             cluster["address"], "--workers", "1"], env=cluster["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    csv_path = out / "per_image.csv"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if csv_path.exists() and len(csv_path.read_text().splitlines()) >= 2:  # header + one finished row
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    kept = _rows(out)
    assert 1 <= len(kept) < 8
    r = _cli(args, cluster["env"])  # the same study resumed by the serial executor
    assert r.returncode == 0, r.stderr
    _same(base / "serial", out)


# -- a local instance (no --ray-address): loopback only, token readable by its owner only ------------
LOCAL_DRIVER = """
import json, os, sys
from p2p_desktop.executors.ray_executor import RayExecutor
ex = RayExecutor(workers=1)
ex.connect()
print(json.dumps({"ready": os.getpid()}), flush=True)
sys.stdin.readline()
ex.shutdown()
"""


def _is_loopback(address: str) -> bool:
    import ipaddress

    host = address.rpartition(":")[0].strip("[]")
    if host == "*":  # every interface
        return False
    ip = ipaddress.ip_address(host.partition("%")[0])
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return ip.is_loopback


def _listening(pids: set[int]) -> list[tuple[str, str]]:
    """(local address, process name) of every TCP socket listening in one of ``pids`` (``ss -ltnp``)."""
    import re

    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True, timeout=30).stdout
    found = []
    for line in out.splitlines():
        users = re.findall(r'\("([^"]*)",pid=(\d+)', line)
        if any(int(pid) in pids for _name, pid in users):
            found.append((line.split()[3], users[0][0]))
    return found


@pytest.mark.timeout(300)
def test_a_local_instance_listens_on_loopback_only_and_keeps_its_token_private(tmp_path):
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is needed to see which addresses Ray listens on")
    home = tmp_path / "home"
    home.mkdir()
    raytmp = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"HOME": str(home), "RAY_TMPDIR": str(raytmp), "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])})
    old_umask = os.umask(0o022)  # what a user's shell usually has: new files readable by all
    try:
        driver = subprocess.Popen([sys.executable, "-c", LOCAL_DRIVER], env=env, start_new_session=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        os.umask(old_umask)
    try:
        line = driver.stdout.readline()
        assert '"ready"' in line, driver.stderr.read() if driver.poll() is not None else line
        listeners = _listening(set(_session_pids(driver.pid)))
        names = {name for _addr, name in listeners}
        assert {"gcs_server", "raylet"} <= names, listeners
        assert [(a, n) for a, n in listeners if not _is_loopback(a)] == [], listeners
        token = home / ".ray" / "auth_token"
        assert token.is_file() and token.stat().st_mode & 0o777 == 0o600, oct(token.stat().st_mode)
        assert (home / ".ray").stat().st_mode & 0o077 == 0
        driver.stdin.write("\n")
        driver.stdin.flush()
        assert driver.wait(timeout=120) == 0, driver.stderr.read()
    finally:
        for pid in _session_pids(driver.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if driver.poll() is None:
            driver.kill()
        driver.wait(timeout=30)
        shutil.rmtree(raytmp, ignore_errors=True)


def test_an_existing_token_is_narrowed_and_a_token_of_the_users_choice_left_alone(tmp_path, monkeypatch):
    from p2p_desktop.executors.ray_executor import _private_token

    monkeypatch.setenv("HOME", str(tmp_path))
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("abc")
    token.chmod(0o644)
    assert _private_token() == token
    assert (token.read_text(), token.stat().st_mode & 0o777) == ("abc", 0o600)
    token.chmod(0o644)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))  # the user's own token file: not ours to change
    assert _private_token() is None and token.stat().st_mode & 0o777 == 0o644
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert _private_token() is None and token.stat().st_mode & 0o777 == 0o644


def test_sigterm_cancels_like_ctrl_c_and_is_audited_cancelled(cluster, study, tmp_path):
    """Ray's driver set-up replaced the program's SIGTERM handler with ``sys.exit(15)``: the run
    ended in Ray's native abort (exit 134), audited "failed"."""
    import json

    base, _ = study
    out, log = tmp_path / "t", tmp_path / "audit.jsonl"
    env = {**cluster["env"], "P2P_DESKTOP_AUDIT_LOG": str(log)}
    proc = subprocess.Popen([sys.executable, "-m", "p2p_desktop", "evaluate", str(base / "data"), "--attacks",
                             ",".join(ATTACKS), "--classifiers", CLASSIFIER, "--param", "pgd.steps=30", "--out",
                             str(out), "--executor", "ray", "--ray-address", cluster["address"], "--workers", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    csv_path = out / "per_image.csv"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if csv_path.exists() and len(csv_path.read_text().splitlines()) >= 2:  # header + one finished row
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3 and "cancelled" in err, (proc.returncode, err[-3000:])
    assert "Traceback" not in err and "*** SIG" not in err and "core dumped" not in err, err[-3000:]
    assert 1 <= len(_rows(out)) < 8
    records = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    assert records[-1]["event"] == "evaluate" and records[-1]["data"]["status"] == "cancelled", records[-1]
