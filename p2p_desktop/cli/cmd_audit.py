"""``p2p-desktop audit verify LOG``: check an audit log's hash chain.

Exit 0 with "N records, chain intact"; exit 2 naming the first line that was edited,
deleted or moved (see :mod:`p2p_desktop.audit`).
"""

from __future__ import annotations

import sys

from p2p_desktop.cli.common import emit_json

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser("audit", help="audit log tools (verify the hash chain)")
    actions = p.add_subparsers(dest="audit_action", metavar="ACTION")
    v = actions.add_parser("verify", help="check an audit log's hash chain; exit 2 at the first bad record")
    v.add_argument("log", metavar="LOG", nargs="?",
                   help="audit log (default: $P2P_DESKTOP_AUDIT_LOG or the user data folder's audit.jsonl)")
    v.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args) -> int:
    from p2p_desktop.audit import default_log_path, verify_log
    from p2p_desktop.errors import InputError

    if getattr(args, "audit_action", None) != "verify":
        raise InputError("audit: choose an action: verify LOG")
    path = args.log or default_log_path()
    report = verify_log(path)
    if args.json:
        emit_json({"log": str(path), "ok": report.ok, "records": report.records, "line": report.line,
                   "reason": report.reason or None})
    if report.ok:
        if not args.json:
            print(report.message(path))
        return 0
    sys.stderr.write(f"p2p-desktop: audit log tampered: {report.message(path)}\n")
    return 2
