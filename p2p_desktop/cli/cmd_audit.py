"""``p2p-desktop audit verify|repair [LOG]``: check an audit log's keyed hash chain; remove a torn tail.

``verify``: exit 0 with "N records, chain intact, ..."; exit 2 naming the first line that was
edited, deleted, moved, forged or torn (see :mod:`p2p_desktop.audit` and ``audit verify --help``
for exactly what it proves). ``repair``: removes a torn last line (an interrupted write) and
nothing else.
"""

from __future__ import annotations

import argparse
import sys

from p2p_desktop.cli.common import emit_json

__all__ = ["add_parser", "run"]

_LOG_HELP = "audit log (default: $P2P_DESKTOP_AUDIT_LOG or the user data folder's audit.jsonl)"


def add_parser(sub) -> None:
    """Register the ``audit`` sub-command with its ``verify`` and ``repair`` actions."""
    from p2p_desktop.audit import VERIFY_PROOF

    p = sub.add_parser("audit", help="audit log tools (verify the keyed hash chain, repair a torn tail)")
    actions = p.add_subparsers(dest="audit_action", metavar="ACTION")
    v = actions.add_parser(
        "verify", help="check an audit log's hash chain and signatures; exit 2 at the first bad record",
        description="Check every record of an audit log: its hash, its link to the record before it and, "
                    "with the installation key, its HMAC-SHA256 signature.",
        epilog=VERIFY_PROOF, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("log", metavar="LOG", nargs="?", help=_LOG_HELP)
    v.add_argument("--key", metavar="FILE",
                   help="key file to check signatures with (default: $P2P_DESKTOP_AUDIT_KEY or the user data "
                        "folder's audit.key, when it exists)")
    v.add_argument("--no-key", action="store_true",
                   help="check the hash chain only (e.g. a log from another installation, or written before keys)")
    v.add_argument("--head", metavar="HASH",
                   help="a chain head from a report: fail if no record of the log has this hash (records cut off)")
    v.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    r = actions.add_parser("repair", help="remove a torn last record (an interrupted write) and nothing else")
    r.add_argument("log", metavar="LOG", nargs="?", help=_LOG_HELP)
    p.set_defaults(handler=run)


def run(args) -> int:
    """Verify or repair an audit log; the exit code (2 when verification finds a torn or tampered log)."""
    from p2p_desktop.audit import default_log_path, repair_log, verify_log
    from p2p_desktop.errors import InputError

    action = getattr(args, "audit_action", None)
    if action not in ("verify", "repair"):
        raise InputError("audit: choose an action: verify [LOG] or repair [LOG]")
    path = args.log or default_log_path()
    if action == "repair":
        removed = repair_log(path)
        print(f"{path}: removed a torn last record ({removed} bytes)" if removed
              else f"{path}: nothing to repair")
        return 0
    key = None
    if args.key:
        from p2p_desktop.audit import load_key
        from p2p_desktop.errors import OutputError

        try:
            key = load_key(args.key)
        except OutputError as exc:
            raise InputError(str(exc)) from None
        if key is None:
            raise InputError(f"audit key not found: {args.key}")
    report = verify_log(path, key=key, use_key=not args.no_key, expect_head=args.head)
    if args.json:
        emit_json({"log": str(path), "ok": report.ok, "records": report.records, "line": report.line,
                   "reason": report.reason or None, "keyed": report.keyed, "head": report.head,
                   "torn": report.torn, "notes": list(report.notes)})
    if report.ok:
        if not args.json:
            print(report.message(path))
        return 0
    what = "torn" if report.torn else "tampered"
    sys.stderr.write(f"p2p-desktop: audit log {what}: {report.message(path)}\n")
    return 2
