"""Ctrl-C in the middle of a CLI attack: exit code 3, one line, and no output left behind."""

from __future__ import annotations

import signal
import time

from pydicom.data import get_testdata_file


def test_ctrl_c_during_attack_leaves_nothing(tmp_path, attack_process):
    import torch

    from p2p_desktop.models.classifier import build_architecture

    torch.manual_seed(0)
    w = tmp_path / "w.pth"
    torch.save(build_architecture("squeezenet1_1", 3).state_dict(), w)
    out = tmp_path / "out"
    proc = attack_process(get_testdata_file("examples_rgb_color.dcm"), "--attack", "pgd", "--steps", "10000",
                          "--classifier", w, "--arch", "squeezenet1_1", "--classes", "benign,malignant,normal",
                          "--out", out, "--export-dicom", "--report", "html")
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    last = err.decode(errors="replace").strip().splitlines()[-1]
    assert "cancelled" in last and "Traceback" not in err.decode(errors="replace")
    assert not out.exists()
