"""Robustness round three (issue 28 items 6, 7, 11, 13, 15): a classifier with NaN weights, a full
disk under the audit log, a read-only output folder, two runs into one folder, and SIGTERM just
after a run finished. Real artefacts only: a copy of the demo classifier with one weight set to
NaN, real tmpfs mounts (full, read-only), real signals to real child processes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2p_desktop.cli.main import main as _main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "models" / "demo-squeezenet1_1"


def main(*argv) -> int:
    try:
        return _main([str(a) for a in argv])
    except SystemExit as exc:  # argument errors: argparse exits (2) after one line
        return int(exc.code)


def _records(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_bytes().splitlines() if x.strip()] if log.exists() else []


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "per_image.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Three phantoms (one per class) in the BUSI layout."""
    from p2p_desktop.phantoms import write_png_dataset

    folder = tmp_path_factory.mktemp("data") / "busi"
    write_png_dataset(folder, 3, seed=3, size=48)
    return folder


@pytest.fixture(scope="module")
def nan_classifier(tmp_path_factory) -> Path:
    """A copy of the demo SqueezeNet (card + safetensors) with one bias of its head set to NaN, its
    card's SHA-256 updated: a model that loads and verifies but computes NaN logits."""
    from safetensors.torch import load_file, save_file

    from p2p_desktop.hashing import sha256_file

    folder = tmp_path_factory.mktemp("nan-model")
    state = load_file(DEMO / "model.safetensors")
    state["classifier.1.bias"][0] = float("nan")
    save_file(state, str(folder / "model.safetensors"))
    card = json.loads((DEMO / "card.json").read_text(encoding="utf-8"))
    card.update(name="nan-squeezenet", sha256=sha256_file(folder / "model.safetensors"))
    (folder / "card.json").write_text(json.dumps(card), encoding="utf-8")
    return folder / "card.json"


@pytest.fixture
def tmpfs():
    """``tmpfs(folder, size, read_only=False) -> Path``: a real tmpfs of ``size`` mounted at ``folder``
    (skipped where this process may not mount); unmounted after the test."""
    mounted = []

    def mount(folder: Path, size: str = "64k", read_only: bool = False) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        opts = f"size={size},mode=0755" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=False)


# -- item 6: non-finite logits are bad input everywhere ---------------------------------------------
def test_nan_weights_make_classify_bad_input(data, nan_classifier, capsys):
    image = next((data / "benign").glob("benign_*[0-9].png"))
    code = main("classify", image, "--classifier", nan_classifier, "--json")
    out = capsys.readouterr()
    assert code == 2 and out.out == "", out
    assert len(out.err.strip().splitlines()) == 1 and "non-finite" in out.err, out.err
    assert "nan" not in out.err.lower().replace("nan or inf", "").replace("nan-squeezenet", "")


def test_nan_weights_make_attack_bad_input_and_write_nothing(tmp_path, data, nan_classifier, capsys):
    image = next((data / "malignant").glob("malignant_*[0-9].png"))
    log = tmp_path / "audit.jsonl"
    code = main("attack", image, "--attack", "fgsm", "--classifier", nan_classifier, "--out", tmp_path / "o",
                "--audit-log", log)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "non-finite" in err, err
    assert not (tmp_path / "o").exists() and _records(log) == []


def test_nan_weights_give_evaluate_an_error_row_per_job_never_a_class(tmp_path, data, nan_classifier, capsys):
    out = tmp_path / "ev"
    code = main("evaluate", data, "--attacks", "fgsm", "--classifiers", f"{nan_classifier},demo-squeezenet1_1",
                "--out", out)
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err, err
    rows = [r for r in _rows(out) if r["classifier"] == "nan-squeezenet"]
    # every image has its row (none counted as a "benign" verdict, none skipped as misclassified)
    assert sorted(r["image"] for r in rows) == sorted(p.relative_to(data).as_posix()
                                                      for p in data.glob("*/*[0-9].png"))
    for r in rows:
        assert "non-finite" in r["error"] and r["clean_pred"] == "" and r["success"] == "", r
    summary = json.loads((out / "summary.json").read_text())
    nan_row = next(s for s in summary["summary"] if s["classifier"] == "nan-squeezenet")
    assert nan_row["correct"] == 0 and nan_row["success_rate"] is None


# -- item 7: a full disk never tears the audit log ---------------------------------------------------
def _fill(folder: Path) -> None:
    """Write a filler file until the file system is full."""
    with open(folder / "filler", "wb", buffering=0) as fh:
        while True:
            try:
                fh.write(b"f" * 1024)
            except OSError:
                break
    with open(folder / "filler2", "wb", buffering=0) as fh:  # the last bytes of a partly used page
        while True:
            try:
                fh.write(b"f")
            except OSError:
                break


def test_disk_full_during_an_audit_append_leaves_the_log_byte_for_byte(tmp_path, tmpfs):
    from p2p_desktop.audit import AuditLog, verify_log
    from p2p_desktop.errors import OutputError

    fs = tmpfs(tmp_path / "fs", "64k")
    log = AuditLog(fs / "audit.jsonl", key_path=tmp_path / "audit.key")
    log.append("attack", {"pad": ""})
    while not 0 < -log.path.stat().st_size % 4096 < 600:  # the log ends inside a page: room for part of a record
        log.append("attack", {"pad": "p" * 100})
    before = log.path.read_bytes()
    _fill(fs)
    with pytest.raises(OutputError, match="audit log"):
        log.append("attack", {"big": "x" * 1000})
    assert log.path.read_bytes() == before  # no byte of the failed record stays
    assert verify_log(log.path, key=(tmp_path / "audit.key").read_bytes()).ok
    (fs / "filler").unlink()
    log.append("attack", {"after": "disk full"})  # no repair needed
    report = verify_log(log.path, key=(tmp_path / "audit.key").read_bytes())
    assert report.ok and report.records == len(_records(log.path)) > 1


# -- item 11: a read-only --out is bad input for evaluate as for attack ------------------------------
def test_read_only_out_is_one_line_exit_2_for_evaluate_and_attack(tmp_path, data, tmpfs, capsys):
    ro = tmpfs(tmp_path / "ro", "64k", read_only=True)
    image = next((data / "benign").glob("benign_*[0-9].png"))
    for argv in (("evaluate", data, "--attacks", "fgsm", "--classifiers", "demo-squeezenet1_1", "--out", ro / "ev"),
                 ("evaluate", data, "--attacks", "fgsm", "--classifiers", "demo-squeezenet1_1", "--out", ro),
                 ("attack", image, "--attack", "fgsm", "--classifier", "demo-squeezenet1_1", "--out", ro / "at")):
        code = main(*argv)
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "internal error" not in err, (argv[0], err)
        assert "Read-only" in err, err
    assert list(ro.iterdir()) == []


# -- item 13: one run at a time in an output folder ------------------------------------------------
def test_a_second_evaluate_into_the_same_out_is_refused_and_a_dead_ones_folder_resumes(tmp_path, data, capsys):
    out = tmp_path / "ev"
    args = ["evaluate", str(data), "--attacks", "pgd", "--param", "pgd.steps=60", "--classifiers",
            "demo-squeezenet1_1", "--limit", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
           "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "p2p_desktop", *args], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (out / "per_image.csv").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)  # the first run holds the folder, frozen mid-job
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        before = (out / "per_image.csv").read_bytes()
        assert len(before.splitlines()) <= 1, "the first run finished its job before it was stopped"
        code = main(*args)
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "in use" in err, err
        assert (out / "per_image.csv").read_bytes() == before
    finally:
        first.kill()  # dies holding the folder (SIGKILL: no clean-up of its own)
        first.wait(timeout=60)
    code = main(*args)  # the dead run's folder is free again and resumes
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = _rows(out)
    assert len(rows) == 1 == len({(r["image"], r["classifier"], r["attack"]) for r in rows})
    assert [p.name for p in out.iterdir() if "lock" in p.name] == []


# -- item 15: SIGTERM after a run finished ------------------------------------------------------------
def test_sigterm_after_the_outputs_are_complete_exits_0_and_says_so(tmp_path, data, monkeypatch, capsys):
    from p2p_desktop.cli import cmd_attack

    image = next((data / "benign").glob("benign_*[0-9].png"))
    real = cmd_attack.print_run

    def print_then_terminated(*a, **kw):  # the signal arrives while the result is printed
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
        return real(*a, **kw)

    monkeypatch.setattr(cmd_attack, "print_run", print_then_terminated)
    log = tmp_path / "audit.jsonl"
    code = main("attack", image, "--attack", "fgsm", "--classifier", "demo-squeezenet1_1", "--out", tmp_path / "o",
                "--audit-log", log)
    err = capsys.readouterr().err
    assert code == 0 and "terminated" in err and "complete" in err and "cancelled" not in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    written = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert written and [r["event"] for r in _records(log)] == ["attack"]
    audited = {Path(o["path"]).name for o in _records(log)[0]["data"]["outputs"]}
    assert audited == set(written)


@pytest.mark.parametrize("delay", [0.0, 0.15])
def test_sigterm_just_after_an_attack_finished_is_clean(tmp_path, data, delay):
    image = next((data / "benign").glob("benign_*[0-9].png"))
    out, log = tmp_path / "o", tmp_path / "audit.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "P2P_DESKTOP_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    proc = subprocess.Popen([sys.executable, "-m", "p2p_desktop", "attack", str(image), "--attack", "fgsm",
                             "--classifier", "demo-squeezenet1_1", "--out", str(out), "--audit-log", str(log)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = b""
    while b"fgsm:" not in seen:  # the verdict line: outputs written and audited
        chunk = os.read(proc.stdout.fileno(), 4096)
        assert chunk, proc.stderr.read().decode()[-2000:]
        seen += chunk
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=120)
    text = err.decode(errors="replace")
    assert proc.returncode == 0, (proc.returncode, text[-2000:])
    assert "Traceback" not in text and "Exception ignored" not in text, text[-2000:]
    assert "cancelled" not in text, text
    records = _records(log)
    assert [r["event"] for r in records] == ["attack"]
    assert {Path(o["path"]).name for o in records[0]["data"]["outputs"]} == {p.name for p in out.iterdir()}


def test_sigterm_handler_is_restored_for_in_process_callers(tmp_path, data, capsys):
    before = signal.getsignal(signal.SIGTERM)
    image = next((data / "benign").glob("benign_*[0-9].png"))
    assert main("classify", image, "--classifier", "demo-squeezenet1_1") == 0
    capsys.readouterr()
    assert signal.getsignal(signal.SIGTERM) is before
    shutil.rmtree(tmp_path, ignore_errors=True)
