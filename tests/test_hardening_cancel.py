"""Ctrl-C in the middle of a CLI attack: exit code 3, one line, and no output left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from pydicom.data import get_testdata_file


def test_ctrl_c_during_attack_leaves_nothing(tmp_path):
    import torch

    from p2p_desktop.models.classifier import build_architecture

    torch.manual_seed(0)
    w = tmp_path / "w.pth"
    torch.save(build_architecture("squeezenet1_1", 3).state_dict(), w)
    out = tmp_path / "out"
    env = {**os.environ, "P2P_PROGRESS": "1", "P2P_DESKTOP_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2p_desktop", "attack", get_testdata_file("examples_rgb_color.dcm"), "--attack",
         "pgd", "--steps", "10000", "--classifier", str(w), "--arch", "squeezenet1_1", "--classes",
         "benign,malignant,normal", "--out", str(out), "--export-dicom", "--report", "html"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    # wait until the attack is iterating (the progress bar on stderr shows steps)
    seen = b""
    deadline = time.time() + 240
    while time.time() < deadline and b"pgd:" not in seen:
        seen += os.read(proc.stderr.fileno(), 4096)
    assert b"pgd:" in seen, seen[-500:]
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    last = err.decode(errors="replace").strip().splitlines()[-1]
    assert "cancelled" in last and "Traceback" not in err.decode(errors="replace")
    assert not out.exists()
