"""``p2p-desktop models list|verify|import-weights``: the registered models and whether their files are
intact, and the metric weights (LPIPS's AlexNet, FID's InceptionV3) imported onto an offline machine.

``list`` shows every registered model (the embedded demo bundle under ``resources/models`` and
any plugin's) with its status: ``verified``, ``missing``, ``corrupted`` (SHA-256 differs from the
card), ``unverified`` (the card records no hash) or ``invalid`` (unreadable card).
``verify`` re-hashes every file and exits 2 naming each model that is not ``verified``; such a
model is never loaded.
``import-weights FILE…`` checks each file against the published SHA-256 of torchvision's AlexNet
(LPIPS) and pytorch-fid's InceptionV3 (FID) and copies it where the metrics find it
(:mod:`p2p_desktop.metrics.import_weights`); another hash exits 2 with nothing copied.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

from p2p_desktop.cli.common import emit_json

__all__ = ["add_parser", "run", "model_rows"]


def add_parser(subparsers) -> None:
    """Register the ``models`` sub-command with its ``list`` and ``verify`` actions."""
    p = subparsers.add_parser(
        "models", help="list registered models or re-hash them against their cards",
        description="Registered models (the embedded demo bundle and plugins) and their integrity.")
    actions = p.add_subparsers(dest="models_action", metavar="ACTION", required=True)
    pl = actions.add_parser("list", help="registered models: name, kind, path, sha256, status",
                            description="List registered models with the status of their files.")
    pl.add_argument("--json", action="store_true", help='print {"models": [...]} on stdout')
    pv = actions.add_parser("verify", help="re-hash every registered model against its card",
                            description="Re-hash every registered model's files; exit 2 if any is not verified.")
    pv.add_argument("--json", action="store_true", help='print {"models": [...], "ok": bool} on stdout')
    pi = actions.add_parser(
        "import-weights", help="install LPIPS/FID weights (checked against their published SHA-256)",
        description="Check each FILE against the published SHA-256 of alexnet-owt-7be5be79.pth (LPIPS) and "
                    "pt_inception-2015-12-05-6726825d.pth (FID) and copy it where the metrics find it "
                    "($TORCH_HOME/hub/checkpoints). Another hash: exit 2, nothing copied.")
    pi.add_argument("files", nargs="+", metavar="FILE", help="weight file(s) fetched on a connected machine")
    pi.add_argument("--json", action="store_true", help='print {"imported": [...]} on stdout')
    p.set_defaults(handler=run)


def _digest(entry) -> str | None:
    """The card's weight hash; for a multi-file model, the SHA-256 of its sorted file manifest."""
    card = entry.card
    if card.get("sha256"):
        return str(card["sha256"])
    files = card.get("files")
    if isinstance(files, dict) and files:
        manifest = json.dumps({str(k): str(v) for k, v in sorted(files.items())}, sort_keys=True)
        return hashlib.sha256(manifest.encode("utf-8")).hexdigest()
    return None


def _problem(entry, status: str) -> str:
    """Which file made a model fail (for the one-line report)."""
    from p2p_desktop.hashing import sha256_file

    if status == "invalid":
        return entry.card.get("_error") or "card names no files"
    for path, digest in entry.files().items():
        if not path.is_file():
            return f"{path.name} not found"
        if status == "corrupted" and digest and sha256_file(path) != digest:
            return f"{path.name}: SHA-256 does not match the card"
        if status == "unverified" and not digest:
            return f"{path.name}: the card records no SHA-256"
    return status


def model_rows(*, rehash: bool = False) -> list[dict[str, Any]]:
    """One row per registered model: name, kind, path, sha256, status (and the card's path)."""
    from p2p_desktop.models import registry

    rows = []
    for entry in registry.entries():
        status = registry.verify_entry(entry, force=rehash)
        row = {
            "name": entry.name,
            "kind": entry.kind,
            "path": str(entry.folder if entry.source == "bundle" else entry.path),
            "sha256": _digest(entry),
            "status": status,
            "source": entry.source,
            "card": str(entry.path),
        }
        if status != "verified":
            row["problem"] = _problem(entry, status)
        rows.append(row)
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("NAME", "KIND", "STATUS", "SHA256", "PATH")
    body = [(r["name"], r["kind"], r["status"], (r["sha256"] or "-")[:12], r["path"]) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in (head, *body)]
    return "\n".join(lines)


def run(args) -> int:
    """List the registered models, or re-hash them against their cards (exit 2 if any fails); the exit code."""
    from p2p_desktop.errors import ModelError
    from p2p_desktop.paths import models_dir

    if args.models_action == "import-weights":
        from p2p_desktop.metrics.import_weights import import_weights

        records = import_weights(args.files)
        if args.json:
            emit_json({"imported": records})
        else:
            for r in records:
                how = "already in place" if r["already"] else "imported"
                print(f"{r['name']}: SHA-256 verified, {how} at {r['path']}; enables {r['enables']}")
        return 0
    if args.models_action == "list":
        rows = model_rows()
        if args.json:
            emit_json({"models": rows})
        elif rows:
            print(_table(rows))
        else:
            print(f"no registered models (looked in {models_dir()})")
        return 0

    rows = model_rows(rehash=True)
    failed = [r for r in rows if r["status"] != "verified"]
    if args.json:
        emit_json({"models": rows, "ok": bool(rows) and not failed})
    else:
        for r in rows:
            detail = f" ({r['problem']})" if "problem" in r else ""
            print(f"{r['name']}: {r['status']}{detail}  {r['path']}")
        sys.stdout.flush()
    if not rows:
        raise ModelError(f"no registered models found in {models_dir()}")
    if failed:
        names = ", ".join(f"{r['name']} ({r['status']})" for r in failed)
        raise ModelError(f"{len(failed)} of {len(rows)} model(s) failed verification and will not be "
                         f"loaded: {names}")
    if not args.json:
        print(f"all {len(rows)} models verified")
    return 0

