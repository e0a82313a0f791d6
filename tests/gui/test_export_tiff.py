"""The 16-bit TIFF export: one row of the export-format table (jobs/formats.py) plus its writer
(export/tiff.py). From that row alone it is an ``attack`` option (``--export-tiff``), a GUI
export action (File menu, tool bars) and a file the run writes, audited and repeated by ``rerun``."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tifffile  # noqa: E402

from tests.test_provenance import cli  # noqa: E402


@pytest.fixture(autouse=True)
def audit_log(tmp_path, monkeypatch):
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(log))
    return log


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _check_tiff(path: Path, adversarial: np.ndarray) -> None:
    data = tifffile.imread(path)
    assert data.dtype == np.uint16
    expected = adversarial[..., 0] if adversarial.shape[2] == 1 else adversarial
    assert data.shape == expected.shape
    np.testing.assert_array_equal(data, np.round(np.clip(expected, 0, 1) * 65535).astype(np.uint16))


def test_the_row_is_a_cli_option(capsys):
    from p2p_desktop.jobs.formats import FORMATS

    assert FORMATS["tiff"].cli_flag == "--export-tiff"
    with pytest.raises(SystemExit):
        cli("attack", "--help")
    assert "--export-tiff" in capsys.readouterr().out


def test_cli_attack_writes_the_tiff_and_rerun_repeats_it(tmp_path, model_card, pydicom_file, capsys, audit_log):
    import shutil

    from p2p_desktop.io import load_study

    source = tmp_path / "in" / "us.dcm"
    source.parent.mkdir()
    shutil.copy(pydicom_file("examples_rgb_color.dcm"), source)
    assert cli("attack", source, "--attack", "fgsm", "--classifier", model_card, "--out", tmp_path / "a",
               "--device", "cpu", "--export-tiff", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    kinds = [o["kind"] for o in summary["outputs"]]
    assert kinds[:3] == ["png", "perturbation", "tiff"]  # table order: before the provenance that lists it
    tiff = Path(next(o["path"] for o in summary["outputs"] if o["kind"] == "tiff"))
    assert tiff.name == "us_fgsm_adv.tif"
    png = load_study(Path(next(o["path"] for o in summary["outputs"] if o["kind"] == "png")))
    _check_tiff(tiff, png.image)  # the same image as the PNG, at 16 bits
    provenance = json.loads(Path(next(o["path"] for o in summary["outputs"] if o["kind"] == "provenance"))
                            .read_text())
    assert provenance["options"]["export_tiff"] is True
    assert "tiff" in [o["kind"] for o in _records(audit_log)[-1]["data"]["outputs"]]
    assert cli("rerun", tiff.with_name("us_fgsm_provenance.json"), "--out", tmp_path / "b", "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert [o["kind"] for o in again["outputs"]] == kinds


def test_gui_has_the_action_and_exports_the_tiff(qtbot, window, tmp_path, audit_log, open_study, run_attack,
                                                  ultrasound_file):
    from p2p_desktop.audit import verify_log

    action = window.export_actions["tiff"]
    assert action is window.export_tiff_action and action.text() == "Export TIFF…"
    file_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&File")
    assert action in file_menu.actions() and action in window.results.toolbar.actions()
    assert not action.isEnabled()  # no run shown yet
    open_study([ultrasound_file()])
    entry = run_attack("fgsm")
    assert action.isEnabled()
    with qtbot.waitSignal(window.export_runner.finished, timeout=30000):
        assert window.export("tiff", str(tmp_path / "out"))
    assert window.errors == [], window.errors
    assert [Path(p).suffix for p in window.last_export] == [".tif"]
    _check_tiff(Path(window.last_export[0]), entry.result.adversarial)
    record = _records(audit_log)[-1]
    assert record["event"] == "export" and record["data"]["what"] == "tiff"
    assert record["data"]["outputs"][0]["path"] == window.last_export[0]
    assert verify_log(audit_log).ok
