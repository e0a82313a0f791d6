"""``p2p-desktop evaluate DATASET_DIR --attacks LIST --classifiers LIST --out DIR [...]``

Runs :func:`p2p_desktop.jobs.evaluate.evaluate` with a progress bar (jobs = image × classifier ×
attack, with ETA) on stderr. Ctrl-C stops after the current attack step and exits 3; unlike
other commands, the finished per-image rows are deliberately kept (the batch is resumable:
run the same command again to continue), but no half-written file is left and the summary
tables are only written when every job is done. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
import sys
import threading

from p2p_desktop.cli.common import (
    add_device_arg,
    add_dtype_arg,
    emit_json,
    outputs_complete,
    progress_bar,
    seed_arg,
    split_list,
)

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    """Register the ``evaluate`` sub-command and its options."""
    p = sub.add_parser("evaluate", help="attack a BUSI-layout dataset with several attacks × classifiers "
                                        "and write paper-style tables (resumable)",
                          epilog="Ctrl-C stops after the current attack step and exits 3; the finished per-image "
                                 "results are kept in DIR/per_image.csv. Run the same command again to resume.")
    p.add_argument("dataset", metavar="DATASET_DIR",
                   help="folder with one sub-folder per class (benign/, malignant/, normal/; *_mask.png ignored)")
    p.add_argument("--attacks", required=True, metavar="LIST", help="comma-separated attacks, e.g. fgsm,pgd,p2p")
    p.add_argument("--classifiers", required=True, metavar="LIST",
                   help="comma-separated registered names or model card .json files")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (outside the dataset); an unfinished run there is resumed")
    p.add_argument("--backbone", help="diffusion backbone for diff-pgd/p2p: 'demo' (default) or a local folder")
    p.add_argument("--limit", type=int, metavar="N", help="use only N images (classes taken in turn)")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed of every attack, 0 to 2^63-1 (default 0)")
    p.add_argument("--param", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                   help="attack parameter (repeatable), e.g. --param pgd.steps=20; without 'ATTACK.' it "
                        "applies to every attack that has the parameter")
    p.add_argument("--preset", metavar="P",
                   help="preset for every attack that has one of that name (e.g. paper), or ATTACK=P[,ATTACK=P]; "
                        "p2p runs its paper preset unless this names another")
    p.add_argument("--metrics", choices=["paper", "native"], default="native",
                   help="metric protocol: paper (LPIPS and Gaussian-window SSIM on Resize(256)+CenterCrop(256) RGB, "
                        "FID per class averaged) or native (the images as written; default)")
    add_device_arg(p)
    add_dtype_arg(p, "each preset's, else auto")
    p.add_argument("--json", action="store_true",
                   help='print one JSON object {"summary", "outputs", "notes"} on stdout')
    p.add_argument("--report", metavar="html,pdf",
                   help="also write the batch report (evaluation_report.html / .pdf) at the end")
    _add_dicom_args(p)
    g = p.add_argument_group("where the jobs run (see README: Scaling)")
    g.add_argument("--executor", choices=["serial", "ray"], default="serial",
                   help="serial: one job after another in this process (default); ray: on a Ray cluster")
    g.add_argument("--ray-address", metavar="HOST:PORT",
                   help="join this Ray cluster (`ray start --head`); without it a local Ray instance is started")
    g.add_argument("--workers", type=int, metavar="N",
                   help="Ray workers, each loading the models once (default: the cluster's CPUs, or GPUs)")
    g.add_argument("--gpus-per-worker", type=float, metavar="F",
                   help="GPUs per Ray worker (e.g. 1, or 0.5 to share one GPU between two workers)")
    p.set_defaults(handler=run)


def _add_dicom_args(p) -> None:
    """``--export-dicom``, ``--deidentify``, ``--send-dicom`` (p2p_desktop/export/batch_dicom.py)."""
    from p2p_desktop.cli.cmd_pacs import add_send_arg

    p.add_argument("--export-dicom", action="store_true",
                   help="also write each successful adversarial image as a DICOM derived from its source "
                        "(DIR/dicom/CLASSIFIER/ATTACK/..., Secondary Capture for plain images)")
    p.add_argument("--deidentify", action="store_true",
                   help="with --export-dicom: de-identify the DICOMs (PS3.15 Annex E basic profile) and name "
                        "them by keyed pseudonyms")
    add_send_arg(p)


def _dicom_export(args):
    """The DICOM export and the --send-dicom node, both checked before any work."""
    from p2p_desktop.cli.cmd_pacs import check_send
    from p2p_desktop.errors import InputError
    from p2p_desktop.export.batch_dicom import BatchDicomExport

    if args.deidentify and not args.export_dicom:
        raise InputError("--deidentify applies to --export-dicom; add it")
    if args.export_dicom and getattr(args, "executor", "serial") != "serial":
        raise InputError("--export-dicom runs with the serial executor only: the Ray workers return the "
                         "adversarial images, not the DICOM sources (run the export without --executor ray)")
    node = check_send(args)
    return (BatchDicomExport(deidentify=args.deidentify) if args.export_dicom else None), node


class _Interrupt:
    """First Ctrl-C cancels cooperatively (after the current step); the second stops at once."""

    def __init__(self, token) -> None:
        self.token = token
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.token.cancelled:
            raise KeyboardInterrupt
        self.token.cancel()
        sys.stderr.write("\np2p-desktop: stopping after the current step (Ctrl-C again to stop at once)\n")

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def run(args) -> int:
    """Run (or resume) a dataset evaluation with a progress bar, then send exports if asked; the exit code."""
    from p2p_desktop.attacks.factory import parse_params
    from p2p_desktop.cancel import CancelToken
    from p2p_desktop.jobs.evaluate import evaluate

    token = CancelToken()
    params = parse_params(args.param)
    dicom, send_node = _dicom_export(args)
    state: dict = {"bar": None}

    def on_progress(ev) -> None:  # a p2p_desktop.progress.Progress: step of total jobs
        bar = state["bar"]
        if bar is None:
            bar = state["bar"] = progress_bar(ev.total, "evaluate", unit="job")
            bar.n = bar.last_print_n = ev.step  # resumed jobs do not count toward the rate
        bar.total = ev.total
        if ev.step > bar.n:
            bar.update(ev.step - bar.n)
        bar.set_postfix_str(ev.message[:60], refresh=True)

    def on_step(ev) -> None:
        bar = state["bar"]
        if bar is not None and ev.total > 1:
            bar.set_postfix_str(f"step {ev.step}/{ev.total}", refresh=False)

    try:
        with _Interrupt(token):
            result = evaluate(args.dataset, split_list(args.attacks), split_list(args.classifiers), args.out,
                              backbone=args.backbone, limit=args.limit, seed=args.seed, device=args.device,
                              params=params, preset=args.preset, on_progress=on_progress, cancel=token,
                              on_step=on_step, report=args.report, dicom=dicom, **_repro_kwargs(args),
                              **_executor_kwargs(args))
    finally:
        if state["bar"] is not None:
            state["bar"].close()
    outputs_complete()  # the tables are written and audited: a SIGTERM from here on keeps them (exit 0)

    sent = None
    if send_node is not None:
        from p2p_desktop.cli.cmd_pacs import send_exports

        sent = send_exports(send_node, result.outputs, args)
    if args.json:
        emit_json({**result.to_json(), **({"sent": sent} if sent is not None else {})})
        return 0
    for w in result.warnings if hasattr(result, "warnings") else ():
        print(f"p2p-desktop: warning: {w}", file=sys.stderr)
    from p2p_desktop.attacks.procedure import METRIC_PROTOCOL_TEXT

    print(f"metrics: {METRIC_PROTOCOL_TEXT[args.metrics]}")
    _print_summary(result.summary)
    for rec in result.outputs:
        print(f"  {rec['kind']:<14} {rec['path']}")
    if result.resumed:
        print(f"  resumed: {result.resumed} result(s) from an earlier run, {result.attacked} attack(s) run now",
              file=sys.stderr)
    for note in result.notes:
        print(f"  note: {note}", file=sys.stderr)
    return 0


def _print_summary(summary) -> None:
    """The headline table: success rate and the paper's metrics (labels and formats from the metric table)."""
    from p2p_desktop.jobs.evaluate.summary import FID, PAPER_KEYS, attack_cell
    from p2p_desktop.metrics import METRICS

    shown = [METRICS[k] for k in (*PAPER_KEYS, FID)]
    width = max([36] + [len(attack_cell(r)) for r in summary])
    print(f"{'classifier':<22} {'procedure':<{width}} {'success':>12} {'valid':>6} "
          + " ".join(f"{m.label:>8}" for m in shown))
    for r in summary:
        rate = "n/a" if r["success_rate"] is None else f"{r['success_rate']:.2f} ({r['successes']}/{r['correct']})"
        valid = "n/a" if r.get("valid_success_rate") is None else f"{r['valid_success_rate']:.2f}"
        cells = ["n/a" if r[m.key] is None else m.fmt.format(r[m.key]) for m in shown]
        print(f"{r['classifier']:<22} {attack_cell(r):<{width}} {rate:>12} {valid:>6} "
              + " ".join(f"{c:>8}" for c in cells))


def _repro_kwargs(args) -> dict:
    """The metric protocol and precision options (issue 12), passed to ``evaluate``."""
    return {"metrics": args.metrics, "dtype": args.dtype}


def _executor_kwargs(args) -> dict:
    """Where the jobs run (issue 17): None for serial, a Ray executor otherwise."""
    from p2p_desktop.executors import make_executor

    return {"executor": make_executor(args.executor, address=args.ray_address, workers=args.workers,
                                      gpus_per_worker=args.gpus_per_worker)}
