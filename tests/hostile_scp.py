"""A hostile DICOM node for the tests: a real pynetdicom C-GET SCP on loopback that serves one
study of one very large instance (issue 28 item 3: a PACS node can exhaust our memory).

    python -m tests.hostile_scp PORT_FILE SIZE_BYTES FOLDER [MOVE_PORT]

writes a one-instance study of about ``SIZE_BYTES`` (8-bit frames of 1024 x 1024, PixelData
written sparse, so making it costs no time), listens on 127.0.0.1 (port written to
``PORT_FILE`` once it is listening, with the study and instance UIDs) and serves C-GET (and
C-MOVE to whichever AE title asks, at 127.0.0.1:``MOVE_PORT``) until killed. The instance is
sent from its file in chunks (pynetdicom's ``STORE_SEND_CHUNKED_DATASET``), so the node itself
stays small whatever the size.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

AE_TITLE = "HOSTILE"
SIDE = 1024


def make_instance(folder: Path, size: int) -> tuple[Path, str, str]:
    """A ``size``-byte-ish multi-frame 8-bit DICOM file; its path, study and instance UIDs."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ImplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    frames = max(1, size // (SIDE * SIDE))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian  # what a requestor accepts first
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "HOSTILE", "Hostile^Node", "US"
    ds.Rows = ds.Columns = SIDE
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    path = folder / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    n = frames * SIDE * SIDE
    with open(path, "r+b") as fh:  # (7FE0,0010), implicit VR, then n zero bytes, sparse
        fh.seek(0, 2)
        fh.write(struct.pack("<HHL", 0x7FE0, 0x0010, n))
        fh.truncate(fh.tell() + n)
    return path, str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)


def serve(port_file: Path, size: int, folder: Path, move_port: int = 0) -> None:
    """Serve C-GET and C-MOVE of the one study until killed."""
    import logging

    from pydicom import dcmread
    from pynetdicom import AE, StoragePresentationContexts, _config, evt
    from pynetdicom import association as _association
    from pynetdicom.sop_class import (
        StudyRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
    )

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    path, study_uid, sop_uid = make_instance(folder, size)
    header = dcmread(path, stop_before_pixels=True)
    _config.STORE_SEND_CHUNKED_DATASET = True
    original = _association.Association.send_c_store

    def send_c_store(self, dataset, *args, **kwargs):  # the C-GET SCP yields Datasets only
        return original(self, getattr(dataset, "_hostile_path", dataset), *args, **kwargs)

    _association.Association.send_c_store = send_c_store

    def on_get(event):
        yield 1
        ds = header.copy()
        ds._hostile_path = path
        yield 0xFF00, ds

    def on_move(event):
        yield "127.0.0.1", move_port
        yield 1
        ds = header.copy()
        ds._hostile_path = path
        yield 0xFF00, ds

    ae = AE(ae_title=AE_TITLE)
    ae.maximum_pdu_size = 0  # as large as the requestor takes
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
    ae.add_requested_context(header.file_meta.MediaStorageSOPClassUID, header.file_meta.TransferSyntaxUID)
    for cx in StoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, scp_role=True, scu_role=True)
    handlers = [(evt.EVT_C_GET, on_get), (evt.EVT_C_MOVE, on_move)]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    port_file.write_text(json.dumps({"port": server.server_address[1], "study": study_uid, "sop": sop_uid,
                                     "size": path.stat().st_size, "ae_title": AE_TITLE}))
    import threading

    threading.Event().wait()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
