"""``p2p-desktop reader-study make|import|score|check``: blinded reader studies of adversarial images.

``make SOURCE... --out STUDY --key KEY.json``: a study folder of de-identified, header-normalised
cases (originals and adversarial images alone, or side by side in pairs) that can be handed to
readers or sent to a node, and a key kept outside it. ``import STUDY ANSWERS.csv --reader NAME``:
answers read elsewhere (one line per problem, exit 2). ``score STUDY --key KEY.json``: accuracy,
ROC AUC, finding changes, kappa, time per case. ``check STUDY``: the folder unblinds nothing but
by its pixels. Every make, import and score appends an audit record.
"""

from __future__ import annotations

import sys
from pathlib import Path

from p2p_desktop.cli.common import emit_json, seed_arg, split_list

__all__ = ["add_parser", "run"]

EVENT = "reader-study"


def add_parser(sub) -> None:
    """Register ``reader-study`` with its ``make``, ``import``, ``score`` and ``check`` actions."""
    p = sub.add_parser("reader-study", help="blinded reader studies: make, import answers, score, check")
    actions = p.add_subparsers(dest="rs_action", metavar="ACTION")
    m = actions.add_parser("make", help="make a blinded study folder and its key from evaluate/attack outputs")
    m.add_argument("sources", nargs="+", metavar="SOURCE", help="evaluate output folders or attack output folders")
    m.add_argument("--out", required=True, metavar="STUDY", help="the study folder (new or empty)")
    m.add_argument("--key", required=True, metavar="KEY.json", help="the key file (outside STUDY; never overwritten)")
    m.add_argument("--design", choices=["single", "pair"], default="single",
                   help="single: one image per case (altered?); pair: original and adversarial side by side "
                        "in random order (which one is altered?) (default: single)")
    m.add_argument("--readers", type=int, default=1, metavar="N", help="readers: one shuffled order each (default 1)")
    m.add_argument("--cases", type=int, metavar="N",
                   help="exactly N cases, adversarial images chosen at random (default: all of them)")
    m.add_argument("--seed", type=seed_arg, help="seed of the orders and pair sides (default: random)")
    m.add_argument("--send-dicom", metavar="NODE", help="C-STORE the study's cases to NODE (no key is sent)")
    m.add_argument("--json", action="store_true", help="print a JSON summary")
    i = actions.add_parser("import", help="import a reader's answers CSV (case,altered,confidence,finding[,birads])")
    i.add_argument("study", metavar="STUDY")
    i.add_argument("answers", metavar="ANSWERS.csv")
    i.add_argument("--reader", required=True, metavar="NAME")
    i.add_argument("--json", action="store_true")
    s = actions.add_parser("score", help="unblind with the key and score the answers")
    s.add_argument("study", metavar="STUDY")
    s.add_argument("--key", required=True, metavar="KEY.json")
    s.add_argument("--json", action="store_true", help="print the scores as JSON")
    s.add_argument("--report", metavar="FORMATS", help="write reports: html,pdf (beside the key, or --report-dir)")
    s.add_argument("--report-dir", metavar="DIR", help="folder of the reports (never inside STUDY)")
    c = actions.add_parser("check", help="check that the study folder unblinds nothing but by its pixels")
    c.add_argument("study", metavar="STUDY")
    p.set_defaults(handler=run, _parser=p)


def _audit(action: str, data: dict) -> None:
    from p2p_desktop.audit import AuditLog

    AuditLog().append(EVENT, {"action": action, **data})


def _make(args) -> int:
    from p2p_desktop.errors import InputError
    from p2p_desktop.hashing import sha256_file
    from p2p_desktop.readerstudy import collect_sources, make_study

    node = None
    if args.send_dicom:
        from p2p_desktop.cli.cmd_pacs import check_send

        args.export_dicom = True
        node = check_send(args)
    if args.readers < 1 or args.readers > 1000:
        raise InputError(f"--readers must be from 1 to 1000, got {args.readers}")
    sources = collect_sources(args.sources)

    def audit(summary: dict) -> None:
        _audit("make", {"study": str(Path(args.out).resolve()), "study_id": summary["study_id"],
                        "design": summary["design"], "cases": summary["cases"], "readers": summary["readers"],
                        "sources": [str(Path(s).resolve()) for s in args.sources],
                        "key": str(Path(args.key).resolve()), "key_sha256": sha256_file(args.key),
                        "outputs": [{"kind": o["kind"], "path": o["path"], "sha256": o["sha256"]}
                                    for o in summary["outputs"]]})

    summary = make_study(sources, args.out, args.key, design=args.design, readers=args.readers, seed=args.seed,
                         cases=args.cases, on_written=audit)
    sent = None
    if node is not None:
        from p2p_desktop.pacs import load_settings, send

        transfer = send(node, summary["files"], ae_title=load_settings().ae_title)
        sent = {"node": node.name, "instances": len(transfer.instances)}
    out = {k: v for k, v in summary.items() if k not in ("files", "outputs")}
    out["sent"] = sent
    if args.json:
        emit_json(out)
    else:
        print(f"reader-study: {summary['cases']} cases ({summary['images']} images, design {summary['design']}, "
              f"{summary['readers']} reader order(s)) in {summary['study']}; key {summary['key']} "
              "(keep it away from the readers)")
    return 0


def _import(args) -> int:
    from p2p_desktop.hashing import sha256_file
    from p2p_desktop.readerstudy import load_study, parse_answers_csv, save_answers
    from p2p_desktop.readerstudy.answers import AnswerErrors, check_reader

    meta = load_study(args.study)
    reader = check_reader(args.reader)
    try:
        answers = parse_answers_csv(args.answers, meta)
    except AnswerErrors as exc:
        for line in exc.lines:
            sys.stderr.write(f"p2p-desktop: error: {line}\n")
        return 2
    path = save_answers(args.study, reader, answers, source="import")
    _audit("import", {"study": str(Path(args.study).resolve()), "study_id": meta["study_id"], "reader": reader,
                      "answers": len(answers), "csv": str(Path(args.answers).resolve()),
                      "csv_sha256": sha256_file(args.answers), "saved": str(path), "saved_sha256": sha256_file(path)})
    if args.json:
        emit_json({"reader": reader, "answers": len(answers), "saved": str(path)})
    else:
        print(f"reader-study: {len(answers)} answer(s) of {reader} saved to {path}")
    return 0


def _score(args) -> int:
    from p2p_desktop.errors import InputError, OutputError
    from p2p_desktop.hashing import sha256_bytes, sha256_file
    from p2p_desktop.io.outputs import atomic_write_bytes
    from p2p_desktop.readerstudy import score_study
    from p2p_desktop.readerstudy.report import report_html, report_pdf
    from p2p_desktop.readerstudy.score import score_table

    formats = split_list(args.report)
    bad = [f for f in formats if f not in ("html", "pdf")]
    if bad:
        raise InputError(f"--report: unknown format(s) {', '.join(bad)}; choose html, pdf")
    study = Path(args.study).resolve()
    folder = Path(args.report_dir or Path(args.key).resolve().parent).resolve()
    if formats and (folder == study or study in folder.parents):
        raise OutputError(f"report folder {folder} is inside the study folder: the report would unblind it")
    scores = score_study(study, args.key)
    written = []
    if formats:
        folder.mkdir(parents=True, exist_ok=True)
        for fmt in formats:
            data = report_html(scores).encode("utf-8") if fmt == "html" else report_pdf(scores)
            path = atomic_write_bytes(folder / f"reader-study-{scores['study_id']}.{fmt}", data)
            written.append({"kind": f"reader-study-report-{fmt}", "path": str(path), "sha256": sha256_bytes(data)})
    _audit("score", {"study": str(study), "study_id": scores["study_id"], "key": str(Path(args.key).resolve()),
                     "key_sha256": sha256_file(args.key), "readers": sorted(scores["readers"]),
                     "outputs": written})
    scores["reports"] = [w["path"] for w in written]
    if args.json:
        emit_json(scores)
    else:
        print(score_table(scores))
        for w in written:
            print(f"report: {w['path']}")
    return 0


def _check(args) -> int:
    from p2p_desktop.readerstudy import check_study_folder, load_study

    meta = load_study(args.study)
    problems = check_study_folder(args.study)
    for line in problems:
        sys.stderr.write(f"p2p-desktop: error: {line}\n")
    if problems:
        return 2
    n = sum(len(c["files"]) for c in meta["cases"])
    print(f"reader-study: {n} image(s) of {len(meta['cases'])} cases differ only in UIDs, case number and pixels")
    return 0


def run(args) -> int:
    """Dispatch the action; exit 0, or 2 with one line per problem."""
    action = getattr(args, "rs_action", None)
    if action is None:
        args._parser.print_help(sys.stderr)
        return 2
    return {"make": _make, "import": _import, "score": _score, "check": _check}[action](args)
