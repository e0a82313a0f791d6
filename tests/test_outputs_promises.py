"""The promises of output writing (``p2p_desktop.io.outputs``), each pinned on real files:

* an output folder inside an input's study folder is refused however it is spelled: with
  ``..``, through a symlinked folder, for a symlinked input, or as the input itself;
* a taken name is never overwritten, also when another writer takes it between the choice of
  the name and the write (deterministic interleaving, and real concurrent processes);
* Ctrl-C (KeyboardInterrupt) or a cancel *while outputs are being written* removes every file
  of the job, in-process and through the CLI.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2p_desktop.errors import Cancelled, OutputError
from p2p_desktop.io import outputs
from p2p_desktop.io.outputs import OutputSet, atomic_write_bytes, check_output_dir, unique_path


@pytest.fixture
def study_dir(tmp_path, pydicom_file):
    """tmp/study/us.dcm: a real ultrasound DICOM in its own folder."""
    folder = tmp_path / "study"
    folder.mkdir()
    shutil.copy(pydicom_file("examples_rgb_color.dcm"), folder / "us.dcm")
    return folder


# -- refusing the study folder ------------------------------------------------------------------
@pytest.mark.parametrize("spelling", [
    "study/sub",
    "study",
    "elsewhere/../study/adv",
    "study/sub/../../study/sub2",
    "./study/./x/..",
])
def test_output_folder_inside_the_study_is_refused_however_spelled(tmp_path, study_dir, spelling, unchanged,
                                                                   monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    with unchanged(study_dir):
        with pytest.raises(OutputError, match="inside the input study's folder .*; choose a folder outside it "
                                               r"\(sources are never written to\)$"):
            check_output_dir(spelling, [study_dir / "us.dcm"])
        with pytest.raises(OutputError, match="inside the input study's folder"):
            OutputSet(tmp_path / spelling, [study_dir / "us.dcm"])
    assert sorted(p.name for p in study_dir.iterdir()) == ["us.dcm"]


def test_symlinks_into_the_study_folder_are_refused(tmp_path, study_dir, unchanged):
    link = tmp_path / "innocent-looking"
    link.symlink_to(study_dir, target_is_directory=True)
    with unchanged(study_dir):
        # the output folder reaches the study through a symlinked folder
        with pytest.raises(OutputError, match="inside the input study's folder"):
            check_output_dir(link / "adv", [study_dir / "us.dcm"])
        # the output folder is itself a symlink to the study folder
        with pytest.raises(OutputError, match="inside the input study's folder"):
            check_output_dir(link, [study_dir / "us.dcm"])
        # the input is named through a symlink that lives outside the study folder
        input_link = tmp_path / "shortcut.dcm"
        input_link.symlink_to(study_dir / "us.dcm")
        with pytest.raises(OutputError, match="inside the input study's folder"):
            check_output_dir(study_dir / "adv", [input_link])
        # the input is a folder (a series) given through a symlink
        with pytest.raises(OutputError, match="inside the input study's folder"):
            check_output_dir(study_dir / "adv", [link])
    # the same folders outside the study are fine, and come back resolved
    assert check_output_dir(tmp_path / "x" / ".." / "out", [input_link]) == (tmp_path / "out").resolve()
    assert check_output_dir(tmp_path / "out", [link]) == (tmp_path / "out").resolve()


def test_the_input_itself_and_a_file_are_refused_as_output_folders(tmp_path, study_dir):
    with pytest.raises(OutputError, match="inside the input study's folder"):
        check_output_dir(study_dir / "us.dcm", [study_dir / "us.dcm"])
    with pytest.raises(OutputError, match="inside the input study's folder"):
        check_output_dir(study_dir, [study_dir])  # a folder input: the folder itself
    a_file = tmp_path / "note.txt"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_output_dir(a_file)
    home_relative = check_output_dir("~")
    assert home_relative == Path.home().resolve()


def test_cli_refuses_a_dotdot_output_folder_with_one_line_and_exit_2(tmp_path, study_dir, unchanged, capsys):
    from p2p_desktop.cli.main import main

    w = _squeezenet_weights(tmp_path)
    out = tmp_path / "elsewhere" / ".." / "study" / "adv"
    with unchanged(study_dir):
        rc = main(["attack", str(study_dir / "us.dcm"), "--attack", "fgsm", "--classifier", str(w), "--arch",
                   "squeezenet1_1", "--classes", "benign,malignant,normal", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "inside the input study's folder" in err[0], err
    assert not (study_dir / "adv").exists()


# -- never overwriting a taken name -------------------------------------------------------------
def test_unique_path_counts_up_past_taken_names(tmp_path):
    p = tmp_path / "x_adv.png"
    assert unique_path(p) == p
    p.write_bytes(b"0")
    assert unique_path(p) == tmp_path / "x_adv-1.png"
    (tmp_path / "x_adv-1.png").write_bytes(b"1")
    (tmp_path / "x_adv-2.png").write_bytes(b"2")
    assert unique_path(p) == tmp_path / "x_adv-3.png"


def test_a_taken_name_keeps_its_bytes_and_the_new_file_goes_beside_it(tmp_path):
    target = tmp_path / "deep" / "er" / "x_adv.png"
    first = atomic_write_bytes(target, b"first")
    second = atomic_write_bytes(target, b"second")
    third = atomic_write_bytes(target, b"third")
    assert (first, second, third) == (target, target.with_name("x_adv-1.png"), target.with_name("x_adv-2.png"))
    assert [p.read_bytes() for p in (first, second, third)] == [b"first", b"second", b"third"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["x_adv-1.png", "x_adv-2.png", "x_adv.png"]


def test_the_bytes_are_staged_beside_the_target_and_linked_into_place(tmp_path, monkeypatch):
    """The temporary file lives in the target folder (same file system: the link is atomic)."""
    real_link = os.link
    staged = []

    def watching_link(src, dst):
        staged.append((Path(src), Path(dst), Path(src).read_bytes()))
        return real_link(src, dst)

    monkeypatch.setattr(os, "link", watching_link)
    got = atomic_write_bytes(tmp_path / "x_adv.png", b"ours")
    [(src, dst, data)] = staged
    # a short hidden temporary name
    assert src.parent == tmp_path and src.name.startswith(".p2p-") and src.name.endswith(".part")
    assert dst == got == tmp_path / "x_adv.png" and data == b"ours"
    assert not src.exists()


def test_a_name_taken_between_choosing_it_and_writing_is_not_overwritten(tmp_path, monkeypatch):
    """Another writer creates the chosen name at the worst moment: just after it was found free."""
    real = outputs.unique_path
    raced = []

    def chosen_then_taken(path):
        free = real(path)
        if not raced:  # the other writer wins the race once
            free.write_bytes(b"other writer")
            raced.append(free)
        return free

    monkeypatch.setattr(outputs, "unique_path", chosen_then_taken)
    got = atomic_write_bytes(tmp_path / "x_adv.png", b"ours")
    assert raced == [tmp_path / "x_adv.png"]
    assert (tmp_path / "x_adv.png").read_bytes() == b"other writer"
    assert got == tmp_path / "x_adv-1.png" and got.read_bytes() == b"ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_adv-1.png", "x_adv.png"]  # no temp file left


def test_without_hard_links_a_taken_name_is_still_not_overwritten(tmp_path, monkeypatch):
    """File systems without hard links: the fallback rename must also respect taken names."""
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    (tmp_path / "x_adv.png").write_bytes(b"taken")
    monkeypatch.setattr(os, "link", no_links)
    got = atomic_write_bytes(tmp_path / "x_adv.png", b"ours")
    assert got == tmp_path / "x_adv-1.png" and got.read_bytes() == b"ours"
    assert (tmp_path / "x_adv.png").read_bytes() == b"taken"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_adv-1.png", "x_adv.png"]


def test_without_hard_links_a_name_taken_in_the_race_is_not_overwritten(tmp_path, monkeypatch):
    real = outputs.unique_path
    raced = []

    def chosen_then_taken(path):
        free = real(path)
        if not raced:
            free.write_bytes(b"other writer")
            raced.append(free)
        return free

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(outputs, "unique_path", chosen_then_taken)
    monkeypatch.setattr(os, "link", no_links)
    got = atomic_write_bytes(tmp_path / "x_adv.png", b"ours")
    assert (tmp_path / "x_adv.png").read_bytes() == b"other writer"
    assert got == tmp_path / "x_adv-1.png" and got.read_bytes() == b"ours"


_WRITER = """
import json, sys, time
from pathlib import Path
from p2p_desktop.io.outputs import atomic_write_bytes
folder, who, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
while not go.exists():
    time.sleep(0.005)
print(json.dumps([str(atomic_write_bytes(Path(folder) / "x_adv.png", f"{who}:{i}".encode())) for i in range(n)]))
"""


def test_concurrent_writers_of_one_name_never_lose_a_file(tmp_path):
    """Real processes racing on the same name: every write lands in its own file.

    The writers are fresh interpreters (not forks of this test process, whose torch and
    monitor threads can leave a forked child deadlocked on a lock copied mid-use)."""
    import json

    out, go = tmp_path / "out", tmp_path / "go"
    out.mkdir()
    writers, each = 4, 25
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(out), str(w), str(each), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(writers)]
    time.sleep(0.5)
    go.touch()  # release them together
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        results.append(json.loads(stdout))
    paths = [p for r in results for p in r]
    assert len(paths) == len(set(paths)) == writers * each
    contents = {Path(p).read_bytes().decode() for p in paths}
    assert contents == {f"{w}:{i}" for w in range(writers) for i in range(each)}
    for w, r in enumerate(results):  # each writer's file holds its own bytes
        assert [Path(p).read_bytes().decode() for p in r] == [f"{w}:{i}" for i in range(each)]
    assert len(list(out.iterdir())) == writers * each


def test_disk_full_leaves_nothing_and_says_so(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match="disk full while writing x_adv.png"):
        atomic_write_bytes(tmp_path / "x_adv.png", b"data")
    assert list(tmp_path.iterdir()) == []

    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OutputError, match="cannot write .*x_adv.png: Input/output error"):
        atomic_write_bytes(tmp_path / "x_adv.png", b"data")
    assert list(tmp_path.iterdir()) == []


def test_an_uncreatable_output_folder_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=r"^cannot create output folder .*file/sub: Not a directory$"):
        atomic_write_bytes(blocker / "sub" / "x.png", b"x")
    with pytest.raises(OutputError, match=r"^cannot create output folder .*file/sub: Not a directory$"):
        with OutputSet(blocker / "sub"):
            pass


# -- all or nothing -----------------------------------------------------------------------------
def test_ctrl_c_while_writing_removes_every_file_and_the_new_folder(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(KeyboardInterrupt):
        with OutputSet(out) as outs:
            a = outs.write_bytes("a.png", b"a", kind="png")
            b = outs.write_bytes("b.json", b"{}", kind="result")
            assert a.read_bytes() == b"a" and b.exists()
            raise KeyboardInterrupt
    assert not out.exists()
    assert outs.records == []


def test_ctrl_c_while_a_file_is_being_hashed_leaves_nothing(tmp_path, monkeypatch):
    """Hashing a large output takes time; Ctrl-C then must not leave an unrecorded file behind."""
    real = outputs.sha256_bytes

    def interrupted(data):
        if data == b"big":
            raise KeyboardInterrupt
        return real(data)

    monkeypatch.setattr(outputs, "sha256_bytes", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with OutputSet(out) as outs:
            outs.write_bytes("a.png", b"a", kind="png")
            outs.write_bytes("b.dcm", b"big", kind="dicom")
    assert not out.exists(), sorted(os.listdir(out))


def test_rollback_keeps_an_existing_folder_and_what_was_in_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.png").write_bytes(b"earlier run")
    with pytest.raises(KeyboardInterrupt):
        with OutputSet(out) as outs:
            outs.write_bytes("earlier.png", b"this run", kind="png")  # -> earlier-1.png
            raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == ["earlier.png"]
    assert (out / "earlier.png").read_bytes() == b"earlier run"


def test_rollback_keeps_an_existing_empty_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        with OutputSet(out) as outs:
            outs.write_bytes("a.png", b"a", kind="png")
            raise KeyboardInterrupt
    assert out.is_dir() and list(out.iterdir()) == []


def test_a_finished_set_keeps_its_files_and_records_their_hashes(tmp_path):
    import hashlib

    out = tmp_path / "out"
    with OutputSet(out) as outs:
        assert outs.path_for("a.png") == out / "a.png"
        outs.write_bytes("a.png", b"a", kind="png")
        outs.write_bytes("a.png", b"b", kind="png")
        assert outs.path_for("a.png") == out / "a-2.png"
    assert outs.records == [
        {"kind": "png", "path": str(out / "a.png"), "sha256": hashlib.sha256(b"a").hexdigest()},
        {"kind": "png", "path": str(out / "a-1.png"), "sha256": hashlib.sha256(b"b").hexdigest()},
    ]
    assert (out / "a.png").read_bytes() == b"a" and (out / "a-1.png").read_bytes() == b"b"


def test_rollback_tolerates_a_file_already_gone(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with OutputSet(out) as outs:
            p = outs.write_bytes("a.png", b"a", kind="png")
            outs.write_bytes("b.png", b"b", kind="png")
            p.unlink()
            raise RuntimeError("boom")
    assert not out.exists()


class _CancelAfter:
    """A real cancel token that the user 'presses' once ``n`` files have been written."""

    def __init__(self, outs_ref: list, n: int) -> None:
        from p2p_desktop.cancel import CancelToken

        self.token = CancelToken()
        self.outs_ref, self.n = outs_ref, n

    def check(self) -> None:
        if self.outs_ref and len(self.outs_ref[0].records) >= self.n:
            self.token.cancel()
        self.token.check()


def test_cancel_in_the_middle_of_a_real_runs_outputs_rolls_everything_back(tmp_path, study_dir, unchanged):
    from p2p_desktop.jobs.attack import write_run_outputs
    from tests.test_export_dicom import attack_result, load

    study = load(study_dir / "us.dcm")
    result = attack_result(study)
    out = tmp_path / "out"
    ref: list = []
    cancel = _CancelAfter(ref, 3)  # PNG, perturbation and DICOM are on disk when it fires
    seen = []
    with unchanged(study_dir):
        with pytest.raises(Cancelled):
            with OutputSet(out, [study_dir / "us.dcm"], cancel=cancel) as outs:
                ref.append(outs)
                try:
                    write_run_outputs(result, study, outs, input_sha256="x",
                                      exports={"dicom": True, "report": ("html",)})
                finally:
                    seen = sorted(p.name for p in out.iterdir())
    assert len(seen) == 3, seen  # the cancel really came while outputs existed
    assert not out.exists()


# -- through the CLI: SIGINT once the first output file exists ----------------------------------
def _squeezenet_weights(tmp_path: Path) -> Path:
    import torch

    from p2p_desktop.models.classifier import build_architecture

    torch.manual_seed(0)
    w = tmp_path / "w.pth"
    if not w.exists():
        torch.save(build_architecture("squeezenet1_1", 3).state_dict(), w)
    return w


def test_ctrl_c_through_the_cli_after_outputs_exist_leaves_nothing(tmp_path, study_dir, unchanged):
    w = _squeezenet_weights(tmp_path)
    out = tmp_path / "out"
    log = tmp_path / "audit.jsonl"
    env = {**os.environ, "P2P_DESKTOP_HOME": str(tmp_path / "home"), "P2P_DESKTOP_AUDIT_LOG": str(log)}
    with unchanged(study_dir):
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2p_desktop", "attack", str(study_dir / "us.dcm"), "--attack", "fgsm",
             "--classifier", str(w), "--arch", "squeezenet1_1", "--classes", "benign,malignant,normal",
             "--out", str(out), "--export-dicom", "--report", "html,pdf"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        seen: list[str] = []
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            try:
                seen = [n for n in os.listdir(out) if not n.endswith(".part")]
            except FileNotFoundError:
                seen = []
            if seen:
                break
            time.sleep(0.002)
        running = proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    err = err.decode(errors="replace")
    assert running and seen, f"the run ended before any output appeared: {err[-800:]}"
    assert proc.returncode == 3, err[-2000:]
    assert "Traceback" not in err and "cancelled" in err.strip().splitlines()[-1]
    assert not out.exists(), f"left behind: {sorted(os.listdir(out))} (first seen: {seen})"
    assert not log.exists() or log.read_text() == ""  # nothing is logged for a cancelled run
