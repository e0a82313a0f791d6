"""Every job of the product, run end to end: the frozen bundle's check, and the trace that
decides which data files the bundle collects.

One table of jobs (:data:`JOBS`) serves two uses:

``check BUNDLE_DIR``
    runs each job with the frozen program (``packaging/check_bundle.sh`` calls this from a moved
    copy of the bundle, with an empty HOME and, where ``unshare -n`` works, no network). Each
    job must exit 0 and leave its outputs; the first one that does not stops the check with
    ``check_bundle: FAILED: <job>: <why>`` and the tail of its stderr.

``trace --out FILE.json``
    runs the same jobs from the source tree (``sys.executable``) with an audit hook that
    records every file a job opens, and writes the non-code files under ``site-packages`` or
    the ``p2p_desktop`` package as PyInstaller ``(source, destination folder)`` pairs: the
    spec collects what the program really opens rather than a hand list.

Standard library only: the check runs where only the bundle and system tools exist.
PACS jobs start a real Orthanc on loopback (Debian ``orthanc``); the GUI job a real Xvfb
(Debian ``xvfb``) with Qt's xcb platform. Both are stopped by their process id.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["JOBS", "Job", "main"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLASSIFIER = "demo-squeezenet1_1"
ORTHANC_AET = "CHECK_PACS"
OUR_AET = "P2P_DESKTOP"  # the program's default AE title (pacs/nodes.py)
JOB_TIMEOUT = 900  # seconds: generous on a busy 2-core machine


@dataclass(frozen=True)
class Job:
    """One run of the program: arguments, what it must leave behind, what it needs."""

    name: str
    argv: tuple[str, ...]
    outputs: tuple[str, ...] = ()  # globs under the work folder that must match a file
    needs: str = ""  # "" | "orthanc" | "xvfb"
    json_stdout: bool = False  # stdout must be exactly one JSON object
    same_bytes: tuple[str, str] | None = None  # two globs whose files must be byte-identical
    dicom_valid: str = ""  # glob of DICOMs that dciodvfy must find no new error in
    stored_on_node: bool = False  # Orthanc must hold an instance afterwards
    expect_exit: int = 0
    expect_stderr: str = ""  # with expect_exit != 0: the one line of stderr must contain this
    frozen_only: bool = False  # a promise of the bundle only (not run by the trace from source)


def _attack(name: str, attack: str, out: str, *more: str, backbone: bool = False) -> tuple[str, ...]:
    argv = ["attack", "{study}", "--attack", attack, "--classifier", CLASSIFIER, "--out", "{work}/" + out]
    if backbone:
        argv += ["--backbone", "demo"]
    return tuple(argv + list(more) + ["--json"])


_EXPORT = ("--export-dicom", "--deidentify", "--report", "html,pdf")

#: The jobs, in order; later ones may use earlier ones' outputs.
JOBS: tuple[Job, ...] = (
    Job("models verify", ("models", "verify")),
    Job("classify", ("classify", "{study}", "--classifier", CLASSIFIER, "--json"), json_stdout=True),
    Job("fgsm with DICOM export and reports", _attack("fgsm", "fgsm", "fgsm", *_EXPORT), json_stdout=True,
        outputs=("fgsm/*.dcm", "fgsm/*.html", "fgsm/*.pdf"), dicom_valid="fgsm/*.dcm"),
    Job("pgd with DICOM export and reports", _attack("pgd", "pgd", "pgd", *_EXPORT), json_stdout=True,
        outputs=("pgd/*.dcm", "pgd/*.html", "pgd/*.pdf"), dicom_valid="pgd/*.dcm"),
    Job("pgd with provenance", _attack("pgd", "pgd", "pgd-plain"), json_stdout=True,
        outputs=("pgd-plain/*_adv.png", "pgd-plain/*_provenance.json")),
    Job("rerun", ("rerun", "{glob:pgd-plain/*_provenance.json}", "--out", "{work}/rerun", "--json"),
        json_stdout=True, outputs=("rerun/*_adv.png",), same_bytes=("pgd-plain/*_adv.png", "rerun/*_adv.png")),
    Job("p2p fast on the demo backbone", _attack("p2p", "p2p", "p2p", "--preset", "fast", backbone=True),
        json_stdout=True, outputs=("p2p/*_provenance.json", "p2p/*_result.json")),
    Job("diff-pgd on the demo backbone", _attack("diff-pgd", "diff-pgd", "diff-pgd", backbone=True),
        json_stdout=True, outputs=("diff-pgd/*_provenance.json", "diff-pgd/*_result.json")),
    Job("phantoms", ("phantoms", "--n", "4", "--seed", "7340000", "--out", "{work}/phantoms", "--json"),
        json_stdout=True, outputs=("phantoms/*/*.png",)),
    Job("evaluate on four phantoms", ("evaluate", "{work}/phantoms", "--attacks", "fgsm", "--classifiers",
                                      CLASSIFIER, "--out", "{work}/eval", "--json"),
        json_stdout=True, outputs=("eval/summary.json", "eval/per_image.csv")),
    Job("reader-study make from the evaluation", ("reader-study", "make", "{work}/eval", "--out", "{work}/study",
                                                  "--key", "{work}/key/KEY.json", "--seed", "1", "--json"),
        json_stdout=True, outputs=("study/study.json", "study/answers-template.csv", "key/KEY.json")),
    Job("reader-study check", ("reader-study", "check", "{work}/study")),
    Job("evaluate --executor ray says it cannot run frozen",
        ("evaluate", "{work}/phantoms", "--attacks", "fgsm", "--classifiers", CLASSIFIER, "--out", "{work}/eval-ray",
         "--executor", "ray"), expect_exit=2, expect_stderr="not available in the offline bundle", frozen_only=True),
    Job("pacs echo", ("pacs", "echo", "{node}"), needs="orthanc"),
    Job("attack with --send-dicom", _attack("send", "fgsm", "send", "--export-dicom", "--deidentify",
                                            "--send-dicom", "{node}"),
        needs="orthanc", json_stdout=True, outputs=("send/*.dcm",), stored_on_node=True),
    Job("GUI smoke test on xcb", ("--smoke-test", "--screenshot", "{work}/smoke.png"), needs="xvfb",
        outputs=("smoke.png",)),
)


class CheckFailed(Exception):
    """A job broke: the message names it."""


# --- servers -------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


class Orthanc:
    """A real Orthanc on loopback ports, accepting our AE title; stopped by its pid."""

    def __init__(self, folder: Path):
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        if not os.access(binary, os.X_OK):
            raise CheckFailed("orthanc: Orthanc is not installed (Debian package 'orthanc'; "
                              "scripts/install-system-deps.sh installs it)")
        folder.mkdir(parents=True, exist_ok=True)
        self.dicom_port, self.http_port = _free_port(), _free_port()
        config = {
            "Name": "p2p-desktop-bundle-check", "StorageDirectory": str(folder / "db"),
            "IndexDirectory": str(folder / "db"), "Plugins": [], "HttpServerEnabled": True,
            "HttpPort": self.http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomServerEnabled": True, "DicomAet": ORTHANC_AET, "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True, "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False,
            "DicomModalities": {"p2p": {"AET": OUR_AET, "Host": "127.0.0.1", "Port": _free_port(),
                                        "AllowEcho": True, "AllowStore": True}},
            "SaveJobs": False, "StableAge": 1, "KeepAlive": False,
        }
        cfg = folder / "orthanc.json"
        cfg.write_text(json.dumps(config))
        self.log = folder / "orthanc.log"
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen([binary, str(cfg)], stdout=fh, stderr=subprocess.STDOUT, cwd=folder,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise CheckFailed(f"orthanc: exited with {self.proc.returncode}: {self.log.read_text()[-800:]}")
            try:
                self.rest("/system")
                return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise CheckFailed("orthanc: did not answer within 60 s") from None
                time.sleep(0.2)

    @property
    def node(self) -> str:
        return f"{ORTHANC_AET}@127.0.0.1:{self.dicom_port}"

    def rest(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=20) as rsp:
            return json.loads(rsp.read() or b"null")

    def stop(self) -> None:
        _stop(self.proc)


class Xvfb:
    """A real X server on a free display number; stopped by its pid."""

    def __init__(self, folder: Path):
        binary = shutil.which("Xvfb")
        if binary is None:
            raise CheckFailed("xvfb: Xvfb is not installed (Debian package 'xvfb'; "
                              "scripts/install-system-deps.sh installs it)")
        for number in range(91, 140):
            if not os.path.exists(f"/tmp/.X11-unix/X{number}") and not os.path.exists(f"/tmp/.X{number}-lock"):
                break
        self.display = f":{number}"
        self.log = folder / "xvfb.log"
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen([binary, self.display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                                         stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(f"/tmp/.X11-unix/X{number}"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise CheckFailed(f"xvfb: did not start: {self.log.read_text()[-400:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        _stop(self.proc)


# --- running the jobs ----------------------------------------------------------------------------

def _expand(argv: tuple[str, ...], work: Path, values: dict[str, str]) -> list[str]:
    out = []
    for arg in argv:
        if arg.startswith("{glob:"):
            found = sorted(glob.glob(str(work / arg[len("{glob:"):-1])))
            if not found:
                raise CheckFailed(f"no {arg[6:-1]} from an earlier job")
            out.append(found[0])
        else:
            out.append(arg.format(work=work, **values))
    return out


def _tail(text: str, n: int = 15) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-n:])


def _dciodvfy_errors(path: str) -> set[str]:
    res = subprocess.run(["dciodvfy", path], capture_output=True, text=True, timeout=120)
    return {line.strip() for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")}


def _verify(job: Job, work: Path, res: subprocess.CompletedProcess, study: Path, server: Orthanc | None) -> None:
    """Raise CheckFailed with the reason when the job did not do its work."""
    if job.expect_exit:
        lines = res.stderr.strip().splitlines()
        if res.returncode != job.expect_exit or len(lines) != 1 or job.expect_stderr not in lines[0]:
            raise CheckFailed(f"expected exit {job.expect_exit} and one line saying {job.expect_stderr!r}; "
                              f"got exit {res.returncode}\n{_tail(res.stderr)}")
        return
    if res.returncode != 0:
        raise CheckFailed(f"exit code {res.returncode}\n{_tail(res.stderr)}")
    if job.json_stdout:
        try:
            json.loads(res.stdout)
        except ValueError:
            raise CheckFailed(f"stdout is not one JSON object: {res.stdout[:200]!r}") from None
    for pattern in job.outputs:
        if not [p for p in glob.glob(str(work / pattern)) if os.path.isfile(p) and os.path.getsize(p) > 0]:
            raise CheckFailed(f"no output matches {pattern}\n{_tail(res.stderr)}")
    if job.same_bytes:
        first, second = (sorted(glob.glob(str(work / g))) for g in job.same_bytes)
        if len(first) != len(second) or any(Path(a).read_bytes() != Path(b).read_bytes()
                                            for a, b in zip(first, second)):
            raise CheckFailed(f"{job.same_bytes[1]} is not byte-identical to {job.same_bytes[0]}")
    if job.dicom_valid:
        if shutil.which("dciodvfy") is None:
            print("check_bundle:   (dciodvfy not installed: DICOM validation skipped)", flush=True)
        else:
            before = _dciodvfy_errors(str(study))
            for path in glob.glob(str(work / job.dicom_valid)):
                new = _dciodvfy_errors(path) - before
                if new:
                    raise CheckFailed(f"dciodvfy finds new errors in {Path(path).name}: {sorted(new)[:5]}")
    if job.stored_on_node and server is not None and not server.rest("/instances"):
        raise CheckFailed("the node received no instance")


def run_jobs(program: list[str], work: Path, study_src: Path, env: dict[str, str],
             only: set[str] | None = None, log=print, frozen: bool = True) -> list[tuple[str, float]]:
    """Run every job (or those named in ``only``) in order; raise CheckFailed naming the first that breaks."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "input").mkdir(exist_ok=True)
    study = work / "input" / "study.dcm"
    shutil.copyfile(study_src, study)
    values = {"study": str(study), "node": ""}
    timings = []
    servers: dict[str, object] = {}
    try:
        for job in JOBS:
            if (only and job.name not in only) or (job.frozen_only and not frozen):
                continue
            job_env = dict(env)
            if job.needs == "orthanc":
                if "orthanc" not in servers:
                    servers["orthanc"] = Orthanc(work / "orthanc")
                values["node"] = servers["orthanc"].node
            elif job.needs == "xvfb":
                if "xvfb" not in servers:
                    servers["xvfb"] = Xvfb(work)
                job_env.update(DISPLAY=servers["xvfb"].display, QT_QPA_PLATFORM="xcb")
            try:
                argv = _expand(job.argv, work, values)
            except CheckFailed as exc:
                raise CheckFailed(f"{job.name}: {exc}") from None
            log(f"check_bundle: {job.name}: p2p-desktop {' '.join(argv)}")
            start = time.monotonic()
            try:
                res = subprocess.run(program + argv, capture_output=True, text=True, env=job_env, cwd=work,
                                     timeout=JOB_TIMEOUT, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise CheckFailed(f"{job.name}: no answer within {JOB_TIMEOUT} s") from None
            elapsed = time.monotonic() - start
            try:
                _verify(job, work, res, study, servers.get("orthanc"))
            except CheckFailed as exc:
                raise CheckFailed(f"{job.name}: {exc}") from None
            timings.append((job.name, elapsed))
            log(f"check_bundle:   ok ({elapsed:.1f} s)")
    finally:
        for server in servers.values():
            server.stop()
    return timings


def _clean_env(home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(HOME=str(home), P2P_DESKTOP_HOME=str(home / "p2p-desktop"), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
               QT_QPA_PLATFORM="offscreen")
    return env


def check(bundle: Path, only: set[str] | None) -> int:
    exe = bundle / "p2p-desktop"
    if not os.access(exe, os.X_OK):
        print(f"check_bundle: FAILED: {exe} is not an executable bundle", file=sys.stderr)
        return 1
    study = next(iter(sorted((bundle / "_internal" / "resources" / "samples" / "dicom").glob("*/*.dcm"))), None)
    if study is None:
        print("check_bundle: FAILED: the bundle has no sample DICOM (resources/samples/dicom)", file=sys.stderr)
        return 1
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="p2p-bundle-check-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        try:
            timings = run_jobs([str(exe)], Path(tmp) / "work", study, _clean_env(home), only)
        except CheckFailed as exc:
            print(f"check_bundle: FAILED: {exc}", file=sys.stderr)
            return 1
    total = time.monotonic() - start
    print(f"check_bundle: all {len(timings)} jobs passed in {total:.0f} s "
          f"({', '.join(f'{n} {t:.0f} s' for n, t in timings)})")
    return 0


# --- trace ---------------------------------------------------------------------------------------

_CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".so", ".pyd", ".dll", ".dylib", ".pyi")


def _is_data(path: str) -> bool:
    name = os.path.basename(path)
    return (not name.endswith(_CODE_SUFFIXES) and ".so." not in name and "__pycache__" not in path
            and ".dist-info" not in path and ".egg-info" not in path and os.path.isfile(path))


def collected_pairs(opened: set[str], roots: list[str]) -> list[tuple[str, str]]:
    """(source, destination folder) for each opened data file under one of ``roots``."""
    pairs = set()
    for path in opened:
        real = os.path.realpath(path)
        if not _is_data(real):
            continue
        for root in roots:
            if real.startswith(root.rstrip(os.sep) + os.sep):
                rel = os.path.relpath(real, root)
                pairs.add((real, os.path.dirname(rel) or "."))
                break
    return sorted(pairs)


def trace(out: Path, only: set[str] | None) -> int:
    import site
    import sysconfig

    roots = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()})
    pkg = str(ROOT / "p2p_desktop")
    study = ROOT / "resources" / "samples" / "dicom" / "benign" / "benign_9000000.dcm"
    opened: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="p2p-trace-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        env = _clean_env(home)
        env["PYTHONPATH"] = str(ROOT)
        log_file = Path(tmp) / "opened.txt"
        env["P2P_TRACE_OPENS"] = str(log_file)
        program = [sys.executable, str(HERE / "trace_opens.py")]
        try:
            run_jobs(program, Path(tmp) / "work", study, env, only, frozen=False)
        except CheckFailed as exc:
            print(f"trace: FAILED from source: {exc}", file=sys.stderr)
            return 1
        if log_file.exists():
            opened = set(log_file.read_text(encoding="utf-8", errors="replace").splitlines())
    pairs = collected_pairs(opened, roots)
    pairs += [(src, "p2p_desktop/" + dest if dest != "." else "p2p_desktop")
              for src, dest in collected_pairs(opened, [pkg])]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(sorted(set(pairs)), indent=1), encoding="utf-8")
    print(f"trace: {len(pairs)} data files opened by the jobs -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``check BUNDLE_DIR`` or ``trace --out FILE``; ``--only NAME`` (repeatable) runs named jobs."""
    parser = argparse.ArgumentParser(prog="frozen_jobs.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="run every job with a built bundle")
    c.add_argument("bundle", type=Path)
    t = sub.add_parser("trace", help="run every job from source; write the data files they open")
    t.add_argument("--out", type=Path, required=True)
    for p in (c, t):
        p.add_argument("--only", action="append", metavar="JOB", help="run only this job (repeatable)")
    sub.add_parser("list", help="print the jobs' names")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        print("\n".join(job.name for job in JOBS))
        return 0
    only = set(args.only) if args.only else None
    if only and only - {job.name for job in JOBS}:
        parser.error(f"unknown job(s): {', '.join(sorted(only - {job.name for job in JOBS}))}")
    return check(args.bundle, only) if args.cmd == "check" else trace(args.out, only)


if __name__ == "__main__":
    sys.exit(main())
