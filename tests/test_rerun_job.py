"""The rerun job in-process (:func:`p2p_desktop.jobs.rerun.rerun`): its progress, cancellation
and audit log arguments, the recorded device and precision, and the backbone's weight check and name.

``test_rerun_settings.py`` pins what a rerun repeats (seed, frame, settings, label, exports)
through the CLI; this file pins what the job does with what its caller gives it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_provenance import cli
from tests.test_rerun_settings import _provenance

pytestmark = pytest.mark.usefixtures("audit_log")


@pytest.fixture
def recorded(pydicom_copy, model_card, tmp_path, capsys) -> dict:
    """A PGD run (3 steps, seed 5, frame 1) of pydicom's cine, written with its provenance."""
    cine = pydicom_copy("examples_ybr_color.dcm", "cine.dcm")
    assert cli("attack", cine, "--attack", "pgd", "--steps", "3", "--seed", "5", "--frame", "1", "--eps", "0.02",
               "--classifier", model_card, "--out", tmp_path / "a", "--device", "cpu", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    return json.loads(_provenance(summary).read_text())


def test_the_job_reports_each_step_to_its_caller(recorded, tmp_path):
    from p2p_desktop.jobs.rerun import rerun

    events = []
    summary, result = rerun(recorded, tmp_path / "b", on_step=events.append)
    assert summary["reproduced"] is True and result.seed == 5
    assert [e.step for e in events] == [1, 2, 3] and {e.total for e in events} == {3}


def test_a_cancelled_rerun_raises_and_writes_nothing(recorded, tmp_path, audit_log):
    from p2p_desktop.cancel import CancelToken
    from p2p_desktop.errors import Cancelled
    from p2p_desktop.jobs.rerun import rerun

    token = CancelToken()
    steps = []

    def cancel_after_first(event):
        steps.append(event.step)
        token.cancel()

    before = audit_log.read_bytes()
    with pytest.raises(Cancelled):
        rerun(recorded, tmp_path / "b", on_step=cancel_after_first, cancel=token)
    assert steps == [1] and not (tmp_path / "b").exists()
    assert audit_log.read_bytes() == before  # no rerun record for a run that wrote nothing


def test_a_rerun_cancelled_while_its_outputs_are_written_rolls_them_back(recorded, tmp_path, audit_log):
    from p2p_desktop.cancel import CancelToken
    from p2p_desktop.errors import Cancelled
    from p2p_desktop.jobs.rerun import rerun

    out = tmp_path / "b"
    seen = []

    class PressedOnceWriting(CancelToken):  # the user cancels once the first output file is on disk
        def check(self) -> None:
            if not self.cancelled and out.is_dir() and any(out.iterdir()):
                seen.extend(p.name for p in out.iterdir())
                self.cancel()
            super().check()

    before = audit_log.read_bytes()
    with pytest.raises(Cancelled):
        rerun(recorded, out, cancel=PressedOnceWriting())
    assert seen and not out.exists()  # the cancel came while outputs existed, and took them all back
    assert audit_log.read_bytes() == before


def test_the_audit_record_goes_to_the_log_named_and_a_torn_log_is_refused_first(recorded, tmp_path, audit_log):
    from p2p_desktop.errors import OutputError
    from p2p_desktop.jobs.rerun import rerun

    own = tmp_path / "own.jsonl"
    before = audit_log.read_bytes()
    summary, _ = rerun(recorded, tmp_path / "b", audit_log=str(own))
    records = [json.loads(line) for line in own.read_text().splitlines()]
    assert [r["event"] for r in records] == ["rerun"] and summary["audit"]["log"] == str(own)
    assert audit_log.read_bytes() == before  # the default log is untouched

    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(own.read_bytes() + b'{"seq": 2, "half a rec')
    steps = []
    with pytest.raises(OutputError, match="ends with a torn record"):
        rerun(recorded, tmp_path / "c", audit_log=str(torn), on_step=steps.append)
    assert steps == [] and not (tmp_path / "c").exists()  # refused before any work


def test_a_record_made_on_a_gpu_reruns_on_the_gpu_unless_told_otherwise(recorded, tmp_path, capsys):
    edited = tmp_path / "gpu.json"
    edited.write_text(json.dumps({**recorded, "device": "cuda:1"}))
    assert cli("rerun", edited, "--out", tmp_path / "b") == 2  # no GPU here: one line, nothing written
    assert capsys.readouterr().err.strip() == ("p2p-desktop: error: device 'cuda' requested but no CUDA GPU is "
                                               "available (use --device cpu)")
    assert not (tmp_path / "b").exists()

    # --device cpu runs it, and a PNG that differs is put down to the device
    other_png = [dict(o, sha256="0" * 64) if o["kind"] == "png" else o for o in recorded["outputs"]]
    edited.write_text(json.dumps({**recorded, "device": "cuda:1", "outputs": other_png}))
    assert cli("rerun", edited, "--out", tmp_path / "c", "--device", "cpu", "--json") == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary["device"] == "cpu" and summary["reproduced"] is False
    assert "the adversarial PNG differs from the recorded one (device cpu vs recorded cuda:1)" in summary["notes"]



def test_an_output_folder_in_the_study_is_refused_before_any_work(recorded, tmp_path):
    from p2p_desktop.errors import P2PError
    from p2p_desktop.jobs.rerun import rerun

    inside = Path(recorded["input"]["path"]).parent / "adv"
    steps = []
    with pytest.raises(P2PError, match="inside the input study's folder"):
        rerun(recorded, inside, on_step=steps.append)
    assert steps == [] and not inside.exists()


def test_a_single_file_backbone_is_loaded_with_its_recorded_config_folder(recorded, tmp_path):
    from p2p_desktop.errors import ModelError
    from p2p_desktop.jobs.rerun import rerun

    ckpt = tmp_path / "sd.safetensors"
    ckpt.write_bytes(b"\0" * 16)
    configs = tmp_path / "sd-configs"
    configs.mkdir()
    record = {**recorded, "backbone": {"spec": str(ckpt), "config_dir": str(configs), "weights_sha256": None}}
    with pytest.raises(ModelError) as exc:  # the config folder named in the record is the one looked in
        rerun(record, tmp_path / "b")
    assert str(exc.value) == f"config folder {configs}: model_index.json is missing"
    assert not (tmp_path / "b").exists()


def test_the_rerun_records_the_same_models_and_follows_an_edited_deidentify_option(recorded, tmp_path):
    from p2p_desktop.jobs.rerun import rerun

    summary, _ = rerun(recorded, tmp_path / "b")
    again = json.loads(_provenance(summary).read_text())
    assert again["classifier"] == recorded["classifier"] and again["backbone"] == recorded["backbone"] is None

    # a hand-edited record asking for de-identified outputs gets them (and a record naming no input)
    edited = {**recorded, "options": {**recorded["options"], "deidentify": True}}
    summary, _ = rerun(edited, tmp_path / "c")
    names = [Path(o["path"]).name for o in summary["outputs"]]
    assert names and all(n.startswith("deid-") for n in names), names
    prov = json.loads(_provenance(summary).read_text())
    assert prov["input"]["path"] is None and prov["input"]["deidentified"] is True


def test_a_record_without_its_outputs_list_reruns_and_says_it_cannot_compare(recorded, tmp_path):
    from p2p_desktop.jobs.rerun import rerun

    bare = {k: v for k, v in recorded.items() if k != "outputs"}
    summary, _ = rerun(bare, tmp_path / "b")
    assert summary["reproduced"] is False and summary["recorded_png_sha256"] is None
    assert any("the record has no PNG hash" in n for n in summary["notes"])


def test_a_precision_the_device_cannot_run_is_refused_for_that_device_before_any_work(recorded, tmp_path):
    from p2p_desktop.errors import InputError
    from p2p_desktop.jobs.rerun import rerun

    steps = []
    with pytest.raises(InputError) as exc:  # the device's refusal, not the attack's "runs in fp32"
        rerun(recorded, tmp_path / "b", dtype="fp16", on_step=steps.append)
    assert str(exc.value) == ("dtype fp16 cannot run on the CPU (no half-precision kernels); use bf16 or fp32 on "
                              "CPU, or --device cuda")
    assert steps == [] and not (tmp_path / "b").exists()


def test_a_png_that_differs_on_the_same_device_is_put_down_to_library_versions(recorded, tmp_path):
    from p2p_desktop.jobs.rerun import rerun

    other_png = [dict(o, sha256="0" * 64) if o["kind"] == "png" else o for o in recorded["outputs"]]
    same_device = ("the adversarial PNG differs from the recorded one (same device; library versions may differ: "
                   "compare `versions` in the record)")
    summary, _ = rerun({**recorded, "outputs": other_png}, tmp_path / "b")
    assert summary["reproduced"] is False and summary["recorded_png_sha256"] == "0" * 64
    assert summary["notes"][-1] == same_device
    # a record that does not say its device was made on the CPU, as this rerun was
    undated = {k: v for k, v in recorded.items() if k != "device"}
    summary, _ = rerun({**undated, "outputs": other_png}, tmp_path / "c")
    assert summary["device"] == "cpu" and summary["notes"][-1] == same_device


def test_a_diffusion_record_reruns_its_backbone_in_the_recorded_precision_and_names_it_as_recorded(
        pydicom_copy, model_card, tmp_path, capsys, monkeypatch):
    """Diff-PGD in bf16 on the demo backbone, named ``demo`` as a user names it."""
    import p2p_desktop.models.backbone as backbone_module
    import p2p_desktop.models.classifier as classifier_module
    from p2p_desktop.jobs.rerun import rerun

    cine = pydicom_copy("examples_ybr_color.dcm", "cine.dcm")
    assert cli("attack", cine, "--attack", "diff-pgd", "--backbone", "demo", "--dtype", "bf16", "--steps", "2",
               "--seed", "4", "--frame", "2", "--param", "resolution=64", "--classifier", model_card,
               "--out", tmp_path / "a", "--device", "cpu", "--json") == 0
    first = json.loads(capsys.readouterr().out)
    record = json.loads(_provenance(first).read_text())
    assert record["backbone"]["spec"] == "demo" and record["attack"]["config"]["dtype"] == "bf16"

    loads = []
    real_backbone, real_classifier = backbone_module.load_backbone, classifier_module.load_classifier

    def load_backbone(spec, **kwargs):  # the real loaders, watched
        loads.append(("backbone", spec, kwargs.get("device"), kwargs.get("dtype")))
        return real_backbone(spec, **kwargs)

    def load_classifier(spec, **kwargs):
        loads.append(("classifier", spec, kwargs.get("device")))
        return real_classifier(spec, **kwargs)

    monkeypatch.setattr(backbone_module, "load_backbone", load_backbone)
    monkeypatch.setattr(classifier_module, "load_classifier", load_classifier)
    summary, result = rerun(record, tmp_path / "b")
    # each model loaded once, on the rerun's device; the backbone in the recorded precision (no fp32 copy beside it)
    assert loads == [("classifier", record["classifier"]["spec"], "cpu"), ("backbone", "demo", "cpu", "bf16")]
    assert result.procedure["precision"] == "bf16" and summary["reproduced"] is True
    again = json.loads(_provenance(summary).read_text())
    assert again["backbone"] == record["backbone"]  # still named "demo", not by the folder it was found in
