"""Background jobs for the GUI: core work on a QThread, core events turned into queued signals.

The core never knows about Qt. A job is a plain function ``job(report, status, cancel)``:
``report`` receives the core's progress events — :class:`p2p_desktop.progress.Progress`, the
project's one event type (an attack's step, a PACS transfer's instances, a batch's images) —
and re-emits them unchanged as ``progress``; ``status`` takes a line of text for the phases
before the first event (loading a model, connecting); ``cancel`` is the
:class:`~p2p_desktop.cancel.CancelToken` the core checks once per iteration. (The study
browser's loader also streams what it found through ``report``: results, not progress.)
:class:`JobRunner` runs one job at a time on its own ``QThread`` (a ``QObject`` worker moved
there) and re-emits everything as Qt signals, which reach the GUI thread queued — only the GUI
thread touches widgets. A job ends in exactly one of ``succeeded``, ``failed`` or
``cancelled``, then ``finished`` once the thread has stopped. Threads are never terminated:
cancelling sets the token and the core returns within one step.

Why not superqt's ``thread_worker``/``create_worker`` (what napari and ndv use): superqt is not
a dependency of this project (nor is the qtpy it needs), and it would not remove much here:

* its workers are ``QRunnable``s on ``QThreadPool.globalInstance()``, so there is no thread of
  ours to wait for when the app quits (``JobRunner.wait``) or for the tests' thread-leak check
  (:func:`live_threads`) — only a wait on the whole global pool;
* cancellation there is ``worker.quit()``, honoured only between a generator's ``yield``s (a
  ``FunctionWorker`` cannot be stopped at all); our core does not yield, it calls ``report``
  and checks a :class:`CancelToken` inside every step, so the token would still be passed and
  the ``Cancelled`` it raises would arrive as ``errored`` beside every other error;
* ``WorkerBase.run`` catches ``Exception`` into one ``errored`` signal; we split it three ways
  (``Cancelled`` → ``cancelled``; a :class:`~p2p_desktop.errors.P2PError` → one line, no
  traceback; anything else → one line + logged traceback, and out-of-memory advice), so that
  split would be rewritten in a handler anyway;
* it replaces ``warnings.showwarning`` process-wide while a job runs (to emit ``warned``), which
  interferes with the warnings-as-errors policy of the test suite and the CLI's warning scope;
* it emits three to five more signals from Python per job (``started``, ``finished``,
  ``_finished``, ``returned``/``errored``, ``warned``), each of which costs a reference to
  ``True`` on the PySide6 builds that :mod:`p2p_desktop.gui.refguard` guards against.

:func:`attack_job` is the job the Run button (and ``--smoke-test``) starts: it loads the
classifier and backbone *in the worker* and runs the attack job (:mod:`p2p_desktop.jobs.attack`), audited.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from p2p_desktop.cancel import CancelToken
from p2p_desktop.errors import Cancelled, P2PError
from p2p_desktop.jobs.audit import GUI_RUN as GUI_COMMAND  # the ``command`` of the window's runs
from p2p_desktop.progress import ProgressCallback

__all__ = [
    "Job",
    "JobRunner",
    "JobWorker",
    "AttackRequest",
    "ModelCache",
    "attack_job",
    "describe_error",
    "live_threads",
]

log = logging.getLogger("p2p_desktop.gui")

#: ``job(report, status, cancel) -> result``; ``report`` takes :class:`~p2p_desktop.progress.Progress` events.
Job = Callable[[ProgressCallback, Callable[[str], None], CancelToken], Any]

_threads: weakref.WeakSet[QThread] = weakref.WeakSet()


def live_threads() -> list[QThread]:
    """Job threads started by this module that are still running (tests check it is empty)."""
    return [t for t in list(_threads) if _is_running(t)]


def _is_running(thread: QThread) -> bool:
    try:
        return thread.isRunning()
    except RuntimeError:  # the C++ object is gone
        return False


def describe_error(exc: BaseException, device: str | None = None) -> tuple[str, bool]:
    """(one readable line, is an internal error). User errors carry no traceback."""
    if isinstance(exc, P2PError):
        return str(exc), False
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if isinstance(exc, MemoryError) or "OutOfMemoryError" in name or "out of memory" in text.lower():
        where = f" on {device}" if device else ""
        return (f"Out of memory{where}: the job needs more memory than is free. Try the CPU device, "
                "a smaller image, or a faster preset."), False
    return f"{name}: {text}" if text else name, True


class JobWorker(QObject):
    """Runs one job on the thread it was moved to; talks only through signals."""

    progress = Signal(object)  # p2p_desktop.progress.Progress
    status = Signal(str)
    succeeded = Signal(object)
    failed = Signal(str, str)  # message, traceback ("" for user errors)
    cancelled = Signal()

    def __init__(self, job: Job, cancel: CancelToken, device: str | None = None) -> None:
        super().__init__()
        self._job = job
        self._cancel = cancel
        self._device = device

    @Slot()
    def run(self) -> None:
        try:
            result = self._job(self.progress.emit, self.status.emit, self._cancel)
        except Cancelled:
            self.cancelled.emit()
        except BaseException as exc:  # noqa: BLE001 - a failing job must never kill the app
            message, internal = describe_error(exc, self._device)
            details = traceback.format_exc() if internal else ""
            if internal:
                log.error("job failed: %s\n%s", message, details)
            else:
                log.warning("job failed: %s", message)
            self.failed.emit(message, details)
        else:
            self.succeeded.emit(result)
        finally:
            thread = self.thread()
            if thread is not None:
                thread.quit()


class JobRunner(QObject):
    """Starts jobs on a worker thread, one at a time, and relays their signals (GUI thread)."""

    started = Signal(str)  # title
    progress = Signal(object)  # p2p_desktop.progress.Progress, as the job reported it
    status = Signal(str)
    succeeded = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    finished = Signal()  # the thread has stopped; always last

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: JobWorker | None = None
        self._cancel: CancelToken | None = None
        self.title = ""
        self.started_at = 0.0

    def is_running(self) -> bool:
        return self._thread is not None

    @property
    def cancel_requested(self) -> bool:
        return self._cancel is not None and self._cancel.cancelled

    def start(self, job: Job, title: str = "job", device: str | None = None) -> None:
        """Run ``job`` on a new worker thread; refuses while another job runs."""
        if self._thread is not None:
            raise RuntimeError(f"a job is already running ({self.title})")
        self._cancel = CancelToken()
        thread = QThread()
        thread.setObjectName(f"p2p-job:{title}")
        worker = JobWorker(job, self._cancel, device)
        worker.moveToThread(thread)
        worker.progress.connect(self.progress)
        worker.status.connect(self.status)
        worker.succeeded.connect(self.succeeded)
        worker.failed.connect(self.failed)
        worker.cancelled.connect(self.cancelled)
        thread.started.connect(worker.run)
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._worker, self.title = thread, worker, title
        self.started_at = time.perf_counter()
        _threads.add(thread)
        self.started.emit(title)
        thread.start()

    def cancel(self) -> None:
        """Ask the running job to stop (it stops within one iteration)."""
        if self._cancel is not None:
            self._cancel.cancel()

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Block until the thread has stopped (used when the app quits); True if it did."""
        thread = self._thread
        if thread is None:
            return True
        done = thread.wait(timeout_ms)
        if done:
            self._on_thread_finished()
        return done

    @Slot()
    def _on_thread_finished(self) -> None:
        thread, worker = self._thread, self._worker
        if thread is None:
            return
        thread.wait()  # `finished` is emitted just before the thread really ends
        self._thread = self._worker = None
        if worker is not None:
            worker.deleteLater()
        thread.deleteLater()
        self.finished.emit()


# -- the attack job -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackRequest:
    """Everything the worker needs for one attack run (built and validated on the GUI thread)."""

    study: Any  # p2p_desktop.io.Study
    attack: Any  # an Attack instance with its validated config
    classifier: str  # a registered name, a model card .json or a folder with card.json
    backbone: str | None = None  # "demo" or a diffusers folder; loaded only if the attack needs it
    device: str = "auto"
    true_label: str | None = None


class ModelCache:
    """Loaded classifiers, kept across runs (keyed by spec and device); thread-safe.

    Backbones are cached by :func:`p2p_desktop.models.backbone.load_backbone` itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._classifiers: dict[tuple[str, str], Any] = {}

    def classifier(self, spec: str, device: str):
        from p2p_desktop.models.classifier import load_classifier

        key = (spec, device)
        with self._lock:
            clf = self._classifiers.get(key)
            if clf is None:
                clf = load_classifier(spec, device=device)
                self._classifiers[key] = clf
            return clf

    def backbone(self, spec: str, device: str):
        from p2p_desktop.models.backbone import load_backbone

        return load_backbone(spec, device=device)

    def clear(self) -> None:
        with self._lock:
            self._classifiers.clear()


def attack_job(request: AttackRequest, models: ModelCache) -> Job:
    """The job for one attack: load models (here, off the GUI thread), then run the attack."""

    def job(report, status, cancel: CancelToken):
        from p2p_desktop.jobs.attack import audited_run

        # audited like ``p2p-desktop attack``: finished, cancelled or failed, one record each
        return audited_run(request.study, request.attack, request.classifier, request.device, GUI_COMMAND,
                           lambda: run(report, status, cancel), describe=lambda exc: describe_error(exc)[0])

    def run(report, status, cancel: CancelToken):
        from p2p_desktop.device import resolve_device
        from p2p_desktop.jobs.attack import run as run_attack

        device = resolve_device(request.device)
        status(f"loading classifier {request.classifier} on {device}…")
        classifier = models.classifier(request.classifier, device)
        cancel.check()
        backbone = None
        if getattr(request.attack, "requires_backbone", False):
            spec = request.backbone or "demo"
            status(f"loading diffusion backbone {spec} on {device}…")
            backbone = models.backbone(spec, device)
            cancel.check()
        status(f"running {request.attack.name} on {request.study.name}…")
        return run_attack(request.study, classifier, request.attack, backbone=backbone, on_step=report,
                          cancel=cancel, true_label=request.true_label)

    return job

