"""DICOM networking with pynetdicom: C-ECHO, C-FIND, C-GET, C-MOVE and C-STORE (a
:class:`~p2p_desktop.pacs.nodes.WebNode` goes through DICOMweb instead, see
:mod:`p2p_desktop.pacs.web`).

Every failure is one :class:`PacsError` line: the node is unreachable (refused, no answer
within the connect timeout), the association is rejected (with the node's reason, e.g. "called
AE title not recognised"), no presentation context was accepted, or the node stopped
answering (ACSE/DIMSE/network timeouts). Nothing waits forever.

Long operations take ``on_progress(Progress)`` (:class:`~p2p_desktop.progress.Progress`: instances
done of total, a message, the elapsed time from which the ETA follows) and a
:class:`~p2p_desktop.cancel.CancelToken` (checked between instances; a cancel aborts the
association and raises :class:`~p2p_desktop.errors.Cancelled`, leaving nothing written).
Sends and retrievals append one audit record each (node, AE titles, SOP Instance UIDs, status),
also when they fail.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2p_desktop.errors import Cancelled
from p2p_desktop.pacs.errors import PacsError
from p2p_desktop.pacs.nodes import DEFAULT_AE_TITLE, DEFAULT_STORAGE_PORT, Node, WebNode, check_ae_title
from p2p_desktop.pacs.records import UID as _UID
from p2p_desktop.pacs.records import Instance
from p2p_desktop.pacs.records import json_value as _json_value
from p2p_desktop.progress import Progress, ProgressCallback

__all__ = ["Timeouts", "Instance", "Transfer", "echo", "find", "retrieve", "send", "LEVELS", "METHODS"]

logging.getLogger("pynetdicom").addHandler(logging.NullHandler())

#: Inside a transfer: ``report(done, total, text)``, made by :func:`_reporter` from ``on_progress``.
Report = Callable[[int, int, str], None]


def _reporter(on_progress: ProgressCallback | None) -> Report:
    """``report(done, total, text)`` sending one :class:`Progress` (elapsed since now) to ``on_progress``."""
    started = time.monotonic()

    def report(done: int, total: int, text: str) -> None:
        if on_progress is not None:
            on_progress(Progress(step=done, total=total, message=text, elapsed=time.monotonic() - started))

    return report
LEVELS = ("patient", "study", "series")
METHODS = ("get", "move")
_DATE = re.compile(r"^(\d{8})?(-(\d{8})?)?$")


@dataclass(frozen=True)
class Timeouts:
    """Seconds: TCP connect, association (ACSE), each DIMSE response, and network silence."""

    connect: float = 5.0
    acse: float = 10.0
    dimse: float = 30.0
    network: float = 60.0

    @classmethod
    def uniform(cls, seconds: float) -> Timeouts:
        if not seconds > 0:
            raise PacsError(f"timeout must be positive, got {seconds}")
        return cls(seconds, seconds, seconds, seconds)


@dataclass
class Transfer:
    """The outcome of a send or a retrieval, as recorded in the audit log."""

    node: Node | WebNode
    operation: str  # "send", "retrieve-get", "retrieve-move", "retrieve-wado"
    ae_title: str
    instances: list[Instance] = field(default_factory=list)
    study_uid: str | None = None
    audit: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return all(not i.status.startswith("failed") for i in self.instances)

    @property
    def paths(self) -> list[Path]:
        return [Path(i.path) for i in self.instances if i.path]

    def record(self, status: str) -> dict[str, Any]:
        return {"operation": self.operation, "node": self.node.name, "node_ae_title": self.node.ae_title,
                "url": getattr(self.node, "url", None),
                "host": self.node.host, "port": self.node.port, "ae_title": self.ae_title,
                "tls": self.node.tls.enabled, "study_instance_uid": self.study_uid, "status": status,
                "sop_instance_uids": [i.sop_instance_uid for i in self.instances],
                "instances": [{"sop_instance_uid": i.sop_instance_uid, "sop_class_uid": i.sop_class_uid,
                               "status": i.status, "path": i.path} for i in self.instances]}


# ----------------------------------------------------------------------------- association


def _tls_context(node: Node) -> tuple[ssl.SSLContext, str] | None:
    if not node.tls.enabled:
        return None
    node.tls.check()
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=os.path.expanduser(node.tls.ca) if node.tls.ca else None)
        if node.tls.cert:
            ctx.load_cert_chain(os.path.expanduser(node.tls.cert), os.path.expanduser(node.tls.key))
    except (ssl.SSLError, OSError) as exc:
        raise PacsError(f"{node.name}: cannot use the TLS files: {exc}") from None
    return ctx, node.host


def _check_reachable(node: Node, timeouts: Timeouts, tls: tuple[ssl.SSLContext, str] | None = None) -> None:
    """Open and close a TCP connection (and the TLS handshake) first, so 'unreachable' and
    'TLS refused' each get their own clear line."""
    where = node.describe()
    try:
        with socket.create_connection((node.host, node.port), timeout=timeouts.connect) as sock:
            if tls is not None:
                ctx, hostname = tls
                with ctx.wrap_socket(sock, server_hostname=hostname):
                    pass
    except socket.gaierror as exc:
        raise PacsError(f"{where}: unknown host {node.host!r} ({exc.strerror})") from None
    except ConnectionRefusedError:
        raise PacsError(f"{where}: connection refused (is the DICOM server running on port {node.port}?)") from None
    except ssl.SSLError as exc:
        raise PacsError(f"{where}: TLS handshake failed: {getattr(exc, 'reason', None) or exc} "
                        "(check the certificates and that the node's port speaks TLS)") from None
    except TimeoutError:
        raise PacsError(f"{where}: no answer within {timeouts.connect:g} s "
                        "(host down, firewall or wrong address)") from None
    except OSError as exc:
        raise PacsError(f"{where}: cannot connect: {exc.strerror or exc}") from None


def _tls_refusal(node: Node, tls: tuple[ssl.SSLContext, str], timeouts: Timeouts) -> str | None:
    """After a failed TLS association: the alert the node sends (TLS 1.3 rejects a client
    certificate only after the handshake), or None."""
    ctx, hostname = tls
    try:
        with socket.create_connection((node.host, node.port), timeout=timeouts.connect) as sock:
            with ctx.wrap_socket(sock, server_hostname=hostname) as tls_sock:
                tls_sock.settimeout(min(2.0, timeouts.acse))
                tls_sock.recv(1)
    except ssl.SSLError as exc:
        return str(getattr(exc, "reason", None) or exc).replace("_", " ").lower()
    except OSError:
        return None
    return None


def _new_ae(ae_title: str, timeouts: Timeouts):
    from pynetdicom import AE

    ae = AE(ae_title=check_ae_title(ae_title, "our AE title"))
    ae.connection_timeout = timeouts.connect
    ae.acse_timeout = timeouts.acse
    ae.dimse_timeout = timeouts.dimse
    ae.network_timeout = timeouts.network
    return ae


def _why_not(assoc, node: Node, timeouts: Timeouts, elapsed: float) -> str:
    where = node.describe()
    prim = getattr(assoc.acceptor, "primitive", None)
    if assoc.is_rejected and prim is not None:
        reason = prim.reason_str.rstrip(".")
        kind = "transient" if prim.result == 0x02 else "permanent"
        return (f"{where}: association rejected ({kind}, {prim.source_str.lower()}): {reason}"
                + (f" (our AE title {assoc.requestor.ae_title!r} may not be configured on the node)"
                   if "Calling AE" in reason else "")
                + (f" (the node's AE title is not {node.ae_title!r})" if "Called AE" in reason else ""))
    if prim is not None and prim.result == 0x00 and not assoc.accepted_contexts:
        asked = sorted({str(cx.abstract_syntax) for cx in assoc.rejected_contexts})
        names = ", ".join(_uid_name(u) for u in asked[:4]) + (" ..." if len(asked) > 4 else "")
        return f"{where}: the node accepted none of the proposed presentation contexts ({names})"
    hint = "and does it speak TLS" if node.tls.enabled else "or does it require TLS"
    if prim is None and elapsed < timeouts.acse * 0.9:
        return (f"{where}: the node closed the connection without answering the association request "
                f"(is it a DICOM port, {hint}?)")
    if prim is None:
        return (f"{where}: no association response within {timeouts.acse:g} s "
                f"(ACSE timeout; is it a DICOM port, {hint}?)")
    return f"{where}: the association was aborted by the node"


def _uid_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name and name != uid else uid


@contextmanager
def _associate(node: Node, ae, timeouts: Timeouts, **kwargs) -> Iterator[Any]:
    """An established association with ``node``; ``ae`` (and any server it runs) is shut down
    on the way out, whatever happens."""
    assoc = None
    try:
        tls = _tls_context(node)
        _check_reachable(node, timeouts, tls)
        for attempt in (1, 2):
            start = time.monotonic()
            try:
                assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, tls_args=tls, **kwargs)
            except (OSError, ssl.SSLError) as exc:
                raise PacsError(f"{node.describe()}: cannot associate: {exc}") from None
            elapsed = time.monotonic() - start
            quick_close = (not assoc.is_established and assoc.acceptor.primitive is None
                           and elapsed < timeouts.acse * 0.9)
            # pynetdicom can miss a rejection when the node closes the connection right after
            # sending it (seen about once in 40 with Orthanc): ask once more before reporting
            if not quick_close or attempt == 2:
                break
        if not assoc.is_established:
            if tls is not None and getattr(assoc.acceptor, "primitive", None) is None:
                reason = _tls_refusal(node, tls, timeouts)
                if reason:
                    raise PacsError(f"{node.describe()}: the node closed the TLS connection ({reason}): "
                                    "it refused our certificate, or we sent none and it requires one")
            raise PacsError(_why_not(assoc, node, timeouts, elapsed))
        yield assoc
    finally:
        try:
            if assoc is not None and assoc.is_established:
                assoc.release()
        finally:
            ae.shutdown()


def _lost(node: Node, assoc, timeouts: Timeouts, what: str, since: float) -> PacsError:
    """The error for a missing DIMSE response: a timeout (pynetdicom then aborts the
    association itself) or the node aborting, told apart by the time waited since ``since``."""
    if time.monotonic() - since >= 0.9 * min(timeouts.dimse, timeouts.network):
        return PacsError(f"{node.describe()}: no {what} response within {timeouts.dimse:g} s (DIMSE timeout)")
    return PacsError(f"{node.describe()}: the node aborted the association during {what}")


def _status_text(status) -> tuple[int | None, str]:
    code = getattr(status, "Status", None)
    if code is None:
        return None, "no response"
    from pynetdicom.status import code_to_category

    comment = str(getattr(status, "ErrorComment", "") or "").strip()
    text = f"0x{int(code):04X} {code_to_category(int(code))}" + (f": {comment}" if comment else "")
    return int(code), text


# ----------------------------------------------------------------------------- echo / find


def echo(node: Node | WebNode, *, ae_title: str = DEFAULT_AE_TITLE, timeouts: Timeouts = Timeouts()) -> float:
    """C-ECHO the node (a DICOMweb node: one QIDO-RS query); returns the round trip in seconds."""
    if isinstance(node, WebNode):
        from p2p_desktop.pacs.web import web_echo

        return web_echo(node, timeouts=timeouts)
    from pynetdicom.sop_class import Verification

    start = time.monotonic()
    ae = _new_ae(ae_title, timeouts)
    ae.add_requested_context(Verification)
    with _associate(node, ae, timeouts) as assoc:
        sent = time.monotonic()
        status = assoc.send_c_echo()
        code, text = _status_text(status)
        if code is None:
            raise _lost(node, assoc, timeouts, "C-ECHO", sent)
        if code != 0x0000:
            raise PacsError(f"{node.describe()}: C-ECHO failed: {text}")
    return time.monotonic() - start


_KEYS = {
    "patient": ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies"),
    "study": ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription",
              "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
              "NumberOfStudyRelatedInstances"),
    "series": ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber",
               "SeriesDescription", "NumberOfSeriesRelatedInstances"),
}


def find(node: Node | WebNode, *, level: str = "study", patient_id: str | None = None, modality: str | None = None,
         study_date: str | None = None, study_uid: str | None = None, ae_title: str = DEFAULT_AE_TITLE,
         timeouts: Timeouts = Timeouts(), cancel=None) -> list[dict[str, Any]]:
    """C-FIND at ``patient``, ``study`` or ``series`` level; one dict per match (keyword -> value).

    ``study_date`` is ``YYYYMMDD`` or a range ``YYYYMMDD-YYYYMMDD`` (either end open); the
    series level needs ``study_uid``.
    """
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import (
        PatientRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelFind,
    )

    level = (level or "study").lower()
    if level not in LEVELS:
        raise PacsError(f"query level {level!r} is not one of {', '.join(LEVELS)}")
    if study_date and not _DATE.match(study_date):
        raise PacsError(f"study date {study_date!r} is not YYYYMMDD or YYYYMMDD-YYYYMMDD")
    if study_uid and not _UID.match(study_uid):
        raise PacsError(f"study UID {study_uid!r} is not a DICOM UID")
    if level == "series" and not study_uid:
        raise PacsError("a series-level query needs the study UID (--study UID)")
    if level == "patient" and (modality or study_date or study_uid):
        raise PacsError("a patient-level query takes only --patient-id (modality and date are study keys)")
    query = Dataset()
    query.QueryRetrieveLevel = level.upper()
    for key in _KEYS[level]:
        setattr(query, key, "")
    if patient_id:
        query.PatientID = patient_id
    if study_date:
        query.StudyDate = study_date
    if study_uid:
        query.StudyInstanceUID = study_uid
    if modality:
        if level == "series":
            query.Modality = modality
        else:
            query.ModalitiesInStudy = modality
    if isinstance(node, WebNode):
        from p2p_desktop.pacs.web import web_find

        return web_find(node, level=level, query=query, keys=_KEYS[level], timeouts=timeouts, cancel=cancel)
    model = (PatientRootQueryRetrieveInformationModelFind if level == "patient"
             else StudyRootQueryRetrieveInformationModelFind)
    ae = _new_ae(ae_title, timeouts)
    ae.add_requested_context(model)
    matches: list[dict[str, Any]] = []
    with _associate(node, ae, timeouts) as assoc:
        last = time.monotonic()
        for status, identifier in assoc.send_c_find(query, model):
            code, text = _status_text(status)
            if code is None:
                raise _lost(node, assoc, timeouts, "C-FIND", last)
            last = time.monotonic()
            if code in (0xFF00, 0xFF01):
                if identifier is not None:
                    matches.append({k: _json_value(identifier.get(k)) for k in _KEYS[level]})
                if cancel is not None and cancel.cancelled:
                    assoc.abort()
                    cancel.check()
            elif code != 0x0000:
                raise PacsError(f"{node.describe()}: C-FIND failed: {text}")
    return matches


# ----------------------------------------------------------------------------- audit


def _audit(transfer: Transfer, status: str, log) -> None:
    from p2p_desktop.audit import append_event

    transfer.audit = append_event("pacs-" + transfer.operation.split("-")[0], transfer.record(status), log)


def _audit_check(log) -> None:
    from p2p_desktop.audit import AuditLog

    AuditLog(log).check()


# ----------------------------------------------------------------------------- retrieve


def _storage_contexts():
    from pydicom.uid import AllTransferSyntaxes
    from pynetdicom import AllStoragePresentationContexts, StoragePresentationContexts
    from pynetdicom.presentation import build_context

    return ([build_context(cx.abstract_syntax, AllTransferSyntaxes) for cx in StoragePresentationContexts],
            [build_context(cx.abstract_syntax, AllTransferSyntaxes) for cx in AllStoragePresentationContexts])


#: Received instances are spooled here (a hidden folder inside the output folder) while a
#: DIMSE retrieval runs: pynetdicom's STORE_RECV_CHUNKED_DATASET and its temporary files are
#: process-wide, so retrievals take turns.
_SPOOL_LOCK = threading.Lock()
_DISK_MARGIN = 64 * 2**20


@contextmanager
def _spooled(out_dir: Path) -> Iterator[Path]:
    """pynetdicom writes each received C-STORE dataset straight to a file in a fresh spool folder
    inside ``out_dir`` (not into memory: a 512 MB instance took about 4x its size), which is
    removed on the way out with whatever is left in it (a refused or aborted instance)."""
    import functools
    import shutil
    import tempfile

    from pynetdicom import _config, dimse_messages

    with _SPOOL_LOCK:
        spool = Path(tempfile.mkdtemp(prefix=".p2p-spool-", dir=out_dir))
        saved = (_config.STORE_RECV_CHUNKED_DATASET, dimse_messages.NamedTemporaryFile)
        _config.STORE_RECV_CHUNKED_DATASET = True
        dimse_messages.NamedTemporaryFile = functools.partial(tempfile.NamedTemporaryFile, dir=str(spool))
        try:
            yield spool
        finally:
            _config.STORE_RECV_CHUNKED_DATASET, dimse_messages.NamedTemporaryFile = saved
            shutil.rmtree(spool, ignore_errors=True)


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


class _Receiver:
    """C-STORE handler: moves each received instance, unchanged, from the spool into an OutputSet.

    Each instance is checked against a budget while it arrives (``on_data``, per PDU): the memory
    available (it has to fit in memory to be opened later) and the free space of the output
    folder. One over it aborts the association and the retrieval fails with that reason."""

    def __init__(self, outs, study_uid: str, cancel, report: Report, transfer: Transfer) -> None:
        self.outs, self.study_uid, self.cancel = outs, study_uid, cancel
        self.report, self.transfer = report, transfer
        self.total = 0
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.received = 0  # bytes of the instance now arriving
        self.limit, self.why = self._budget()

    def _budget(self) -> tuple[int | None, str]:
        import shutil

        from p2p_desktop.io.memory import memory_budget

        bounds = []
        memory = memory_budget()
        if memory is not None:
            bounds.append((memory, f"the {_size(memory)} of memory available"))
        try:
            disk = shutil.disk_usage(self.outs.out_dir).free - _DISK_MARGIN
            bounds.append((max(disk, 0), f"the {_size(max(disk, 0))} free in {self.outs.out_dir}"))
        except OSError:
            pass
        return min(bounds) if bounds else (None, "")

    def _refuse(self, what: str) -> None:
        if self.error is None:
            self.error = PacsError(f"{self.transfer.node.describe()}: {what} of study {self.study_uid} exceeds the "
                                   f"budget of {self.why}; retrieval refused, nothing kept")

    def on_data(self, event) -> None:
        """EVT_DATA_RECV: count the bytes of the instance arriving; abort once over the budget."""
        self.received += len(event.data)
        if self.limit is not None and self.received > self.limit:
            first = self.error is None
            self._refuse(f"an instance (over {_size(self.limit)} received so far)")
            if not first:
                return
            if event.assoc.is_requestor:
                # C-GET: the requesting thread waits for the next message, with the reactor paused;
                # end the wait as pynetdicom does for a lost connection: that thread then aborts
                # (a hostile node need not stop sending nor close its end)
                event.assoc.dimse.msg_queue.put((None, None))
            else:
                event.assoc.abort(block=False)  # C-MOVE: our storage SCP's association

    def __call__(self, event) -> int:
        self.received = 0  # the next instance starts from nothing
        req = event.request
        uid = str(req.AffectedSOPInstanceUID or "")
        sop_class = str(req.AffectedSOPClassUID or "")
        if self.cancel is not None and self.cancel.cancelled:
            return 0xFE00
        if self.error is not None:
            return 0xA700
        spooled = Path(event.dataset_path)
        size = spooled.stat().st_size
        if self.limit is not None and size > self.limit:
            self._refuse(f"instance {uid} ({_size(size)})")
            with self.lock:
                self.transfer.instances.append(Instance(uid, sop_class, "failed: over the budget"))
            return 0xA700
        try:
            from pydicom import dcmread

            header = dcmread(spooled, stop_before_pixels=True, defer_size=2**16,
                             specific_tags=["StudyInstanceUID"])
            study = str(header.get("StudyInstanceUID", ""))
        except Exception:  # noqa: BLE001 - a dataset pydicom cannot parse
            study = ""
        if study != self.study_uid:
            with self.lock:
                self.transfer.instances.append(Instance(uid, sop_class, "failed: not of the requested study"))
            return 0xA900  # dataset does not match SOP class / identifier mismatch
        name = f"{uid}.dcm" if _UID.match(uid) and len(uid) <= 64 else f"instance-{len(self.transfer.instances)}.dcm"
        try:
            with self.lock:
                path = self.outs.adopt_file(name, spooled, kind="dicom")
                self.transfer.instances.append(Instance(uid, sop_class, "success", str(path)))
                done = len(self.transfer.paths)
                if self.limit is not None:  # the disk has less room now
                    self.limit, self.why = self._budget()
        except BaseException as exc:  # noqa: BLE001 - reported by the requesting thread
            self.error = exc
            return 0xA700
        self.report(done, max(self.total, done), f"received {done} instance(s)")
        return 0x0000


def retrieve(node: Node | WebNode, study_uid: str, out_dir: str | os.PathLike, *, method: str = "get",
             ae_title: str = DEFAULT_AE_TITLE, storage_port: int = DEFAULT_STORAGE_PORT,
             timeouts: Timeouts = Timeouts(), on_progress: ProgressCallback | None = None, cancel=None,
             audit_log: str | os.PathLike | None = None) -> Transfer:
    """Retrieve one study into ``out_dir`` (one ``<SOPInstanceUID>.dcm`` per instance, the
    dataset exactly as the node sent it) by C-GET, or by C-MOVE to our storage SCP listening on
    ``127.0.0.1:storage_port`` (the node must know our AE title at that port).

    All or nothing: on any error or cancel the files written so far are removed. Appends an
    audit record either way.
    """
    from p2p_desktop.io.outputs import OutputSet

    method = (method or "get").lower()
    if method not in METHODS:
        raise PacsError(f"retrieval method {method!r} is not get or move")
    if not study_uid or not _UID.match(study_uid) or len(study_uid) > 64:
        raise PacsError(f"study UID {study_uid!r} is not a DICOM UID")
    ae_title = check_ae_title(ae_title, "our AE title")
    _audit_check(audit_log)
    transfer = Transfer(node, f"retrieve-{'wado' if isinstance(node, WebNode) else method}", ae_title,
                        study_uid=study_uid)
    try:
        with OutputSet(out_dir, [], cancel=None) as outs:
            if isinstance(node, WebNode):
                from p2p_desktop.pacs.web import web_retrieve

                web_retrieve(node, study_uid, outs, transfer, timeouts=timeouts, report=_reporter(on_progress),
                             cancel=cancel)
            else:
                _retrieve_dimse(node, study_uid, outs, transfer, method=method, ae_title=ae_title,
                                storage_port=storage_port, timeouts=timeouts, report=_reporter(on_progress),
                                cancel=cancel)
            _audit(transfer, "success", audit_log)
    except Cancelled:
        _finish_failed(transfer, "cancelled", audit_log)
        raise
    except PacsError as exc:
        _finish_failed(transfer, f"failed: {exc}", audit_log)
        raise
    return transfer


def _retrieve_dimse(node: Node, study_uid: str, outs, transfer: Transfer, *, method: str, ae_title: str,
                    storage_port: int, timeouts: Timeouts, report: Report, cancel) -> None:
    with _spooled(outs.out_dir):
        _retrieve_spooled(node, study_uid, outs, transfer, method=method, ae_title=ae_title,
                          storage_port=storage_port, timeouts=timeouts, report=report, cancel=cancel)


def _retrieve_spooled(node: Node, study_uid: str, outs, transfer: Transfer, *, method: str, ae_title: str,
                      storage_port: int, timeouts: Timeouts, report: Report, cancel) -> None:
    from pydicom.dataset import Dataset
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import (
        StudyRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
    )

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    requested, supported = _storage_contexts()
    receiver = _Receiver(outs, study_uid, cancel, report, transfer)
    handlers = [(evt.EVT_C_STORE, receiver), (evt.EVT_DATA_RECV, receiver.on_data)]
    ae = _new_ae(ae_title, timeouts)
    if method == "get":
        model = StudyRootQueryRetrieveInformationModelGet
        ae.add_requested_context(model)
        for cx in requested[:127]:
            ae.add_requested_context(cx.abstract_syntax, cx.transfer_syntax)
        kwargs = {"ext_neg": [build_role(cx.abstract_syntax, scp_role=True) for cx in requested[:127]],
                  "evt_handlers": handlers}
    else:
        model = StudyRootQueryRetrieveInformationModelMove
        ae.add_requested_context(model)
        ae.supported_contexts = supported
        try:
            ae.start_server(("127.0.0.1", int(storage_port)), block=False, evt_handlers=handlers)
        except OSError as exc:
            ae.shutdown()
            raise PacsError(f"cannot listen on 127.0.0.1:{storage_port} for the C-MOVE: "
                            f"{exc.strerror or exc} (choose another storage port)") from None
        kwargs = {}
    with _associate(node, ae, timeouts, **kwargs) as assoc:
        responses = (assoc.send_c_get(query, model) if method == "get"
                     else assoc.send_c_move(query, ae_title, model))
        final = None
        last = time.monotonic()
        for status, _identifier in responses:
            code, text = _status_text(status)
            if code is None:
                if receiver.error is not None:  # we aborted it: an instance over the budget
                    raise receiver.error
                raise _lost(node, assoc, timeouts, f"C-{method.upper()}", last)
            last = time.monotonic()
            remaining = int(getattr(status, "NumberOfRemainingSuboperations", 0) or 0)
            done = int(getattr(status, "NumberOfCompletedSuboperations", 0) or 0) + \
                int(getattr(status, "NumberOfFailedSuboperations", 0) or 0) + \
                int(getattr(status, "NumberOfWarningSuboperations", 0) or 0)
            receiver.total = max(receiver.total, remaining + done)
            if code == 0xFF00:
                report(done, remaining + done, f"C-{method.upper()}: {done}/{remaining + done}")
                if cancel is not None and cancel.cancelled:
                    assoc.abort()
                    cancel.check()
                continue
            final = (code, text, status)
        if cancel is not None:
            cancel.check()
        if receiver.error is not None:
            raise receiver.error
        if final is None:
            raise _lost(node, assoc, timeouts, f"C-{method.upper()}", last)
        code, text, status = final
        failed = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
        if code not in (0x0000, 0xB000) or failed:
            raise PacsError(f"{node.describe()}: C-{method.upper()} of study {study_uid} failed: {text}"
                            + (f" ({failed} instance(s) not sent)" if failed else "")
                            + ("; the node may not know our AE title as a move destination"
                               if code == 0xA801 else ""))
        if not transfer.paths:
            raise PacsError(f"{node.describe()}: study {study_uid} not found (nothing was retrieved)")


def _finish_failed(transfer: Transfer, status: str, log) -> None:
    for inst in transfer.instances:
        inst.path = None  # rolled back
    try:
        _audit(transfer, status, log)
    except Exception:  # noqa: BLE001 - the original error is the one to report
        pass


# ----------------------------------------------------------------------------- send


def _not_a_file(path: Path) -> str | None:
    """Why ``path`` is not a regular file that can be read (what it is instead), or None."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "is a broken symbolic link" if os.path.islink(path) else "no such file"
    except NotADirectoryError:
        return "no such file (a part of the path is not a folder)"
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), None)
    return f"is {kind}, not a file" if kind else "is not a regular file"


def _read_header(path: Path):
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    what = _not_a_file(path)
    if what:
        raise PacsError(f"cannot send {path}: {what}")
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise PacsError(f"not a DICOM file: {path} ({exc})") from None
    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    sop_uid = str(ds.get("SOPInstanceUID", "") or "")
    ts = str(meta.get("TransferSyntaxUID", "")) if meta else ""
    if not sop_class or not sop_uid or not ts:
        raise PacsError(f"{path}: lacks SOPClassUID, SOPInstanceUID or a transfer syntax; cannot be sent")
    return sop_class, sop_uid, ts


def send(node: Node | WebNode, files: Iterable[str | os.PathLike], *, ae_title: str = DEFAULT_AE_TITLE,
         timeouts: Timeouts = Timeouts(), on_progress: ProgressCallback | None = None, cancel=None,
         audit_log: str | os.PathLike | None = None) -> Transfer:
    """C-STORE each file, unchanged (its own transfer syntax), over one association.

    Every file is checked before connecting. Raises :class:`PacsError` when any instance is
    not stored (the others stay stored; the audit record lists the status of each).
    """
    from pynetdicom.sop_class import uid_to_sop_class  # noqa: F401 - keeps the import error early

    paths = [Path(f) for f in files]
    if not paths:
        raise PacsError("no files to send")
    headers = [_read_header(p) for p in paths]
    ae_title = check_ae_title(ae_title, "our AE title")
    _audit_check(audit_log)
    transfer = Transfer(node, "send", ae_title)
    try:
        if isinstance(node, WebNode):
            from p2p_desktop.pacs.web import web_send

            web_send(node, paths, transfer, timeouts=timeouts, report=_reporter(on_progress), cancel=cancel)
        else:
            _send_dimse(node, paths, headers, transfer, ae_title=ae_title, timeouts=timeouts,
                        report=_reporter(on_progress), cancel=cancel)
    except Cancelled:
        _audit_safely(transfer, "cancelled", audit_log)
        raise
    except PacsError as exc:
        _audit_safely(transfer, f"failed: {exc}", audit_log)
        raise
    bad = [i for i in transfer.instances if i.status.startswith("failed")]
    if bad:
        _audit_safely(transfer, "failed", audit_log)
        first = bad[0]
        raise PacsError(f"{node.describe()}: {len(bad)} of {len(paths)} instance(s) not stored; "
                        f"{Path(first.path).name}: {first.status.removeprefix('failed: ')}")
    _audit(transfer, "success", audit_log)
    return transfer


def _send_dimse(node: Node, paths: list[Path], headers, transfer: Transfer, *, ae_title: str, timeouts: Timeouts,
                report: Report, cancel) -> None:
    wanted: dict[tuple[str, str], None] = {(c, ts): None for c, _u, ts in headers}
    if len(wanted) > 128:
        raise PacsError(f"{len(wanted)} different SOP class / transfer syntax pairs; send at most 128 at once")
    ae = _new_ae(ae_title, timeouts)
    for sop_class, ts in wanted:
        ae.add_requested_context(sop_class, ts)
    with _associate(node, ae, timeouts) as assoc:
        accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}
        for n, (path, (sop_class, sop_uid, ts)) in enumerate(zip(paths, headers), start=1):
            if cancel is not None and cancel.cancelled:
                assoc.abort()
                cancel.check()
            inst = Instance(sop_uid, sop_class, path=str(path))
            transfer.instances.append(inst)
            if (sop_class, ts) not in accepted:
                inst.status = (f"failed: the node does not accept {_uid_name(sop_class)} in "
                               f"{_uid_name(ts)}")
                continue
            sent = time.monotonic()
            status = assoc.send_c_store(path)
            code, text = _status_text(status)
            if code is None:
                inst.status = "failed: no response"
                raise _lost(node, assoc, timeouts, "C-STORE", sent)
            inst.status = ("success" if code == 0x0000 else
                           f"warning: {text}" if code in (0xB000, 0xB006, 0xB007) else f"failed: {text}")
            report(n, len(paths), f"sent {path.name}")


def _audit_safely(transfer: Transfer, status: str, log) -> None:
    try:
        _audit(transfer, status, log)
    except Exception:  # noqa: BLE001 - the original error is the one to report
        pass
