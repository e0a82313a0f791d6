"""A DICOMweb node that redirects to another address: echo, find, retrieve and send refuse the
redirect (one line, exit 2; sends and retrievals audited as failed), and the other address
receives nothing. Two real HTTP servers on loopback (http.server in threads), no mocks."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest

from p2p_desktop.cli.main import main

pytestmark = pytest.mark.timeout(60)

STUDY = "1.2.826.0.1.3680043.8.498.1"


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                return body
            body += handler.rfile.read(size)
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


class _Server:
    """A loopback HTTP server in a thread; ``answer(handler, method, body)`` answers each request,
    and every request is recorded in ``seen`` as (method, path, body length)."""

    def __init__(self, answer) -> None:
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _any(self, method: str) -> None:
                body = _read_body(self) if method in ("POST", "PUT") else b""
                seen.append((method, self.path, len(body)))
                answer(self, method, body)

            def do_GET(self) -> None:
                self._any("GET")

            def do_POST(self) -> None:
                self._any("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _json_answer(handler, payload, status: int = 200) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/dicom+json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _innocent(handler, method, body) -> None:
    """The address the user never named: answers as a DICOMweb node would."""
    if method == "POST":
        _json_answer(handler, {})
    else:
        _json_answer(handler, [])


def _hostile(code: int, target: str):
    """Answers QIDO-RS for instances itself (so a retrieval reaches WADO-RS) and redirects
    everything else, with ``code``, to the same path on ``target``."""
    def answer(handler, method, body) -> None:
        if method == "GET" and "/instances" in handler.path:
            _json_answer(handler, [{"00080018": {"vr": "UI", "Value": ["1.2.3.4"]},
                                    "0020000E": {"vr": "UI", "Value": ["1.2.3"]}}])
            return
        handler.send_response(code)
        handler.send_header("Location", target + handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("P2P_DESKTOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    return tmp_path / "home"


@pytest.fixture
def source(tmp_path) -> Path:
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("examples_rgb_color.dcm", download=False))
    path = tmp_path / "us.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _audit(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("code", [302, 307])
def test_a_redirect_to_another_address_is_not_followed(code, home, source, tmp_path, cli_error):
    with _Server(_innocent) as other, _Server(_hostile(code, other.url)) as node:
        url = f"{node.url}/dicom-web"
        assert main(["pacs", "nodes", "add", "web", "--url", url]) == 0
        for argv in (["echo", "web"], ["find", "web"], ["find", url, "--level", "series", "--study", STUDY],
                     ["retrieve", "web", "--study", STUDY, "--out", str(tmp_path / "out")],
                     ["send", "web", str(source)]):
            assert main(["pacs", *argv]) == 2, argv
            err = cli_error()
            assert "redirect" in err and other.url in err and "not followed" in err, err
            assert "/dicom-web" not in err.split(other.url, 1)[1], err  # the origin only, no path or query
        assert other.seen == []
        assert [m for m, _p, _n in node.seen].count("POST") == 1  # the send reached the named node only
    assert not (tmp_path / "out").exists()
    events = _audit(tmp_path / "audit.jsonl")
    assert [e["event"] for e in events] == ["pacs-retrieve", "pacs-send"]
    for e in events:
        assert e["data"]["status"].startswith("failed: ") and "redirect" in e["data"]["status"], e
        assert e["data"]["url"] == url


def test_a_redirect_on_the_same_address_is_followed(home, cli_error):
    """A redirect within the node's own origin (scheme, host and port) is still followed."""
    def answer(handler, method, body) -> None:
        if handler.path.startswith("/old/"):
            handler.send_response(307)
            handler.send_header("Location", handler.path.replace("/old/", "/new/", 1))
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        else:
            _json_answer(handler, [])

    with _Server(answer) as node:
        assert main(["pacs", "echo", f"{node.url}/old/dicom-web"]) == 0
        assert [p.split("?")[0] for _m, p, _n in node.seen] == ["/old/dicom-web/studies", "/new/dicom-web/studies"]


def test_a_redirect_to_another_port_or_scheme_of_the_same_host_is_refused(home, cli_error):
    with _Server(_innocent) as other:
        for target in (other.url, other.url.replace("127.0.0.1", "localhost"),
                       f"https://127.0.0.1:{other.port}"):
            with _Server(_hostile(302, target)) as node:
                assert main(["pacs", "echo", f"{node.url}/dicom-web"]) == 2
                assert "not followed" in cli_error()
        assert other.seen == []
