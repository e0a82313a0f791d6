"""DICOMweb nodes (QIDO-RS search, WADO-RS retrieve, STOW-RS store) through ``dicomweb-client``,
for nodes that only offer the web API. Same contract as :mod:`p2p_desktop.pacs.client`: one
:class:`PacsError` line per failure (connection refused, timeout, TLS, HTTP status), progress
and cancel between instances, one audit record per send or retrieval.

A retrieval writes each instance as WADO-RS delivered it (its stored transfer syntax, asked
for with ``application/dicom; transfer-syntax=*``), re-encoded by pydicom: the datasets and
pixel data are equal to the node's, the bytes of the file need not be.

A redirect is followed only within the node's own origin (scheme, host and port): a node that
redirects a request elsewhere gets one :class:`PacsError` line, and the other address receives
nothing (no query, and no STOW-RS body re-posted by a 307).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

from p2p_desktop.errors import Cancelled
from p2p_desktop.pacs.errors import PacsError

__all__ = ["web_echo", "web_find", "web_retrieve", "web_send"]

logging.getLogger("dicomweb_client").addHandler(logging.NullHandler())

# One page of QIDO-RS results. (dicomweb-client's get_remaining pages with offset, which loops
# forever against a server that ignores offset, so it is not used.)
MAX_RESULTS = 5000


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, the port made explicit; port None when it is not a number."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port


def _show_origin(origin: tuple[str, str, int | None]) -> str:
    """``scheme://host:port`` on one printable line (a hostile Location may hold control characters)."""
    from p2p_desktop.io.files import one_line

    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return one_line(f"{scheme}://{host}" + (f":{port}" if port is not None else ""), 200)


@functools.cache
def _session_types():
    """(the session class that refuses cross-origin redirects, the error it raises); made on
    first use so that importing this module does not import requests."""
    import requests

    class CrossOriginRedirect(requests.exceptions.RequestException):
        def __init__(self, target: str, code: int) -> None:
            super().__init__(f"redirected (HTTP {code}) to {target}")
            self.target, self.code = target, code

    class SameOriginSession(requests.Session):
        origin: tuple[str, str, int | None] | None = None

        def get_redirect_target(self, resp):
            from urllib.parse import urljoin

            target = super().get_redirect_target(resp)
            if target:
                there = _origin(urljoin(resp.url, target))
                if there != self.origin or there[2] is None:
                    resp.close()
                    raise CrossOriginRedirect(_show_origin(there), resp.status_code)
            return target

    return SameOriginSession, CrossOriginRedirect


def _client(node, timeouts):
    from dicomweb_client.api import DICOMwebClient

    session_type, _ = _session_types()
    session = session_type()
    session.origin = _origin(node.url)
    if node.tls.ca:
        session.verify = os.path.expanduser(node.tls.ca)
    if node.tls.cert:
        session.cert = (os.path.expanduser(node.tls.cert), os.path.expanduser(node.tls.key))
    try:
        client = DICOMwebClient(url=node.url, session=session, timeout=(timeouts.connect, timeouts.dimse))
    except ValueError as exc:
        raise PacsError(f"{node.describe()}: {exc}") from None
    client.set_http_retry_params(retry=False)
    return client


def _error(node, exc: BaseException, what: str) -> PacsError:
    import requests

    where = node.describe()
    if isinstance(exc, _session_types()[1]):
        return PacsError(f"{where}: the node redirected the {what} request (HTTP {exc.code}) to {exc.target}, "
                         f"another address than {_show_origin(_origin(node.url))}; not followed")
    if isinstance(exc, requests.exceptions.SSLError):
        return PacsError(f"{where}: TLS failed during {what}: {exc.__context__ or exc}".splitlines()[0])
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return PacsError(f"{where}: no answer within the connect timeout (host down, firewall or wrong address)")
    if isinstance(exc, requests.exceptions.Timeout):
        return PacsError(f"{where}: no {what} response in time (read timeout)")
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        if "refused" in text.lower():
            return PacsError(f"{where}: connection refused (is the DICOMweb server running?)")
        if "Name or service not known" in text or "nodename nor servname" in text:
            return PacsError(f"{where}: unknown host")
        return PacsError(f"{where}: cannot connect for {what}")
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        hint = {401: " (authentication required)", 403: " (forbidden)",
                404: " (not found: is the URL the DICOMweb root, e.g. .../dicom-web?)"}.get(code, "")
        return PacsError(f"{where}: {what} failed: HTTP {code} {exc.response.reason}{hint}")
    return PacsError(f"{where}: {what} failed: {type(exc).__name__}: {exc}".splitlines()[0])


def _call(node, what: str, fn, *args, **kwargs):
    import requests

    try:
        return fn(*args, **kwargs)
    except (requests.exceptions.RequestException, ValueError, KeyError) as exc:
        raise _error(node, exc, what) from None


def web_echo(node, *, timeouts) -> float:
    """Ask QIDO-RS for one study: the node answers DICOMweb."""
    start = time.monotonic()
    client = _client(node, timeouts)
    _call(node, "QIDO-RS", client.search_for_studies, limit=1)
    return time.monotonic() - start


def web_find(node, *, level: str, query, keys: tuple[str, ...], timeouts, cancel=None) -> list[dict[str, Any]]:
    """QIDO-RS at ``level`` with the C-FIND query's filled keys as filters."""
    from pydicom.dataset import Dataset

    from p2p_desktop.pacs.records import json_value as _json_value

    client = _client(node, timeouts)
    filters = {}
    for key in ("PatientID", "StudyDate", "StudyInstanceUID", "ModalitiesInStudy", "Modality"):
        value = query.get(key)
        if value not in (None, ""):
            filters[key] = str(value)
    fields = list(keys)
    if level == "patient":
        # QIDO-RS has no patient level: search studies, one row per patient
        rows = _call(node, "QIDO-RS", client.search_for_studies, search_filters=filters, fields=fields,
                     limit=MAX_RESULTS)
    elif level == "study":
        rows = _call(node, "QIDO-RS", client.search_for_studies, search_filters=filters, fields=fields,
                     limit=MAX_RESULTS)
    else:
        study = filters.pop("StudyInstanceUID")
        rows = _call(node, "QIDO-RS", client.search_for_series, study_instance_uid=study,
                     search_filters=filters, fields=fields, limit=MAX_RESULTS)
    matches, seen = [], set()
    for row in rows:
        if cancel is not None:
            cancel.check()
        ds = Dataset.from_json(row)
        match = {k: _json_value(ds.get(k)) for k in keys}
        if level == "series":
            match["StudyInstanceUID"] = match.get("StudyInstanceUID") or query.StudyInstanceUID
        if level == "patient":
            if match["PatientID"] in seen:
                continue
            seen.add(match["PatientID"])
        matches.append(match)
    return matches


def web_retrieve(node, study_uid: str, outs, transfer, *, timeouts, report, cancel=None) -> None:
    """WADO-RS the study instance by instance into ``outs``; fills ``transfer.instances``;
    ``report(done, total, text)`` after each (see :func:`p2p_desktop.pacs.client._reporter`)."""
    from pydicom import dcmwrite

    from p2p_desktop.pacs.records import UID as _UID
    from p2p_desktop.pacs.records import Instance

    client = _client(node, timeouts)
    metadata = _call(node, "QIDO-RS", client.search_for_instances, study_instance_uid=study_uid,
                     fields=["SOPInstanceUID", "SeriesInstanceUID"], limit=MAX_RESULTS)
    if not metadata:
        raise PacsError(f"{node.describe()}: study {study_uid} not found (nothing was retrieved)")
    total = len(metadata)
    instances = _call(node, "WADO-RS", client.iter_study, study_uid, media_types=(("application/dicom", "*"),))
    n = 0
    while True:
        if cancel is not None and cancel.cancelled:
            raise Cancelled("cancelled by the user")
        try:
            ds = _call(node, "WADO-RS", next, instances)
        except StopIteration:
            break
        uid = str(ds.get("SOPInstanceUID", ""))
        if str(ds.get("StudyInstanceUID", "")) != study_uid:
            transfer.instances.append(Instance(uid, str(ds.get("SOPClassUID", "")),
                                               "failed: not of the requested study"))
            continue
        buf = io.BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
        name = f"{uid}.dcm" if _UID.match(uid) and len(uid) <= 64 else f"instance-{n}.dcm"
        path = outs.write_bytes(name, buf.getvalue(), kind="dicom")
        transfer.instances.append(Instance(uid, str(ds.get("SOPClassUID", "")), "success", str(path)))
        n += 1
        report(n, max(total, n), f"received {n} instance(s)")


def web_send(node, paths: Iterable, transfer, *, timeouts, report, cancel=None) -> None:
    """STOW-RS each file (one request per file, so progress and cancel work between them)."""
    from pydicom import dcmread

    from p2p_desktop.pacs.records import Instance

    client = _client(node, timeouts)
    paths = list(paths)
    for n, path in enumerate(paths, start=1):
        if cancel is not None:
            cancel.check()
        ds = dcmread(path)
        inst = Instance(str(ds.SOPInstanceUID), str(ds.SOPClassUID), path=str(path))
        transfer.instances.append(inst)
        try:
            answer = _call(node, "STOW-RS", client.store_instances, [ds])
        except PacsError as exc:
            inst.status = f"failed: {str(exc).split(': ', 1)[-1]}"
            raise
        failed = [item for item in answer.get("FailedSOPSequence", []) if
                  str(item.get("ReferencedSOPInstanceUID", "")) == inst.sop_instance_uid]
        stored = [item for item in answer.get("ReferencedSOPSequence", []) if
                  str(item.get("ReferencedSOPInstanceUID", "")) == inst.sop_instance_uid]
        if failed or not stored:
            reason = failed[0].get("FailureReason", "?") if failed else "not listed as stored"
            inst.status = f"failed: STOW-RS failure reason {reason}"
        report(n, len(paths), f"sent {os.path.basename(str(path))}")
