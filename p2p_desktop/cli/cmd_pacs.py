"""``p2p-desktop pacs ...``: DICOM nodes, echo, query, retrieve and send (pynetdicom).

``NODE`` is a configured node's name (``pacs nodes add``) or ``AET@HOST:PORT``. Every network
or input error is one line on stderr and exit 2; nothing half-written is left behind.
Sends and retrievals append one record each to the audit log.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from p2p_desktop.cli.common import emit_json, progress_bar

__all__ = ["add_parser", "run", "add_send_arg", "check_send_arg", "check_send", "send_outputs", "send_exports"]


def _network_args(p, *, audit: bool = False) -> None:
    p.add_argument("--ae-title", metavar="AET", help="our AE title for this call (default: the configured one)")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="seconds for connect, association and each response (default 5/10/30)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    if audit:
        p.add_argument("--audit-log", metavar="FILE",
                       help="audit log to append to (default: $P2P_DESKTOP_AUDIT_LOG or the user data folder)")


def add_parser(sub) -> None:
    """Register the ``pacs`` sub-command and its actions (nodes, config, echo, find, retrieve, send)."""
    p = sub.add_parser("pacs", help="DICOM nodes: echo, find, retrieve (C-GET/C-MOVE) and send (C-STORE)",
                       description="Query/retrieve studies from a DICOM node and send derived instances. "
                                   "NODE is a configured node name, AET@HOST:PORT, or a DICOMweb URL "
                                   "(http(s)://.../dicom-web: QIDO-RS, WADO-RS, STOW-RS).")
    actions = p.add_subparsers(dest="pacs_action", metavar="ACTION")

    n = actions.add_parser("nodes", help="list, add or remove configured nodes")
    nodes = n.add_subparsers(dest="nodes_action", metavar="list|add|remove")
    nl = nodes.add_parser("list", help="configured nodes and our AE title")
    nl.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    na = nodes.add_parser("add", help="add a node")
    na.add_argument("name", metavar="NAME", help="a short name (letters, digits, '.', '_', '-')")
    na.add_argument("--aet", metavar="AET", help="the node's AE title (with --host and --port)")
    na.add_argument("--host", help="host name or IP address")
    na.add_argument("--port", type=int, help="DICOM port")
    na.add_argument("--url", help="instead of --aet/--host/--port: a DICOMweb root URL "
                                  "(QIDO-RS/WADO-RS/STOW-RS), e.g. http://pacs:8042/dicom-web")
    na.add_argument("--tls-cert", metavar="FILE", help="our TLS certificate (PEM), with --tls-key")
    na.add_argument("--tls-key", metavar="FILE", help="our TLS private key (PEM)")
    na.add_argument("--tls-ca", metavar="FILE", help="CA certificates to verify the node (PEM); enables TLS")
    na.add_argument("--replace", action="store_true", help="replace a node of the same name")
    nr = nodes.add_parser("remove", help="remove a node")
    nr.add_argument("name", metavar="NAME")

    c = actions.add_parser("config", help="show or set our AE title and the C-MOVE storage port")
    c.add_argument("--ae-title", metavar="AET", help="our AE title (default P2P_DESKTOP)")
    c.add_argument("--storage-port", type=int, metavar="PORT",
                   help="loopback port where C-MOVE results are received (default 11113)")
    c.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    e = actions.add_parser("echo", help="C-ECHO a node (is it there, does it accept us?)")
    e.add_argument("node", metavar="NODE")
    _network_args(e)

    f = actions.add_parser("find", help="C-FIND patients, studies or series")
    f.add_argument("node", metavar="NODE")
    f.add_argument("--level", choices=["patient", "study", "series"], default="study",
                   help="query level (default study; series needs --study)")
    f.add_argument("--patient-id", metavar="ID", help="PatientID (wildcards * and ? allowed)")
    f.add_argument("--modality", metavar="M", help="modality, e.g. US")
    f.add_argument("--study-date", metavar="DATE", help="YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
    f.add_argument("--study", metavar="UID", help="StudyInstanceUID (needed for --level series)")
    _network_args(f)

    r = actions.add_parser("retrieve", help="retrieve one study into a folder (C-GET or C-MOVE)")
    r.add_argument("node", metavar="NODE")
    r.add_argument("--study", required=True, metavar="UID", help="StudyInstanceUID")
    r.add_argument("--out", required=True, metavar="DIR", help="output folder (one <SOPInstanceUID>.dcm each)")
    r.add_argument("--method", choices=["get", "move"], default="get",
                   help="C-GET over one association (default) or C-MOVE to our storage port "
                        "(a DICOMweb node always uses WADO-RS)")
    r.add_argument("--storage-port", type=int, metavar="PORT", help="C-MOVE: our storage port for this call")
    _network_args(r, audit=True)

    s = actions.add_parser("send", help="send DICOM files (C-STORE), unchanged")
    s.add_argument("node", metavar="NODE")
    s.add_argument("files", metavar="FILE", nargs="+")
    _network_args(s, audit=True)
    p.set_defaults(handler=run)


def _timeouts(args):
    from p2p_desktop.pacs import Timeouts

    return Timeouts() if getattr(args, "timeout", None) is None else Timeouts.uniform(args.timeout)


def _ae_title(args, settings) -> str:
    from p2p_desktop.pacs.nodes import check_ae_title

    return check_ae_title(args.ae_title, "--ae-title") if getattr(args, "ae_title", None) else settings.ae_title


def _bar(desc: str):
    state: dict = {}

    def on_progress(event) -> None:  # p2p_desktop.progress.Progress
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = progress_bar(event.total, desc, unit="file")
        bar.total = max(event.total, event.step)
        bar.n = event.step
        bar.set_postfix_str(event.message[:50], refresh=True)

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return on_progress, close


def run(args) -> int:
    """Dispatch a ``pacs`` action with the saved PACS settings; the exit code."""
    from p2p_desktop.errors import InputError
    from p2p_desktop.pacs import load_settings

    action = getattr(args, "pacs_action", None)
    if action is None:
        raise InputError("pacs: choose an action: nodes, config, echo, find, retrieve or send")
    settings = load_settings()
    return {"nodes": _nodes, "config": _config, "echo": _echo, "find": _find, "retrieve": _retrieve,
            "send": _send}[action](args, settings)


def _nodes(args, settings) -> int:
    from p2p_desktop.errors import InputError
    from p2p_desktop.pacs import Node, TLSFiles, WebNode, save_settings, settings_path

    action = getattr(args, "nodes_action", None) or "list"
    if action == "add":
        tls = TLSFiles(args.tls_cert, args.tls_key, args.tls_ca)
        tls.check()
        if args.url:
            if args.aet or args.host or args.port:
                raise InputError("give either --url (DICOMweb) or --aet, --host and --port (DIMSE), not both")
            node = WebNode(args.name, args.url, tls)
        elif not (args.aet and args.host and args.port is not None):
            raise InputError("pacs nodes add needs --aet, --host and --port (or --url for a DICOMweb node)")
        else:
            node = Node(args.name, args.aet, args.host, args.port, tls)
        save_settings(settings.with_node(node, replace_existing=args.replace))
        print(f"added {node.describe()}")
        return 0
    if action == "remove":
        save_settings(settings.without_node(args.name))
        print(f"removed {args.name}")
        return 0
    if action != "list":  # pragma: no cover - argparse limits the choices
        raise InputError(f"pacs nodes: unknown action {action}")
    if getattr(args, "json", False):
        emit_json({"settings": str(settings_path()), **settings.to_json()})
        return 0
    print(f"our AE title: {settings.ae_title} (C-MOVE storage port {settings.storage_port})")
    if not settings.nodes:
        print("no nodes configured (add one: p2p-desktop pacs nodes add NAME --aet AET --host HOST --port PORT)")
    for node in settings.nodes:
        print(f"  {node.name:<16} {node.address}" + ("  TLS" if node.tls.enabled else ""))
    return 0


def _config(args, settings) -> int:
    from dataclasses import replace

    from p2p_desktop.pacs import save_settings
    from p2p_desktop.pacs.nodes import check_ae_title, check_port

    if args.ae_title is not None:
        settings = replace(settings, ae_title=check_ae_title(args.ae_title, "--ae-title"))
    if args.storage_port is not None:
        settings = replace(settings, storage_port=check_port(args.storage_port, "--storage-port"))
    if args.ae_title is not None or args.storage_port is not None:
        save_settings(settings)
    if args.json:
        emit_json({"ae_title": settings.ae_title, "storage_port": settings.storage_port})
    else:
        print(f"our AE title: {settings.ae_title}; C-MOVE storage port: {settings.storage_port}")
    return 0


def _echo(args, settings) -> int:
    from p2p_desktop.pacs import echo, resolve_node

    node = resolve_node(args.node, settings)
    seconds = echo(node, ae_title=_ae_title(args, settings), timeouts=_timeouts(args))
    if args.json:
        emit_json({"node": node.name, "address": node.address, "ok": True, "seconds": round(seconds, 3)})
    else:
        print(f"{node.describe()}: C-ECHO ok ({seconds * 1000:.0f} ms)")
    return 0


def _find(args, settings) -> int:
    from p2p_desktop.pacs import find, resolve_node

    node = resolve_node(args.node, settings)
    matches = find(node, level=args.level, patient_id=args.patient_id, modality=args.modality,
                   study_date=args.study_date, study_uid=args.study, ae_title=_ae_title(args, settings),
                   timeouts=_timeouts(args))
    if args.json:
        emit_json({"node": node.name, "level": args.level, "count": len(matches), "matches": matches})
        return 0
    print(f"{node.describe()}: {len(matches)} {args.level}(s)")
    for m in matches:
        if args.level == "patient":
            print(f"  {m['PatientID'] or '-':<16} {m['PatientName'] or ''}")
        elif args.level == "study":
            print(f"  {m['StudyInstanceUID']}  {m['StudyDate'] or '-':<8}  {m['PatientID'] or '-':<12} "
                  f"{m['ModalitiesInStudy'] or ''}  {m['NumberOfStudyRelatedInstances'] or '?'} instance(s)  "
                  f"{m['StudyDescription'] or ''}")
        else:
            print(f"  {m['SeriesInstanceUID']}  {m['Modality'] or '-':<3} "
                  f"{m['NumberOfSeriesRelatedInstances'] or '?'} instance(s)  {m['SeriesDescription'] or ''}")
    return 0


def _transfer_json(transfer) -> dict:
    out = {"node": transfer.node.name, "address": transfer.node.address, "operation": transfer.operation,
           "ae_title": transfer.ae_title, "study_instance_uid": transfer.study_uid,
           "instances": [{"sop_instance_uid": i.sop_instance_uid, "sop_class_uid": i.sop_class_uid,
                          "status": i.status, "path": i.path} for i in transfer.instances]}
    if transfer.audit:
        out["audit"] = {"seq": transfer.audit["seq"], "hash": transfer.audit["hash"]}
    return out


def _retrieve(args, settings) -> int:
    from p2p_desktop.pacs import resolve_node, retrieve

    node = resolve_node(args.node, settings)
    on_progress, close = _bar(f"C-{args.method.upper()}")
    try:
        transfer = retrieve(node, args.study, args.out, method=args.method, ae_title=_ae_title(args, settings),
                            storage_port=args.storage_port or settings.storage_port, timeouts=_timeouts(args),
                            on_progress=on_progress, audit_log=args.audit_log)
    finally:
        close()
    if args.json:
        emit_json(_transfer_json(transfer))
    else:
        how = "WADO-RS" if transfer.operation == "retrieve-wado" else f"C-{args.method.upper()}"
        print(f"{node.describe()}: retrieved {len(transfer.paths)} instance(s) of {args.study} by {how}")
        for path in transfer.paths:
            print(f"  {path}")
    return 0


def _send(args, settings) -> int:
    from p2p_desktop.pacs import resolve_node, send

    node = resolve_node(args.node, settings)
    on_progress, close = _bar("C-STORE")
    try:
        transfer = send(node, args.files, ae_title=_ae_title(args, settings), timeouts=_timeouts(args),
                        on_progress=on_progress, audit_log=args.audit_log)
    finally:
        close()
    if args.json:
        emit_json(_transfer_json(transfer))
    else:
        print(f"{node.describe()}: stored {len(transfer.instances)} instance(s)")
        for inst in transfer.instances:
            print(f"  {inst.status:<8} {inst.sop_instance_uid}  {inst.path}")
    return 0


# ----------------------------------------------------------------------------- attack/evaluate hook


def add_send_arg(p) -> None:
    """Add the ``--send-dicom NODE`` option (C-STORE the exported DICOM to a node)."""
    p.add_argument("--send-dicom", metavar="NODE",
                   help="C-STORE the exported DICOM (needs --export-dicom; de-identified with --deidentify) "
                        "to NODE: a configured node name or AET@HOST:PORT")


def check_send_arg(args):
    """The node to send to (validated before any work), or None."""
    from p2p_desktop.errors import InputError
    from p2p_desktop.pacs import resolve_node

    if not getattr(args, "send_dicom", None):
        return None
    if not getattr(args, "export_dicom", False):
        raise InputError("--send-dicom sends the exported DICOM: add --export-dicom")
    return resolve_node(args.send_dicom)


def send_outputs(node, records, args) -> dict | None:
    """Send the ``dicom`` outputs of a finished run; returns the JSON part for the summary.

    The outputs stay on disk either way; a failed send is one line and exit 2 (the caller's
    error path), recorded in the audit log with the node's answer.
    """
    from p2p_desktop.errors import InputError
    from p2p_desktop.pacs import load_settings, send

    files = [r["path"] for r in records if r.get("kind") == "dicom"]
    if node is None or not files:
        return None
    try:
        transfer = send(node, files, ae_title=load_settings().ae_title, audit_log=getattr(args, "audit_log", None))
    except InputError as exc:
        raise type(exc)(f"the outputs were written, but sending them failed: {exc}") from None
    if not getattr(args, "json", False):
        print(f"  sent to {node.describe()}: {len(transfer.instances)} instance(s)", file=sys.stderr)
    return _transfer_json(transfer)


def check_send(args):
    """The ``--send-dicom`` node, resolved and C-ECHOed before any work (or None).

    A node that cannot be reached, or refuses our AE title, is one :class:`PacsError` line."""
    node = check_send_arg(args)
    if node is None:
        return None
    from p2p_desktop.pacs import echo, load_settings
    from p2p_desktop.pacs.errors import PacsError

    try:
        echo(node, ae_title=load_settings().ae_title)
    except PacsError as exc:
        raise PacsError(f"--send-dicom {args.send_dicom}: {exc}; nothing was run") from None
    return node


def send_exports(node, outputs: Sequence[dict[str, str]], args) -> dict | None:
    """C-STORE the evaluation's DICOMs to ``node`` (audited by the pacs package); the JSON part."""
    if node is None:
        return None
    if not any(o.get("kind") == "dicom" for o in outputs):
        return {"node": node.name, "address": node.address, "operation": "send", "instances": []}
    return send_outputs(node, outputs, args)
