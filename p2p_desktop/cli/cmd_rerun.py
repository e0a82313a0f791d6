"""``p2p-desktop rerun PROVENANCE.json --out DIR [--device D] [--json]``

Reproduce a recorded run (:func:`p2p_desktop.jobs.rerun.rerun`): the input and model weights
are checked against the hashes in the record first (exit 2 naming what changed), then the same
attack runs with the same config, seed, true label and export options. The JSON output adds
``"reproduced"``: whether the new adversarial PNG is byte-identical to the recorded one
(expected on CPU with the same library versions; GPU kernels are not bit-reproducible).
"""

from __future__ import annotations

from p2p_desktop.cli.common import outputs_complete, progress_bar

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Register the ``rerun`` sub-command and its options."""
    p = sub.add_parser("rerun", help="reproduce a run from its provenance record")
    p.add_argument("provenance", metavar="PROVENANCE.json", help="provenance record written by `attack`")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (outside the input's folder)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"],
                   help="compute device (default: the recorded one; byte-identical results need the same)")
    p.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"],
                   help="precision of the diffusion backbone (default: the recorded one)")
    p.add_argument("--audit-log", metavar="FILE",
                   help="audit log to append to (default: $P2P_DESKTOP_AUDIT_LOG or the user data folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args) -> int:
    """Reproduce a run from its provenance record and report how it compares; the exit code."""
    from p2p_desktop.cli.cmd_attack import print_run
    from p2p_desktop.export.provenance import load_provenance
    from p2p_desktop.jobs.rerun import rerun

    record = load_provenance(args.provenance)
    with progress_bar(1, f"rerun {record['attack']['name']}", unit="it") as bar:
        def on_step(ev):
            bar.total = max(bar.total or 0, ev.total)
            bar.update(1)

        summary, result = rerun(record, args.out, device=args.device, audit_log=args.audit_log, on_step=on_step,
                                dtype=args.dtype, on_complete=outputs_complete)
    warnings = [n for n in result.notes if n.startswith(("de-identification", "classifier:", "backbone:"))
                or "differs from the recorded" in n]
    print_run(summary, result, args, warnings=warnings)
    if not args.json:
        state = "byte-identical to" if summary["reproduced"] else "NOT identical to"
        print(f"  adversarial PNG {state} the recorded run")
    return 0
