"""``p2p-desktop plugins list [--json]`` / ``plugins enable NAME`` / ``plugins disable NAME``"""

from __future__ import annotations

from p2p_desktop.cli.common import emit_json

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Register the ``plugins`` sub-command with its ``list``, ``enable`` and ``disable`` actions."""
    p = sub.add_parser("plugins", help="list, enable or disable plugins (attacks, classifiers)")
    ps = p.add_subparsers(dest="plugins_command", metavar="ACTION", required=True)
    lp = ps.add_parser("list", help="every plugin found, with its path, sha256 and status")
    lp.add_argument("--json", action="store_true")
    ep = ps.add_parser("enable", help="approve a plugin at its current sha256 (plugins are code)")
    ep.add_argument("name")
    dp = ps.add_parser("disable", help="withdraw the approval of a plugin")
    dp.add_argument("name")
    p.set_defaults(handler=run)


def run(args) -> int:
    """Enable, disable or list plugins; the exit code."""
    from p2p_desktop import plugins

    if args.plugins_command == "enable":
        info = plugins.enable(args.name)
        print(f"enabled {info.name} ({info.kind}) from {info.path}\n  sha256 {info.sha256}")
        return 0
    if args.plugins_command == "disable":
        plugins.disable(args.name)
        print(f"disabled {args.name}")
        return 0
    infos = plugins.discover()
    if args.json:
        emit_json({"plugins": [i.to_dict() for i in infos],
                   "search_path": [str(d) for d in plugins.plugin_dirs()]})
        return 0
    if not infos:
        print("no plugins found in: " + ", ".join(str(d) for d in plugins.plugin_dirs()))
    for i in infos:
        print(f"{i.name:<22} {i.kind:<11} {i.status:<9} {i.source:<12} {i.path}")
        print(f"{'':<22} sha256 {i.sha256}" + (f"\n{'':<22} error: {i.error}" if i.error else ""))
    return 0
