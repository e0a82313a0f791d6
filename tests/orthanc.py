"""A real Orthanc DICOM server for the PACS tests: loopback ports, a temporary storage folder
and a configuration written here; stopped by its process id.

``orthanc_server(tmp_dir)`` is a context manager; the test modules wrap it in a fixture.
Orthanc refuses unknown calling AE titles (all ``DicomAlwaysAllow*`` off) and checks the
called AE title, so the tests can provoke a rejected association.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ORTHANC_AET = "ORTHANC_TEST"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"  # Debian package orthanc-dicomweb
WEBVIEWER_PLUGIN = "/usr/share/orthanc/plugins/libOrthancWebViewer.so"  # Debian package orthanc-webviewer
OUR_AET = "P2P_TEST"


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
                                             if os.access(p, os.X_OK)), None)


def require_orthanc() -> str:
    """Orthanc's binary; skip without it, except in CI (``$P2P_REQUIRE_ORTHANC`` set, as
    ``.ci/run`` does), where a missing server means the install script failed: fail loudly."""
    found = orthanc_binary()
    if not found:
        why = "Orthanc is not installed (Debian package 'orthanc'; scripts/install-system-deps.sh installs it)"
        if os.environ.get("P2P_REQUIRE_ORTHANC"):
            pytest.fail(why + " but $P2P_REQUIRE_ORTHANC is set", pytrace=False)
        pytest.skip(why)
    return found


def require_dicomweb(server: Orthanc) -> str:
    """The server's DICOMweb root; skip (fail under $P2P_REQUIRE_ORTHANC) without the plugin."""
    if server.web_url is None:
        why = "Orthanc's DICOMweb plugin is not installed (Debian package 'orthanc-dicomweb')"
        if os.environ.get("P2P_REQUIRE_ORTHANC"):
            pytest.fail(why + " but $P2P_REQUIRE_ORTHANC is set", pytrace=False)
        pytest.skip(why)
    return server.web_url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    aet: str
    dicom_port: int
    http_port: int
    storage_port: int  # where Orthanc sends C-MOVE results for OUR_AET
    pid: int
    log: Path
    web_url: str | None = None  # DICOMweb root when the plugin is installed

    @property
    def address(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def rest(self, path: str, data: bytes | None = None, method: str | None = None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=20) as rsp:
            body = rsp.read()
        return json.loads(body) if body else None

    def instances(self) -> list[str]:
        return self.rest("/instances")

    def tags(self, instance_id: str) -> dict:
        return self.rest(f"/instances/{instance_id}/tags?simplify")

    def file(self, instance_id: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/instances/{instance_id}/file",
                                    timeout=20) as rsp:
            return rsp.read()

    def find_instance(self, sop_uid: str) -> str | None:
        found = self.rest("/tools/lookup", data=sop_uid.encode(), method="POST")
        return next((f["ID"] for f in found if f["Type"] == "Instance"), None)

    def clear(self) -> None:
        for pid in self.rest("/patients"):
            self.rest(f"/patients/{pid}", method="DELETE")


def make_tls_files(folder: Path) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    f = {k: folder / k for k in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt", "client.key",
                                 "client.csr", "client.crt", "ext.cnf")}
    f["ext.cnf"].write_text("subjectAltName=IP:127.0.0.1\n")

    def run(*args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f["ca.key"], "-out", f["ca.crt"], "-days", 2,
        "-subj", "/CN=p2p-desktop test CA")
    for who in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f[f"{who}.key"], "-out", f[f"{who}.csr"],
            "-subj", f"/CN={'127.0.0.1' if who == 'server' else OUR_AET}")
        run("x509", "-req", "-in", f[f"{who}.csr"], "-CA", f["ca.crt"], "-CAkey", f["ca.key"], "-CAcreateserial",
            "-out", f[f"{who}.crt"], "-days", 2, "-extfile", f["ext.cnf"])
    return f


@contextmanager
def orthanc_server(folder: Path, tls: dict[str, Path] | None = None, extra_plugins: tuple[str, ...] = ()):
    binary = require_orthanc()
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port, storage_port = free_port(), free_port(), free_port()
    config = {
        "Name": "p2p-desktop-test",
        "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "StorageCompression": False, "Plugins": [],
        "HttpServerEnabled": True, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "SslEnabled": False,
        "DicomServerEnabled": True, "DicomAet": ORTHANC_AET, "DicomPort": dicom_port,
        "DicomCheckCalledAet": True, "DicomCheckModalityHost": False,
        "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False, "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowFindWorklist": False, "DicomAlwaysAllowGet": False, "DicomAlwaysAllowMove": False,
        "DicomModalities": {"p2p": {"AET": OUR_AET, "Host": "127.0.0.1", "Port": storage_port,
                                    "AllowEcho": True, "AllowFind": True, "AllowGet": True, "AllowMove": True,
                                    "AllowStore": True}},
        "UnknownSopClassAccepted": False, "DicomScuTimeout": 10, "DicomAssociationCloseDelay": 0,
        "SaveJobs": False, "OverwriteInstances": True, "HttpTimeout": 10,
        "StableAge": 1, "KeepAlive": False,
    }
    web = os.path.isfile(DICOMWEB_PLUGIN)
    if web:
        config["Plugins"] = [DICOMWEB_PLUGIN]
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": False}
    config["Plugins"] = [*config["Plugins"], *extra_plugins]
    if "WebViewer" not in config and WEBVIEWER_PLUGIN in extra_plugins:
        config["WebViewer"] = {"CachePath": str(folder / "webviewer-cache"), "CacheSize": 10, "Threads": 2}
    if tls is not None:
        config.update({"DicomTlsEnabled": True, "DicomTlsCertificate": str(tls["server.crt"]),
                       "DicomTlsPrivateKey": str(tls["server.key"]),
                       "DicomTlsTrustedCertificates": str(tls["ca.crt"]),
                       "DicomTlsRemoteCertificateRequired": True})
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=2))
    log = folder / "orthanc.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([binary, str(cfg)], stdout=fh, stderr=subprocess.STDOUT, cwd=folder,
                                start_new_session=True)
    server = Orthanc(ORTHANC_AET, dicom_port, http_port, storage_port, proc.pid, log,
                     f"http://127.0.0.1:{http_port}/dicom-web" if web else None)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                server.rest("/system")
                break
            except (urllib.error.URLError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not answer within 30 s: {log.read_text()[-2000:]}") from exc
                time.sleep(0.1)
        yield server
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
