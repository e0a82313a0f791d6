"""Evaluate's jobs on a Ray cluster (``p2p-desktop evaluate … --executor ray``).

* Without ``--ray-address`` a local Ray instance is started for the command and shut down after
  it; with one, the driver joins that cluster (``ray start --head`` …) and leaves it running.
* A local instance listens on 127.0.0.1 only (GCS, raylet, workers, agents; no dashboard), and
  its authentication token (``~/.ray/auth_token``, unless ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH``
  names the user's own) is created readable by its owner only (0600): whoever can reach the
  cluster's ports with its token runs code on it.
* Each worker is an actor that loads the classifiers and the backbone once, checks the SHA-256
  of every model file against the driver's, and keeps them for all its jobs.
* Inputs travel as bytes with their SHA-256 (checked by the worker before decoding).
* A worker that dies is restarted by Ray and its job retried; the driver writes a row only when
  a job's result arrives and never twice for the same key.
* Cancelling (Ctrl-C) kills the actors, so their jobs stop; the rows written so far are kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from p2p_desktop.errors import InputError, ModelError, P2PError
from p2p_desktop.executors import ModelSpec, Unit, UnitResult

log = logging.getLogger(__name__)

__all__ = ["RayExecutor", "WorkerFailed"]

MAX_RESTARTS = 4  # a worker killed more often than this fails the study (rows written so far are kept)


class WorkerFailed(P2PError):
    """A Ray worker failed a job for good (after Ray's retries)."""

    exit_code = 1


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs Ray: pip install 'p2p-desktop[cluster]' (or pip install ray)") from None
    return ray


def _reachable(address: str, timeout: float = 3.0) -> None:
    """Refuse an address nobody answers on, in seconds instead of Ray's long retry loop."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray-address {address!r}: expected HOST:PORT (the head's GCS port, e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it with "
                         "`ray start --head` or check the address") from None


LOOPBACK = "127.0.0.1"


def _default_token_path() -> Path:
    """Where Ray keeps the token of a local instance when no ``RAY_AUTH_TOKEN(_PATH)`` is set
    (``ray._private.authentication.authentication_token_setup._get_default_token_path``)."""
    return Path.home() / ".ray" / "auth_token"


def _private_token() -> Path | None:
    """Make the default token file owner-only before Ray would write it world-readable: a new
    one is created 0600 (in a 0700 ``~/.ray`` when that folder is new), an existing one of ours
    is narrowed to 0600. None when Ray uses no default token file (authentication disabled, or
    the token given by ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH``)."""
    import secrets

    if os.environ.get("RAY_AUTH_MODE", "token").strip().lower() != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None
    path = _default_token_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:
            _narrow(path)
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))  # as ray's generate_new_authentication_token
    except OSError as exc:
        raise InputError(f"cannot keep the Ray token {path} private: {exc.strerror or exc}") from None
    return path


def _narrow(path: Path) -> None:
    """chmod 0600 a regular file of ours that others may read (a link or another user's file is left)."""
    st = os.lstat(path)
    import stat

    if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(path, 0o600)


def _init_local(ray, num_cpus: int) -> None:
    """``ray.init`` of a new local instance bound to 127.0.0.1.

    Ray binds its servers to loopback only when the node's address is exactly 127.0.0.1, but on
    Linux ``ray.init`` turns a loopback ``_node_ip_address`` into the machine's reachable address
    (``services.get_node_ip_address``) unless clusters are off (``ENABLE_RAY_CLUSTER``, the
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` switch): both are turned off while the instance starts,
    and an instance that still came up on another address is shut down and refused."""
    from ray._private import ray_constants

    token = _private_token()
    saved_env = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    saved_flag = getattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # the instance's own processes
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(num_cpus=num_cpus, num_gpus=None, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False, _node_ip_address=LOOPBACK)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = saved_env
    try:
        if token is not None and token.exists():
            _narrow(token)  # in case Ray wrote it after all
        address = ray.util.get_node_ip_address()
    except BaseException:
        ray.shutdown()
        raise
    if address != LOOPBACK:
        ray.shutdown()
        raise P2PError(f"the local Ray instance came up on {address}, not on {LOOPBACK}; it was shut down "
                       "(start one bound to loopback with `ray start --head --node-ip-address 127.0.0.1` "
                       "and pass --ray-address)")


class _Worker:
    """The actor: models loaded once, then one job per call."""

    def __init__(self, spec: ModelSpec) -> None:
        from p2p_desktop.device import resolve_device
        from p2p_desktop.hashing import sha256_file
        from p2p_desktop.models.classifier import load_classifier

        self.pid = os.getpid()
        self.name = f"{socket.gethostname()}:{self.pid}"
        dev = resolve_device(spec.device)
        self.classifiers = {}
        for given, digest in spec.classifiers:
            clf = load_classifier(given, device=dev)
            got = clf.card.sha256 or sha256_file(clf.card.weights_path)
            actual = sha256_file(clf.card.weights_path)
            if got != digest or actual != digest:
                raise ModelError(f"worker {self.name}: classifier {given} has SHA-256 {actual[:12]}…, the driver's "
                                 f"is {digest[:12]}…; every worker must load the same model files")
            self.classifiers[clf.name] = clf
        self.backbone = None
        if spec.backbone is not None:
            from p2p_desktop.models.backbone import load_backbone

            self.backbone = load_backbone(spec.backbone, device=dev, dtype=spec.backbone_dtype)
            if self.backbone.weights_sha256() != spec.backbone_sha256:
                raise ModelError(f"worker {self.name}: backbone {spec.backbone} has SHA-256 "
                                 f"{self.backbone.weights_sha256()[:12]}…, the driver's is "
                                 f"{str(spec.backbone_sha256)[:12]}…; every worker must load the same files")
        self.attacks = {a.name: a for a in spec.attacks}
        self.tmp = Path(tempfile.mkdtemp(prefix="p2p-worker-"))

    def info(self) -> dict[str, Any]:
        return {"pid": self.pid, "name": self.name}

    def run(self, unit: Unit, data: bytes, digest: str) -> UnitResult:
        from p2p_desktop.executors.unit import run_unit

        if hashlib.sha256(data).hexdigest() != digest:
            raise InputError(f"{unit.image_id}: the bytes received differ from the driver's (SHA-256 mismatch)")
        folder = self.tmp / hashlib.sha256(unit.image_id.encode()).hexdigest()[:16]
        folder.mkdir(exist_ok=True)
        path = folder / Path(unit.image_id).name
        path.write_bytes(data)
        try:
            return run_unit(unit, path, self.classifiers[unit.classifier], self.attacks[unit.attack], self.backbone,
                            worker=self.name)
        finally:
            path.unlink(missing_ok=True)


class RayExecutor:
    """Runs the units on Ray actors that load the models once (see the module docstring)."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, gpus_per_worker: float = 0.0,
                 poll_s: float = 0.2) -> None:
        self.address = address
        self.workers = workers
        self.gpus_per_worker = float(gpus_per_worker)
        self.poll_s = poll_s
        self.actors: list[Any] = []
        self.started_local = False
        self.on_started = None  # called with self once the actors are up (tests, progress)
        self.workers_seen: set[int] = set()  # process ids of the workers that returned results
        self.round_trips: list[tuple[float, float]] = []  # (seconds from dispatch to result, attack seconds)
        self.ready_s: float | None = None  # seconds from run() to every worker's models loaded

    # -- cluster ---------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Join the cluster (or start a local one); refuse one that cannot give the GPUs asked for."""
        ray = _import_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        with _keep_sigterm():  # ray.init replaces the driver's SIGTERM handler with sys.exit
            if ray.is_initialized():
                pass
            elif self.address:
                _reachable(self.address)
                try:
                    ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                    raise InputError(f"cannot join the Ray cluster at {self.address}: {first}") from None
            else:
                _init_local(ray, self.workers or max(1, (os.cpu_count() or 1)))
                self.started_local = True
        resources = ray.cluster_resources()
        if self.gpus_per_worker > 0 and float(resources.get("GPU", 0)) < self.gpus_per_worker:
            self.shutdown()
            raise InputError(f"--gpus-per-worker {self.gpus_per_worker:g}: the Ray cluster has "
                             f"{float(resources.get('GPU', 0)):g} GPU(s)")
        if self.workers is None:
            if self.gpus_per_worker > 0:
                self.workers = max(1, int(float(resources.get("GPU", 0)) // self.gpus_per_worker))
            else:
                self.workers = max(1, int(float(resources.get("CPU", 1))))

    def shutdown(self) -> None:
        ray = _import_ray()
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []
        if self.started_local and ray.is_initialized():
            ray.shutdown()
            self.started_local = False

    def worker_info(self) -> list[dict[str, Any]]:
        ray = _import_ray()
        return ray.get([a.info.remote() for a in self.actors])

    # -- jobs ------------------------------------------------------------------------------------------
    def run(self, spec: ModelSpec, units: Sequence[Unit], cancel) -> Iterator[UnitResult]:
        ray = _import_ray()
        if not units:
            return
        t_start = time.perf_counter()
        self.connect()
        try:
            device = "cuda" if self.gpus_per_worker > 0 else spec.device
            spec = ModelSpec(**{**spec.__dict__, "device": device})
            actor_cls = ray.remote(num_cpus=1, num_gpus=self.gpus_per_worker or 0, max_restarts=MAX_RESTARTS,
                                   max_task_retries=MAX_RESTARTS)(_Worker)
            n = max(1, min(int(self.workers or 1), len(units)))
            self.actors = [actor_cls.remote(spec) for _ in range(n)]
            try:
                ray.get([a.info.remote() for a in self.actors])  # models loaded and verified everywhere
            except ray.exceptions.RayActorError as exc:
                cause = getattr(exc, "cause", None) or exc
                raise _one_line(cause) from None
            self.ready_s = time.perf_counter() - t_start
            if self.on_started is not None:
                self.on_started(self)
            payloads: dict[str, tuple[Any, str]] = {}
            queue = deque(units)
            idle = list(self.actors)
            inflight: dict[Any, tuple[Any, Unit, float]] = {}
            tries: dict[Unit, int] = {}
            while queue or inflight:
                while queue and idle:
                    unit = queue.popleft()
                    if unit.path not in payloads:
                        data = Path(unit.path).read_bytes()
                        payloads[unit.path] = (ray.put(data), hashlib.sha256(data).hexdigest())
                    ref_data, digest = payloads[unit.path]
                    actor = idle.pop()
                    inflight[actor.run.remote(unit, ref_data, digest)] = (actor, unit, time.perf_counter())
                cancel.check()
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=self.poll_s)
                for ref in ready:
                    actor, unit, t_sent = inflight.pop(ref)
                    idle.append(actor)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayActorError:
                        tries[unit] = tries.get(unit, 0) + 1
                        if tries[unit] > MAX_RESTARTS:
                            raise WorkerFailed(f"{unit.classifier} × {unit.attack}: {unit.image_id}: the workers "
                                               f"died {tries[unit]} times on this job; finished rows are kept "
                                               "(run the same command again to resume)") from None
                        log.warning("worker lost on %s; retrying", unit.image_id)
                        queue.appendleft(unit)
                        continue
                    except ray.exceptions.RayTaskError as exc:
                        raise _one_line(getattr(exc, "cause", None) or exc) from None
                    self.workers_seen.add(int(result.worker.rsplit(":", 1)[-1]))
                    self.round_trips.append((time.perf_counter() - t_sent,
                                             float((result.row or {}).get("seconds") or 0.0)))
                    yield result
        finally:
            self.shutdown()


class _keep_sigterm:
    """Keep the caller's SIGTERM handler across ``ray.init``, which installs its own
    (``sys.exit(15)``) in the driver: a terminated evaluation then ran no clean-up of its own,
    was audited "failed" and ended in Ray's native abort (exit 134). With the caller's handler
    (the CLI's: cancel like Ctrl-C) SIGTERM cancels it cleanly, exit 3."""

    def __enter__(self):
        import signal
        import threading

        self._main = threading.current_thread() is threading.main_thread()
        self._handler = signal.getsignal(signal.SIGTERM) if self._main else None
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self._main and self._handler is not None:
            signal.signal(signal.SIGTERM, self._handler)


def _one_line(exc: BaseException) -> P2PError:
    if isinstance(exc, P2PError):
        return exc
    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    return WorkerFailed(f"a Ray worker failed: {type(exc).__name__}: {text}")
