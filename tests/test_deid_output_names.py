"""With --deidentify, output file names do not carry the source's (possibly identifying) file name."""

from __future__ import annotations

import json
import shutil

import pydicom
from pydicom.data import get_testdata_file

from p2p_desktop.cli.main import main


def test_deidentified_outputs_have_anonymous_names(tmp_path, capsys):
    import torch

    from p2p_desktop.models.classifier import build_architecture

    torch.manual_seed(0)
    w = tmp_path / "w.pth"
    torch.save(build_architecture("squeezenet1_1", 3).state_dict(), w)
    src_dir = tmp_path / "study"
    src_dir.mkdir()
    src = src_dir / "DOE_JANE.dcm"
    shutil.copy(get_testdata_file("examples_rgb_color.dcm"), src)
    code = main([str(a) for a in ["attack", src, "--attack", "fgsm", "--classifier", w, "--arch", "squeezenet1_1",
                                  "--classes", "benign,malignant,normal", "--input-size", 64, "--out",
                                  tmp_path / "out", "--export-dicom", "--deidentify", "--json"]])
    out = capsys.readouterr()
    assert code == 0, out.err
    data = json.loads(out.out)
    names = [p.name for p in (tmp_path / "out").iterdir()]
    assert names and not [n for n in names if "DOE" in n or "JANE" in n]
    dcm = next(o["path"] for o in data["outputs"] if o["kind"] == "dicom")
    ds = pydicom.dcmread(dcm)
    assert ds.PatientIdentityRemoved == "YES"
    assert "burned" in out.err.lower()  # BurnedInAnnotation absent/unknown in the source: warned
