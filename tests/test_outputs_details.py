"""The output writer's smaller promises: file modes, in-place replacement, exact error lines,
held-back signals while a file is linked, the name limit, and batch folder names."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import threading
from pathlib import Path

import pytest

from p2p_desktop.errors import OutputError
from p2p_desktop.io import outputs
from p2p_desktop.io.outputs import (
    OutputSet,
    atomic_replace_bytes,
    atomic_replace_json,
    atomic_replace_text,
    atomic_write_bytes,
    check_output_dir,
    safe_name,
    unique_path,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux's /proc and POSIX modes")


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it after."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(saved)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".p2p-"))


# -- modes -----------------------------------------------------------------------------------------
@linux_only
@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_outputs_follow_the_umask_and_private_ones_are_0600(tmp_path, umask, mask, expected):
    umask(mask)
    assert outputs._umask() == mask
    assert _mode(atomic_write_bytes(tmp_path / "a.png", b"a")) == expected
    assert _mode(atomic_write_bytes(tmp_path / "p.dcm", b"p", private=True)) == 0o600
    assert _mode(atomic_replace_bytes(tmp_path / "r.json", b"r")) == expected
    assert _mode(atomic_replace_bytes(tmp_path / "rp.json", b"r", private=True)) == 0o600
    assert _mode(atomic_replace_text(tmp_path / "t.txt", "t", private=True)) == 0o600
    assert _mode(atomic_replace_text(tmp_path / "u.txt", "u")) == expected
    assert _mode(atomic_replace_json(tmp_path / "j.json", {}, private=True)) == 0o600
    assert _mode(atomic_replace_json(tmp_path / "k.json", {})) == expected
    with OutputSet(tmp_path / "set") as outs:
        plain = outs.write_bytes("x.png", b"x", kind="png")
        private = outs.write_bytes("x.dcm", b"x", kind="dicom", private=True)
    assert (_mode(plain), _mode(private)) == (expected, 0o600)


@linux_only
def test_the_umask_is_read_without_being_changed(umask, monkeypatch):
    """Changing the umask to read it would race with other threads' file creation."""
    umask(0o027)

    def no_change(_mask):
        raise AssertionError("the umask was changed to read it")

    monkeypatch.setattr(outputs.os, "umask", no_change)
    assert outputs._umask() == 0o027


def test_without_proc_the_umask_is_read_and_put_back(umask, monkeypatch):
    """Where /proc/self/status cannot be read (other systems), the umask is set and restored."""
    umask(0o027)

    def no_proc(*args, **kwargs):
        raise OSError(2, "No such file or directory")

    monkeypatch.setattr(outputs, "open", no_proc, raising=False)
    assert outputs._umask() == 0o027
    monkeypatch.undo()
    assert outputs._umask() == 0o027  # put back


# -- content written by a function -------------------------------------------------------------
def test_a_writer_function_gets_the_open_file(tmp_path):
    path = atomic_write_bytes(tmp_path / "w.bin", lambda fh: fh.write(b"streamed"))
    assert path.read_bytes() == b"streamed"
    again = atomic_replace_bytes(tmp_path / "w.bin", lambda fh: fh.write(b"replaced"))
    assert again == tmp_path / "w.bin" and again.read_bytes() == b"replaced"
    assert _leftovers(tmp_path) == []


# -- replacing in place --------------------------------------------------------------------------
def test_replace_writes_over_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state" / "cache.bin"
    assert atomic_replace_bytes(target, b"old") == target  # the folder is created
    assert atomic_replace_bytes(str(target), b"new") == target
    assert target.read_bytes() == b"new"
    assert _leftovers(target.parent) == [] and sorted(p.name for p in target.parent.iterdir()) == ["cache.bin"]


def test_replace_text_is_utf8_and_json_is_indented_with_a_final_newline(tmp_path):
    t = atomic_replace_text(tmp_path / "t.txt", "échographie ✓")
    assert t.read_bytes() == "échographie ✓".encode()
    j = atomic_replace_json(tmp_path / "j.json", {"b": [1, 2], "a": "é"})
    assert j.read_text(encoding="utf-8") == '{\n  "b": [\n    1,\n    2\n  ],\n  "a": "\\u00e9"\n}\n'
    flat = atomic_replace_json(tmp_path / "f.json", {"b": 1, "a": 2}, indent=None)
    assert flat.read_bytes() == b'{"b": 1, "a": 2}\n'
    assert json.loads(j.read_text(encoding="utf-8")) == {"b": [1, 2], "a": "é"}


def test_a_failed_replace_is_one_line_keeps_the_old_entry_and_leaves_no_temporary(tmp_path):
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "inside").write_bytes(b"keep")
    with pytest.raises(OutputError) as info:
        atomic_replace_bytes(folder, b"new")
    assert str(info.value) == f"cannot write {folder}: Is a directory"
    assert (folder / "inside").read_bytes() == b"keep"
    assert _leftovers(tmp_path) == []


# -- exact error lines ---------------------------------------------------------------------------
@linux_only
def test_a_folder_nobody_may_write_in_is_one_line(tmp_path):
    """/proc exists and refuses new files, even to root (CI runs as root)."""
    with pytest.raises(OutputError) as info:
        atomic_write_bytes(Path("/proc") / "p2p-desktop-test.png", b"x")
    assert str(info.value) in ("cannot write in /proc: Permission denied",
                               "cannot write in /proc: No such file or directory")


def test_a_name_the_file_system_cannot_hold_is_one_line_and_leaves_nothing(tmp_path):
    target = tmp_path / ("n" * 300 + ".png")
    with pytest.raises(OutputError) as info:
        atomic_write_bytes(target, b"x")
    assert str(info.value) == f"cannot write {target}: File name too long"
    assert list(tmp_path.iterdir()) == []


def test_unresolvable_folders_are_named_in_one_line(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(OutputError) as info:
        check_output_dir(loop / "out")
    assert str(info.value).startswith(f"output folder {loop / 'out'} cannot be resolved (")
    with pytest.raises(OutputError) as info:
        check_output_dir(tmp_path / "out", inputs=[loop / "study.dcm"])
    assert str(info.value).startswith(f"input {loop / 'study.dcm'} cannot be resolved (")


# -- the name limit -------------------------------------------------------------------------------
def test_unique_path_tries_one_hundred_thousand_names_and_then_says_so(tmp_path, monkeypatch):
    base = tmp_path / "x.png"
    monkeypatch.setattr(outputs, "_taken", lambda p: p.name != "x-100000.png")
    assert unique_path(base) == tmp_path / "x-100000.png"
    monkeypatch.setattr(outputs, "_taken", lambda p: p.name != "x-100001.png")
    with pytest.raises(OutputError) as info:
        unique_path(base)
    assert str(info.value) == f"no free name for x.png in {tmp_path}"


# -- signals held back while a file is linked and recorded -----------------------------------------
@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_ctrl_c_and_sigterm_wait_while_a_file_is_linked_on_the_main_thread(tmp_path):
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    during = []
    atomic_write_bytes(tmp_path / "a.png", b"a", on_created=lambda p: during.append(
        signal.pthread_sigmask(signal.SIG_BLOCK, [])))
    assert {signal.SIGINT, signal.SIGTERM} <= during[0]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before  # restored


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_a_worker_threads_signal_mask_is_left_alone(tmp_path):
    """Signals go to the main thread; a worker's own mask is neither changed nor reset."""
    seen = {}

    def work():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        atomic_write_bytes(tmp_path / "w.png", b"w", on_created=lambda p: seen.update(
            during=signal.pthread_sigmask(signal.SIG_BLOCK, [])))
        seen["after"] = signal.pthread_sigmask(signal.SIG_BLOCK, [])

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert signal.SIGINT not in seen["during"] and signal.SIGTERM not in seen["during"]
    assert seen["after"] == {signal.SIGUSR1}


# -- batch folder names ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, expected", [
    ("demo-densenet121", "demo-densenet121"),
    ("DenseNet-121_v2.0", "DenseNet-121_v2.0"),
    ("Xray.", "Xray"),
    ("my model/v2 (final)", "my_model_v2_final"),
    ("../../etc", "etc"),
    ("..hidden.", "hidden"),
    ("résumé", "r_sum"),
    ("***", "model"),
    ("", "model"),
    ("...", "model"),
])
def test_safe_name_gives_one_path_component(name, expected):
    assert safe_name(name) == expected
    assert "/" not in safe_name(name) and safe_name(name) not in ("", ".", "..")
