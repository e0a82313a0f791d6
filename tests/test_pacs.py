"""PACS query/retrieve/send against a real Orthanc (started here on loopback ports, stopped by pid).

What "byte-identical" means below: the retrieved file's dataset (every byte after the File
Meta Information group 0002, which the receiver writes itself) equals the source file's dataset
bytes; the decoded datasets are equal element by element and PixelData is equal byte for byte.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.filereader import _read_file_meta_info, read_preamble

from p2p_desktop.cli.main import main
from tests.orthanc import OUR_AET, free_port, orthanc_server, require_dicomweb, require_orthanc

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    require_orthanc()
    with orthanc_server(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A real ultrasound DICOM (pydicom's examples_rgb_color.dcm) without its dataset trailing
    padding (FFFC,FFFC), which DICOM nodes may drop on storage."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("examples_rgb_color.dcm", download=False))
    if 0xFFFCFFFC in ds:
        del ds[0xFFFCFFFC]
    path = tmp_path_factory.mktemp("source") / "us.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("P2P_DESKTOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    return tmp_path / "home"


@pytest.fixture
def node(home, orthanc) -> str:
    """A configured node 'orthanc', our AE title and storage port as Orthanc knows them."""
    assert cli("pacs", "config", "--ae-title", OUR_AET, "--storage-port", orthanc.storage_port) == 0
    assert cli("pacs", "nodes", "add", "orthanc", "--aet", orthanc.aet, "--host", "127.0.0.1",
               "--port", orthanc.dicom_port) == 0
    return "orthanc"


def cli(*argv) -> int:
    return main([str(a) for a in argv])


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def _dataset_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        read_preamble(fh, False)
        _read_file_meta_info(fh)
        return fh.read()


def _audit(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_nodes_are_kept_in_the_user_settings(home, capsys, cli_error):
    assert cli("pacs", "nodes", "add", "pacs1", "--aet", "PACS1", "--host", "10.0.0.5", "--port", 104) == 0
    assert cli("pacs", "nodes", "add", "viewer", "--aet", "VIEW", "--host", "viewer.local", "--port", 11112) == 0
    capsys.readouterr()
    assert cli("pacs", "nodes", "list", "--json") == 0
    data = _json(capsys)
    assert Path(data["settings"]) == home / "pacs.json" and (home / "pacs.json").is_file()
    assert [(n["name"], n["ae_title"], n["host"], n["port"]) for n in data["nodes"]] == [
        ("pacs1", "PACS1", "10.0.0.5", 104), ("viewer", "VIEW", "viewer.local", 11112)]
    assert data["ae_title"] == "P2P_DESKTOP"
    # refused: duplicate name, bad port, bad AE title, unknown removal, missing TLS file
    for argv in (("add", "pacs1", "--aet", "X", "--host", "h", "--port", 1),
                 ("add", "p2", "--aet", "X", "--host", "h", "--port", 70000),
                 ("add", "p3", "--aet", "A" * 17, "--host", "h", "--port", 104),
                 ("add", "p4", "--aet", "X", "--host", "h", "--port", 104, "--tls-ca", home / "nope.pem"),
                 ("remove", "nope")):
        assert cli("pacs", "nodes", *argv) == 2, argv
        cli_error()
    assert cli("pacs", "nodes", "remove", "pacs1") == 0
    capsys.readouterr()
    assert cli("pacs", "nodes", "list", "--json") == 0
    assert [n["name"] for n in _json(capsys)["nodes"]] == ["viewer"]


def test_send_find_and_echo(node, orthanc, source, capsys, tmp_path):
    assert cli("pacs", "echo", node) == 0
    assert "C-ECHO ok" in capsys.readouterr().out
    assert cli("pacs", "send", node, source, "--json") == 0
    sent = _json(capsys)
    src = pydicom.dcmread(source)
    assert [i["sop_instance_uid"] for i in sent["instances"]] == [src.SOPInstanceUID]
    assert orthanc.find_instance(src.SOPInstanceUID)
    # study level, with every filter
    assert cli("pacs", "find", node, "--patient-id", src.PatientID, "--modality", "US",
               "--study-date", f"{src.StudyDate}-", "--json") == 0
    found = _json(capsys)
    assert [m["StudyInstanceUID"] for m in found["matches"]] == [src.StudyInstanceUID]
    assert found["matches"][0]["PatientID"] == src.PatientID
    # filters that exclude it
    for extra in (("--modality", "CT"), ("--study-date", "19990101"), ("--patient-id", "nobody")):
        assert cli("pacs", "find", node, *extra, "--json") == 0
        assert _json(capsys)["matches"] == [], extra
    # patient and series levels
    assert cli("pacs", "find", node, "--level", "patient", "--json") == 0
    assert src.PatientID in [m["PatientID"] for m in _json(capsys)["matches"]]
    assert cli("pacs", "find", node, "--level", "series", "--study", src.StudyInstanceUID, "--json") == 0
    series = _json(capsys)["matches"]  # derived series of other tests may share the study
    assert (src.SeriesInstanceUID, "US") in [(m["SeriesInstanceUID"], m["Modality"]) for m in series]
    assert {m["StudyInstanceUID"] for m in series} == {src.StudyInstanceUID}
    # an address instead of a name works the same
    assert cli("pacs", "find", orthanc.address, "--ae-title", OUR_AET, "--json") == 0
    assert src.StudyInstanceUID in [m["StudyInstanceUID"] for m in _json(capsys)["matches"]]


@pytest.mark.parametrize("method", ["get", "move"])
def test_retrieve_is_byte_identical(method, node, orthanc, source, capsys, tmp_path):
    assert cli("pacs", "send", node, source) == 0
    src = pydicom.dcmread(source)
    out = tmp_path / "retrieved"
    capsys.readouterr()
    assert cli("pacs", "retrieve", node, "--study", src.StudyInstanceUID, "--out", out, "--method", method,
               "--json") == 0
    data = _json(capsys)
    study_id = orthanc.rest("/tools/lookup", data=src.StudyInstanceUID.encode(), method="POST")[0]["ID"]
    in_study = orthanc.rest(f"/studies/{study_id}/instances")
    files = sorted(out.iterdir())
    assert len(files) == len(in_study)  # every instance of the study (derived ones of other tests too)
    assert sorted(i["path"] for i in data["instances"]) == [str(f) for f in files]
    retrieved = out / f"{src.SOPInstanceUID}.dcm"
    got = pydicom.dcmread(retrieved)
    assert _dataset_bytes(retrieved) == _dataset_bytes(source)          # dataset bytes
    assert got.PixelData == src.PixelData                               # pixel data bytes
    assert got == src                                                   # every element
    assert got.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
    rec = _audit(tmp_path / "audit.jsonl")[-1]
    assert rec["event"] == "pacs-retrieve" and rec["data"]["status"] == "success"
    assert rec["data"]["operation"] == f"retrieve-{method}"
    assert sorted(rec["data"]["sop_instance_uids"]) == sorted(i["sop_instance_uid"] for i in data["instances"])
    assert src.SOPInstanceUID in rec["data"]["sop_instance_uids"]
    assert rec["data"]["node"] == "orthanc" and rec["data"]["node_ae_title"] == orthanc.aet
    assert rec["data"]["ae_title"] == OUR_AET


def test_retrieve_of_an_unknown_study_or_cancelled_leaves_nothing(node, orthanc, source, capsys, tmp_path, cli_error):
    from p2p_desktop.cancel import CancelToken
    from p2p_desktop.errors import Cancelled
    from p2p_desktop.pacs import load_settings, resolve_node, retrieve

    out = tmp_path / "nothing"
    assert cli("pacs", "retrieve", node, "--study", "1.2.3.4.5.6.7", "--out", out) == 2
    assert "C-GET of study 1.2.3.4.5.6.7 failed" in cli_error()  # Orthanc: 0xC000, no reason
    assert not out.exists()
    assert cli("pacs", "send", node, source) == 0
    settings = load_settings()
    token = CancelToken()
    seen = []

    def on_progress(event):  # one p2p_desktop.progress.Progress per instance
        seen.append((event.step, event.total, event.elapsed))
        token.cancel()

    with pytest.raises(Cancelled):
        retrieve(resolve_node(node), pydicom.dcmread(source).StudyInstanceUID, out, method="get",
                 ae_title=settings.ae_title, on_progress=on_progress, cancel=token)
    assert seen and not out.exists()
    assert seen[0][0] <= seen[0][1] and seen[0][2] >= 0.0
    assert _audit(tmp_path / "audit.jsonl")[-1]["data"]["status"] == "cancelled"


def test_attack_sends_the_derived_instance(node, orthanc, source, capsys, tmp_path):
    assert cli("pacs", "send", node, source) == 0
    src = pydicom.dcmread(source)
    capsys.readouterr()
    assert cli("attack", source, "--attack", "fgsm", "--classifier", "demo-squeezenet1_1", "--device", "cpu",
               "--out", tmp_path / "adv", "--export-dicom", "--send-dicom", node, "--json") == 0
    data = _json(capsys)
    exported = next(o["path"] for o in data["outputs"] if o["kind"] == "dicom")
    local = pydicom.dcmread(exported)
    assert data["sent"]["instances"][0]["sop_instance_uid"] == local.SOPInstanceUID
    iid = orthanc.find_instance(local.SOPInstanceUID)
    assert iid, "the derived instance is not in Orthanc"
    tags = orthanc.tags(iid)
    assert tags["PatientID"] == src.PatientID
    assert tags["StudyInstanceUID"] == src.StudyInstanceUID
    assert tags["SeriesInstanceUID"] not in ("", src.SeriesInstanceUID)
    assert tags["SOPInstanceUID"] not in ("", src.SOPInstanceUID)
    assert "DERIVED" in tags["ImageType"].split("\\")
    assert tags["SourceImageSequence"][0]["ReferencedSOPInstanceUID"] == src.SOPInstanceUID
    # what Orthanc holds is what was exported
    stored = pydicom.dcmread(io.BytesIO(orthanc.file(iid)))
    assert stored.PixelData == local.PixelData and stored == local
    events = _audit(tmp_path / "audit.jsonl")
    assert [e["event"] for e in events[-2:]] == ["attack", "pacs-send"]
    assert events[-1]["data"]["sop_instance_uids"] == [local.SOPInstanceUID]
    assert events[-1]["data"]["status"] == "success"


def test_attack_sends_the_deidentified_instance(node, orthanc, source, capsys, tmp_path):
    src = pydicom.dcmread(source)
    assert cli("attack", source, "--attack", "fgsm", "--classifier", "demo-squeezenet1_1", "--device", "cpu",
               "--out", tmp_path / "adv", "--export-dicom", "--deidentify", "--send-dicom", node, "--json") == 0
    data = _json(capsys)
    exported = pydicom.dcmread(next(o["path"] for o in data["outputs"] if o["kind"] == "dicom"))
    assert exported.PatientIdentityRemoved == "YES"
    tags = orthanc.tags(orthanc.find_instance(exported.SOPInstanceUID))
    assert tags["PatientIdentityRemoved"] == "YES"
    assert tags["PatientID"] != src.PatientID and tags["PatientName"] != str(src.PatientName)
    assert tags["StudyInstanceUID"] == exported.StudyInstanceUID != src.StudyInstanceUID
    sent = _audit(tmp_path / "audit.jsonl")[-1]
    assert sent["event"] == "pacs-send" and sent["data"]["sop_instance_uids"] == [exported.SOPInstanceUID]


def test_attack_refuses_send_without_export(node, source, capsys, tmp_path, cli_error):
    out = tmp_path / "adv"
    assert cli("attack", source, "--attack", "fgsm", "--classifier", "demo-squeezenet1_1", "--out", out,
               "--send-dicom", node) == 2
    assert "--export-dicom" in cli_error()
    assert cli("attack", source, "--attack", "fgsm", "--classifier", "demo-squeezenet1_1", "--out", out,
               "--export-dicom", "--send-dicom", "no-such-node") == 2
    assert "unknown node" in cli_error()
    assert not out.exists()


def test_network_errors_are_one_line_and_exit_2(node, orthanc, source, capsys, tmp_path, cli_error):
    # refused association: Orthanc does not know the calling AE title
    assert cli("pacs", "echo", node, "--ae-title", "STRANGER") == 2
    assert "Calling AE title not recognised" in cli_error()
    # wrong called AE title
    assert cli("pacs", "find", f"WRONG_AET@127.0.0.1:{orthanc.dicom_port}", "--ae-title", OUR_AET) == 2
    assert "Called AE title not recognised" in cli_error()
    # unsupported presentation context: a SOP class Orthanc does not accept
    odd = tmp_path / "odd.dcm"
    ds = pydicom.dcmread(source)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.9.9999.1"
    ds.save_as(odd, enforce_file_format=True)
    assert cli("pacs", "send", node, odd) == 2
    err = cli_error()
    assert "presentation context" in err or "does not accept" in err, err
    assert _audit(tmp_path / "audit.jsonl")[-1]["data"]["status"].startswith("failed")
    # a port that accepts TCP but never answers: ACSE timeout, no hang
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        start = time.monotonic()
        assert cli("pacs", "echo", f"X@127.0.0.1:{silent.getsockname()[1]}", "--timeout", "1") == 2
        assert time.monotonic() - start < 10
    assert "ACSE timeout" in cli_error()
    # bad input
    for argv in (("echo", "nosuchnode"), ("echo", "X@host-without-port"), ("retrieve", node, "--study", "abc",
                 "--out", tmp_path / "o"), ("find", node, "--study-date", "May"), ("send", node, tmp_path / "no.dcm"),
                 ("send", node, Path(__file__))):
        assert cli("pacs", *argv) == 2, argv
        cli_error()


def test_a_node_that_stops_answering_is_a_dimse_timeout(home, capsys, cli_error):
    """A real (pynetdicom) SCP that accepts the association, then takes too long over C-ECHO."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Verification

    release = threading.Event()

    def slow_echo(event):
        release.wait(10)
        return 0x0000

    scp = AE(ae_title="SLOW")
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_ECHO, slow_echo)])
    try:
        port = server.server_address[1]
        start = time.monotonic()
        assert cli("pacs", "echo", f"SLOW@127.0.0.1:{port}", "--timeout", "1") == 2
        assert time.monotonic() - start < 8
        err = cli_error()
        assert "no C-ECHO response within 1 s (DIMSE timeout)" in err, err
    finally:
        release.set()
        server.shutdown()


def test_stopped_server(home, tmp_path, capsys, source, cli_error):
    with orthanc_server(tmp_path / "second") as other:
        assert cli("pacs", "echo", other.address, "--ae-title", OUR_AET) == 0
        address = other.address
    capsys.readouterr()
    start = time.monotonic()
    assert cli("pacs", "echo", address, "--ae-title", OUR_AET) == 2
    assert "connection refused" in cli_error()
    assert cli("pacs", "send", address, source, "--ae-title", OUR_AET) == 2
    assert "connection refused" in cli_error()
    assert time.monotonic() - start < 10
    rec = _audit(tmp_path / "audit.jsonl")[-1]
    assert rec["event"] == "pacs-send" and "connection refused" in rec["data"]["status"]
    assert rec["data"]["sop_instance_uids"] == []


def test_audit_log_chain_stays_intact(node, orthanc, source, capsys, tmp_path):
    assert cli("pacs", "send", node, source) == 0
    assert cli("pacs", "retrieve", node, "--study", pydicom.dcmread(source).StudyInstanceUID,
               "--out", tmp_path / "r") == 0
    assert cli("audit", "verify", tmp_path / "audit.jsonl") == 0
    assert [e["event"] for e in _audit(tmp_path / "audit.jsonl")] == ["pacs-send", "pacs-retrieve"]


def test_tls_node(home, tmp_path, capsys, source, cli_error):
    """Orthanc with DICOM TLS (client certificate required): a TLS node works, and a missing
    client certificate or plain TCP against the TLS port is one line, exit 2."""
    from tests.orthanc import make_tls_files

    tls = make_tls_files(tmp_path / "pki")
    with orthanc_server(tmp_path / "tls-orthanc", tls=tls) as server:
        assert cli("pacs", "config", "--ae-title", OUR_AET) == 0
        assert cli("pacs", "nodes", "add", "secure", "--aet", server.aet, "--host", "127.0.0.1", "--port",
                   server.dicom_port, "--tls-cert", tls["client.crt"], "--tls-key", tls["client.key"],
                   "--tls-ca", tls["ca.crt"]) == 0
        assert cli("pacs", "nodes", "add", "no-client-cert", "--aet", server.aet, "--host", "127.0.0.1",
                   "--port", server.dicom_port, "--tls-ca", tls["ca.crt"]) == 0
        capsys.readouterr()
        assert cli("pacs", "send", "secure", source, "--json") == 0
        assert _json(capsys)["instances"][0]["status"] == "success"
        assert cli("pacs", "find", "secure", "--json") == 0
        assert [m["StudyInstanceUID"] for m in _json(capsys)["matches"]] == [pydicom.dcmread(source).StudyInstanceUID]
        start = time.monotonic()
        assert cli("pacs", "echo", "no-client-cert", "--timeout", "3") == 2
        err = cli_error()
        assert "closed the TLS connection" in err and "certificate" in err, err
        assert cli("pacs", "echo", server.address, "--timeout", "3") == 2  # plain TCP to a TLS port
        assert "require TLS" in cli_error()
        assert time.monotonic() - start < 20
    assert json.loads((home / "pacs.json").read_text())["nodes"][0]["tls"]["ca"] == str(tls["ca.crt"])


def test_dicomweb_node(home, orthanc, source, capsys, tmp_path, cli_error):
    """The same commands against Orthanc's DICOMweb API: STOW-RS, QIDO-RS, WADO-RS. WADO-RS
    instances are re-encoded by pydicom, so datasets and pixel data are compared, not bytes."""
    url = require_dicomweb(orthanc)
    src = pydicom.dcmread(source)
    assert cli("pacs", "nodes", "add", "web", "--url", url) == 0
    assert cli("pacs", "echo", "web") == 0
    capsys.readouterr()
    assert cli("pacs", "send", "web", source, "--json") == 0
    assert _json(capsys)["instances"][0]["status"] == "success"
    assert orthanc.find_instance(src.SOPInstanceUID)
    assert cli("pacs", "find", "web", "--patient-id", src.PatientID, "--modality", "US", "--json") == 0
    found = _json(capsys)["matches"]
    assert [(m["StudyInstanceUID"], m["PatientID"]) for m in found] == [(src.StudyInstanceUID, src.PatientID)]
    assert cli("pacs", "find", "web", "--modality", "CT", "--json") == 0
    assert _json(capsys)["matches"] == []
    assert cli("pacs", "find", "web", "--level", "series", "--study", src.StudyInstanceUID, "--json") == 0
    series = _json(capsys)["matches"]  # derived series from earlier tests may share the study
    assert src.SeriesInstanceUID in [m["SeriesInstanceUID"] for m in series]
    assert {m["StudyInstanceUID"] for m in series} == {src.StudyInstanceUID}
    out = tmp_path / "wado"
    assert cli("pacs", "retrieve", url, "--study", src.StudyInstanceUID, "--out", out, "--json") == 0
    data = _json(capsys)
    assert sorted(f.name for f in out.iterdir()) == sorted(f"{i['sop_instance_uid']}.dcm" for i in data["instances"])
    assert len(data["instances"]) == len(series)  # one instance per series here
    got = pydicom.dcmread(out / f"{src.SOPInstanceUID}.dcm")
    assert got.PixelData == src.PixelData and got == src
    assert data["operation"] == "retrieve-wado"
    events = _audit(tmp_path / "audit.jsonl")
    assert [(e["event"], e["data"]["status"], e["data"]["url"]) for e in events] == [
        ("pacs-send", "success", url), ("pacs-retrieve", "success", url)]
    # errors: nothing listening, and a URL that is not a DICOMweb root
    assert cli("pacs", "echo", f"http://127.0.0.1:{free_port()}/dicom-web") == 2
    assert "connection refused" in cli_error()
    assert cli("pacs", "find", f"http://127.0.0.1:{orthanc.http_port}/not-dicom-web") == 2
    assert "HTTP 404" in cli_error()
    assert cli("pacs", "nodes", "add", "bad", "--url", "ftp://x") == 2
    cli_error()
    assert cli("pacs", "nodes", "add", "both", "--url", url, "--aet", "X") == 2
    cli_error()
