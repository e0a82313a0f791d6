"""``pacs send`` names what a path is when it is not a file it can send: a FIFO, a folder, a
device or nothing at all; one line, exit 2, before any connection (nothing listens here)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from p2p_desktop.cli.main import main
from tests.orthanc import free_port

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("P2P_DESKTOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    return tmp_path / "home"


def test_send_says_what_a_path_is(home, tmp_path, cli_error):
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    folder = tmp_path / "study"
    folder.mkdir()
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        link = tmp_path / "dangling.dcm"
        link.symlink_to(tmp_path / "gone.dcm")
        nodes = (f"X@127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}/dicom-web")
        for path, said in ((fifo, "is a FIFO (named pipe), not a file"), (folder, "is a folder, not a file"),
                           (Path("/dev/null"), "is a character device, not a file"),
                           (sock_path, "is a socket, not a file"), (tmp_path / "none.dcm", "no such file"),
                           (link, "is a broken symbolic link")):
            for node in nodes:
                assert main(["pacs", "send", node, str(path)]) == 2, path
                err = cli_error()
                assert f"{path}: {said}" in err, err
    assert not (tmp_path / "audit.jsonl").exists()  # refused before any transfer
