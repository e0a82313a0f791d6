"""Offline proof: a whole demo P2P run with DICOM and report export makes zero network attempts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "resources" / "models" / "demo" / "card.json"
SAMPLE = REPO / "resources" / "samples" / "dicom" / "benign" / "benign_9000000.dcm"

CHILD = textwrap.dedent("""
    import json, socket, sys
    attempts = []

    def refuse(kind):
        def inner(*args, **kwargs):
            attempts.append([kind, repr(args[1:] if kind.startswith("socket") else args)[:200]])
            raise OSError("network access refused by the offline test")
        return inner

    socket.socket.connect = refuse("socket.connect")
    socket.socket.connect_ex = refuse("socket.connect_ex")
    socket.create_connection = refuse("create_connection")
    socket.getaddrinfo = refuse("getaddrinfo")
    from p2p_desktop.cli.main import main
    code = main(sys.argv[1:])
    sys.stdout.flush()
    print("@@OFFLINE@@" + json.dumps({"code": code, "attempts": attempts}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not DEMO.exists() or not SAMPLE.exists(), reason="demo bundle not present")
def test_demo_p2p_run_with_reports_never_touches_the_network(tmp_path):
    out = tmp_path / "out"
    argv = ["attack", str(SAMPLE), "--attack", "p2p", "--backbone", "demo", "--classifier", "demo-squeezenet1_1",
            "--steps", "4", "--out", str(out), "--export-dicom", "--report", "html,pdf", "--json", "--device", "cpu"]
    env_home = tmp_path / "home"
    proc = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "P2P_DESKTOP_HOME": str(env_home),
                               "P2P_DESKTOP_AUDIT_LOG": str(env_home / "audit.jsonl")})
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("@@OFFLINE@@"))
    report = json.loads(line[len("@@OFFLINE@@"):])
    assert report["code"] == 0, proc.stderr[-3000:]
    assert report["attempts"] == []
    summary = json.loads(proc.stdout[: proc.stdout.index("@@OFFLINE@@")])
    kinds = {o["kind"] for o in summary["outputs"]}
    assert {"png", "perturbation", "dicom", "report-html", "report-pdf", "provenance"} <= kinds
