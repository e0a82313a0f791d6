"""Study input: DICOM and image files, BUSI-layout folders.

``load_study(path, frame=None)`` is the one entry point for a file; ``scan_folder`` and
``load_dataset`` walk folders. Every failure is an :class:`~p2p_desktop.errors.InputError`
with one line naming the file.

Readers: :mod:`.loader` (the dispatcher) over :mod:`.dicom` and :mod:`.images`, which share
:mod:`.files` (load errors, file checks, sniffing) and never import each other; :mod:`.dataset`
walks folders. Writers: :mod:`.outputs` (the one atomic writer, ``OutputSet``) and :mod:`.encode`
(PNG/NPY bytes). The readers import no writer.
"""

from p2p_desktop.io.dataset import (
    DatasetItem,
    FolderScan,
    ScanEntry,
    SkippedFile,
    load_dataset,
    scan_folder,
)
from p2p_desktop.io.loader import StudyProbe, detect_kind, load_study, n_frames, probe_study
from p2p_desktop.io.study import Study, StudyMetadata

__all__ = [
    "Study",
    "StudyMetadata",
    "StudyProbe",
    "load_study",
    "probe_study",
    "n_frames",
    "detect_kind",
    "scan_folder",
    "load_dataset",
    "FolderScan",
    "ScanEntry",
    "SkippedFile",
    "DatasetItem",
]
