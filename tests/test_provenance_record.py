"""The provenance record field by field, and every way ``load_provenance`` / the hash checks
refuse a record, in-process and fast (the end-to-end attack -> rerun runs are in
test_provenance.py and test_rerun_settings.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from p2p_desktop.attacks.procedure import metric_protocol
from p2p_desktop.errors import InputError, ModelError
from p2p_desktop.export import provenance as prov
from tests.test_export_dicom import attack_result, load, tiny_classifier


@pytest.fixture(scope="module")
def cine_result(tmp_path_factory):
    import shutil

    from pydicom.data import get_testdata_file

    folder = tmp_path_factory.mktemp("in")
    path = folder / "cine.dcm"
    shutil.copy(get_testdata_file("examples_ybr_color.dcm"), path)
    study = load(path, frame=3)
    return study, attack_result(study, clf=tiny_classifier(), seed=4)


def test_the_record_names_everything_a_rerun_needs(cine_result, tmp_path):
    study, result = cine_result
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    outputs = [{"kind": "png", "path": str(tmp_path / "a" / "x.png"), "sha256": "ab" * 32}]
    rec = prov.provenance_record(result, study, classifier_spec={"spec": "demo-x", "arch": "a"},
                                 label="benign", options={"export_dicom": True}, outputs=outputs, created=when)
    digest = hashlib.sha256(Path(study.path).read_bytes()).hexdigest()
    assert rec["format"] == "p2p-desktop/provenance" and rec["version"] == 1
    assert rec["created"] == "2026-01-02T03:04:05+00:00"
    assert rec["input"] == {"path": str(Path(study.path).resolve()), "sha256": digest, "frame": 3,
                            "n_frames": 30, "kind": "dicom", "true_label": "benign", "true_label_source": "given"}
    assert rec["attack"] == {"name": "fgsm", "config": result.config,
                             "procedure": json.loads(json.dumps(result.procedure)),
                             "metric_protocol": metric_protocol("native")}
    assert rec["attack"]["config"]["seed"] == 4
    assert rec["classifier"]["spec"] == "demo-x" and rec["classifier"]["arch"] == "a"
    assert rec["classifier"]["identity"] == json.loads(json.dumps(result.classifier))
    assert rec["backbone"] is None
    assert rec["device"] == "cpu" and rec["seed"] == 4 and rec["versions"] == result.versions
    assert rec["options"] == {"export_dicom": True}
    assert rec["result"] == {"true_label": result.true_label, "original_label": result.original_label,
                             "adversarial_label": result.adversarial_label, "success": result.success,
                             "iterations": 1, "seconds": round(result.seconds, 4)}
    assert rec["outputs"] == [{"kind": "png", "name": "x.png", "sha256": "ab" * 32}]
    json.dumps(rec)  # JSON-ready as it is
    # defaults: the classifier named by its identity, a given input hash kept, no outputs
    bare = prov.provenance_record(result, study, input_sha256="f" * 64)
    assert bare["classifier"]["spec"] == result.classifier["name"] and bare["input"]["sha256"] == "f" * 64
    assert bare["outputs"] == [] and bare["options"] == {} and bare["input"]["true_label"] == result.true_label
    assert dt.datetime.fromisoformat(bare["created"]).tzinfo is not None


def test_the_weight_hash_comes_from_the_identity_or_the_weights_file(cine_result, tmp_path):
    study, result = cine_result
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights")
    import dataclasses

    from_file = dataclasses.replace(result, classifier={"name": "c", "weights": str(weights), "sha256": None})
    rec = prov.provenance_record(from_file, study)
    assert rec["classifier"]["weights_sha256"] == hashlib.sha256(b"weights").hexdigest()
    stated = dataclasses.replace(result, classifier={"name": "c", "weights": str(weights), "sha256": "12" * 32})
    assert prov.provenance_record(stated, study)["classifier"]["weights_sha256"] == "12" * 32
    missing = dataclasses.replace(result, classifier={"name": "c", "weights": str(tmp_path / "gone")})
    assert prov.provenance_record(missing, study)["classifier"]["weights_sha256"] is None
    with_bb = dataclasses.replace(result, backbone={"name": "sd", "path": "/m/sd", "sha256": "34" * 32})
    bb = prov.provenance_record(with_bb, study)["backbone"]
    assert bb["spec"] == "/m/sd" and bb["weights_sha256"] == "34" * 32 and bb["identity"]["name"] == "sd"
    bb = prov.provenance_record(with_bb, study, backbone_spec={"spec": "demo", "config_dir": "/c"})["backbone"]
    assert bb["spec"] == "demo" and bb["config_dir"] == "/c"


def test_model_spec_makes_paths_absolute_and_drops_empty_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "card.json").write_text("{}")
    (tmp_path / "cfg").mkdir()
    assert prov.model_spec(None) is None
    assert prov.model_spec("demo-resnet34") == {"spec": "demo-resnet34"}
    assert prov.model_spec("card.json", arch=None, classes=("a", "b"), input_size=64, extra="", empty=[]) == {
        "spec": str(tmp_path / "card.json"), "classes": ["a", "b"], "input_size": 64}
    assert prov.model_spec("sd.safetensors", config_dir="cfg") == {"spec": "sd.safetensors",
                                                                  "config_dir": str(tmp_path / "cfg")}


def test_write_provenance_lists_the_outputs_so_far_under_the_runs_name(cine_result, tmp_path):
    from p2p_desktop.io.outputs import OutputSet

    study, result = cine_result
    with OutputSet(tmp_path / "out") as outs:
        outs.write_bytes("a.png", b"a", kind="png")
        path = prov.write_provenance(result, study, outs, label="normal")
    assert path.name == prov.provenance_name(study, "fgsm") and path.name.endswith("_f3_fgsm_provenance.json")
    assert outs.records[-1] == {"kind": "provenance", "path": str(path),
                                "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    rec = prov.load_provenance(path)
    assert rec["outputs"] == [{"kind": "png", "name": "a.png", "sha256": hashlib.sha256(b"a").hexdigest()}]
    # the label the run used is recorded (the report's too), whatever label= says
    assert rec["input"]["true_label"] == result.true_label and path.read_bytes().endswith(b"}\n")


def _good() -> dict:
    return {"format": prov.FORMAT, "version": 1, "input": {"path": "/x.dcm", "sha256": "ab" * 32},
            "attack": {"name": "fgsm"},
            "classifier": {"spec": "demo"}, "seed": 0}


@pytest.mark.parametrize("edit,message", [
    (lambda r: r.update(format="other"),
     'is not a p2p-desktop provenance record (no "format": "p2p-desktop/provenance")'),
    (lambda r: r.update(version=2), "has provenance version 2; this program reads up to 1 (update p2p-desktop)"),
    (lambda r: r.pop("input"), "provenance record lacks 'input'"),
    (lambda r: r.pop("attack"), "provenance record lacks 'attack'"),
    (lambda r: r.pop("classifier"), "provenance record lacks 'classifier'"),
    (lambda r: r.pop("seed"), "provenance record lacks 'seed'"),
    (lambda r: r.update(input={"path": ""}), "provenance record lacks the input path"),
    (lambda r: r.update(input="x.dcm"), "provenance record lacks the input path"),
    (lambda r: r.update(attack={"config": {}}), "provenance record lacks the attack name"),
    (lambda r: r.update(attack="fgsm"), "provenance record lacks the attack name"),
    (lambda r: r.update(input={"path": None, "sha256": None, "deidentified": True, "pseudonym": "deid-x"}),
     "records a de-identified run: it names no input, so it cannot be re-run (find the source through the "
     "pseudonym map, if one was kept, and run `attack` again)"),
])
def test_load_provenance_refuses_with_one_clear_line(tmp_path, edit, message):
    rec = _good()
    edit(rec)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(InputError) as exc:
        prov.load_provenance(path)
    assert str(exc.value).startswith("p.json") and message in str(exc.value)
    assert len(str(exc.value)) <= len("p.json: ") + len(message) + 60  # one line, the message and little else


def test_load_provenance_refuses_unreadable_files(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_good()))
    assert prov.load_provenance(path) == _good()
    no_version = {k: v for k, v in _good().items() if k != "version"}
    path.write_text(json.dumps(no_version))
    assert prov.load_provenance(path) == no_version
    with pytest.raises(InputError, match="provenance record not found: .*missing.json"):
        prov.load_provenance(tmp_path / "missing.json")
    path.write_text("{not json")
    with pytest.raises(InputError, match=r"^p.json is not a readable provenance record \("):
        prov.load_provenance(path)
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="is not a readable provenance record"):
        prov.load_provenance(path)
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="is not a p2p-desktop provenance record"):
        prov.load_provenance(path)


def test_verify_input_checks_presence_and_hash(tmp_path):
    f = tmp_path / "x.dcm"
    f.write_bytes(b"dicom")
    digest = hashlib.sha256(b"dicom").hexdigest()
    assert prov.verify_input({"input": {"path": str(f), "sha256": digest}}) == f
    with pytest.raises(InputError) as exc:  # nothing recorded: refused
        prov.verify_input({"input": {"path": str(f)}})
    assert str(exc.value) == (f"the provenance record has no SHA-256 of its input {f}, so it cannot be verified "
                              "that this is the recorded file; refused")
    with pytest.raises(InputError, match=r"has changed since the recorded run: SHA-256 [0-9a-f]{16}… but the "
                                         r"record says 0000000000000000…"):
        prov.verify_input({"input": {"path": str(f), "sha256": "0" * 64}})
    with pytest.raises(InputError, match="input .*gone.dcm of the recorded run is missing"):
        prov.verify_input({"input": {"path": str(tmp_path / "gone.dcm"), "sha256": digest}})
    with pytest.raises(InputError, match="of the recorded run is missing"):
        prov.verify_input({"input": {"path": str(tmp_path)}})  # a folder is no input file


def test_verify_model_hash(tmp_path):
    assert prov.verify_model_hash("classifier", "ab" * 32, {"sha256": "ab" * 32}) is None
    assert prov.verify_model_hash("classifier", None, {"sha256": "ab" * 32}) == (
        "classifier: no weight hash was recorded, so the weights could not be verified")
    assert prov.verify_model_hash("backbone", "ab" * 32, {}) == (
        "backbone: the loaded weights have no hash to compare with the record")
    assert prov.verify_model_hash("backbone", "ab" * 32, None).startswith("backbone: the loaded weights")
    with pytest.raises(ModelError, match=r"^backbone weights differ from the recorded run: SHA-256 cdcdcdcdcdcdcdcd… "
                                         r"but the record says abababababababab…$"):
        prov.verify_model_hash("backbone", "ab" * 32, {"sha256": "cd" * 32})


def test_an_input_that_is_no_longer_on_disk_is_named_as_given(cine_result):
    import dataclasses

    study, result = cine_result
    gone = dataclasses.replace(study, path=Path("relative") / "gone.dcm")
    rec = prov.provenance_record(result, gone)
    assert rec["input"]["path"] == str(Path("relative") / "gone.dcm") and rec["input"]["sha256"] is None


def test_the_record_file_is_indented_json_ending_in_a_newline(cine_result, tmp_path):
    from p2p_desktop.io.outputs import OutputSet

    study, result = cine_result
    with OutputSet(tmp_path / "out") as outs:
        path = prov.write_provenance(result, study, outs)
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2) + "\n"
    # in the record's own order (what a reader sees first: the format, then the input), not sorted
    assert list(json.loads(text)) == ["format", "version", "created", "input", "attack", "classifier", "backbone",
                                      "device", "seed", "versions", "options", "result", "outputs"]
    assert list(json.loads(text)["input"])[:2] == ["path", "sha256"]


def test_rerun_loads_a_bare_weights_file_with_the_recorded_arch_classes_and_size(tmp_path):
    import torch

    from p2p_desktop.jobs.rerun import load_recorded_classifier as _load_classifier
    from p2p_desktop.models.classifier import build_architecture

    torch.manual_seed(0)
    w = tmp_path / "w.pth"
    torch.save(build_architecture("squeezenet1_1", 3).state_dict(), w)
    clf = _load_classifier({"spec": str(w), "arch": "squeezenet1_1", "classes": ["b", "m", "n"],
                            "input_size": 96}, "cpu")
    assert clf.classes == ("b", "m", "n") and clf.input_size == 96 and clf.card.architecture == "squeezenet1_1"


def test_rerun_command_line(capsys, monkeypatch):
    from p2p_desktop.cli.main import main

    monkeypatch.setenv("COLUMNS", "400")  # one line per option in --help

    with pytest.raises(SystemExit) as exc:
        main(["rerun", "p.json"])
    assert exc.value.code == 2 and "the following arguments are required: --out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["rerun", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "compute device (default: the recorded one; byte-identical results need the same)" in text
    assert text.endswith("--json print one JSON object on stdout")
    assert "--out DIR output folder (outside the input's folder)" in text


_FULL_SHA = "0123456789abcdef" * 4


def _typed() -> dict:
    """A record with every optional field ``load_provenance`` type-checks present and valid."""
    return {"format": prov.FORMAT, "version": 1,
            "input": {"path": "/x.dcm", "sha256": _FULL_SHA, "frame": 0, "true_label": "benign"},
            "attack": {"name": "fgsm", "config": {"eps": 0.01}},
            "classifier": {"spec": "demo", "weights_sha256": _FULL_SHA},
            "backbone": {"spec": "demo-sd", "weights_sha256": _FULL_SHA},
            "options": {}, "versions": {}, "device": "cpu", "outputs": [], "seed": 0}


def _load(tmp_path, rec) -> dict:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(rec))
    return prov.load_provenance(path)


def _set(dotted: str, value):
    def edit(rec):
        *parents, key = dotted.split(".")
        target = rec
        for p in parents:
            target = target[p]
        if value is _DROP:
            target.pop(key)
        else:
            target[key] = value
    return edit


_DROP = object()
_WHOLE = "a whole number from {} to {}"
_SHA_WHAT = "a SHA-256 (64 lowercase hex digits)"


@pytest.mark.parametrize("field,value", [
    ("input.frame", 1_000_000), ("input.frame", None), ("input.frame", _DROP), ("input.true_label", None),
    ("input.sha256", "f" * 64), ("seed", 2**63 - 1), ("seed", 0), ("attack.config", None),
    ("attack.config", _DROP), ("classifier.weights_sha256", None), ("classifier.weights_sha256", _DROP),
    ("backbone", None), ("backbone", _DROP), ("backbone.weights_sha256", None), ("options", None),
    ("versions", None), ("device", None), ("outputs", _DROP), ("version", 0),
])
def test_load_provenance_accepts_every_field_at_its_bounds_or_absent(tmp_path, field, value):
    rec = _typed()
    _set(field, value)(rec)
    assert _load(tmp_path, rec) == rec


@pytest.mark.parametrize("field,value,what", [
    ("input.path", 3, "a path"),
    ("input.sha256", None, _SHA_WHAT),  # the input's hash is required
    ("input.sha256", _DROP, _SHA_WHAT),
    ("input.sha256", "F" * 64, _SHA_WHAT),  # upper case is not what sha256_file writes
    ("input.sha256", "f" * 63, _SHA_WHAT),
    ("input.sha256", "f" * 65, _SHA_WHAT),
    ("input.sha256", "g" * 64, _SHA_WHAT),
    ("input.sha256", 7, _SHA_WHAT),
    ("input.frame", -1, _WHOLE.format(0, 1_000_000)),
    ("input.frame", 1_000_001, _WHOLE.format(0, 1_000_000)),
    ("input.frame", 2.0, _WHOLE.format(0, 1_000_000)),
    ("input.frame", "3", _WHOLE.format(0, 1_000_000)),
    ("input.frame", True, _WHOLE.format(0, 1_000_000)),
    ("input.true_label", 1, "a class name"),
    ("seed", -1, _WHOLE.format(0, 2**63 - 1)),
    ("seed", 2**63, _WHOLE.format(0, 2**63 - 1)),
    ("seed", False, _WHOLE.format(0, 2**63 - 1)),
    ("seed", None, _WHOLE.format(0, 2**63 - 1)),
    ("attack.name", ["fgsm"], "a name"),
    ("attack.config", [1], "an object"),
    ("classifier", "demo", "an object"),
    ("classifier.weights_sha256", "ab" * 31, _SHA_WHAT),
    ("backbone", "demo-sd", "an object with a 'spec'"),
    ("backbone.spec", 5, "an object with a 'spec'"),
    ("backbone.spec", _DROP, "an object with a 'spec'"),
    ("backbone.weights_sha256", "AB" * 32, _SHA_WHAT),
    ("options", [], "an object"),
    ("versions", "2.1", "an object"),
    ("device", 0, "a device name"),
    ("outputs", {}, "a list"),
    ("outputs", None, "a list"),
])
def test_load_provenance_refuses_a_field_of_the_wrong_type_naming_it(tmp_path, field, value, what):
    rec = _typed()
    _set(field, value)(rec)
    with pytest.raises(InputError) as exc:
        _load(tmp_path, rec)
    name = field if field not in ("backbone.spec",) else "backbone"
    got = {"input.sha256": rec["input"].get("sha256"), "backbone.spec": rec["backbone"]}.get(field, value)
    assert str(exc.value) == f"p.json: provenance field {name!r} must be {what}, got {got!r}"


def test_a_refusal_quotes_at_most_300_characters_of_the_bad_value(tmp_path):
    rec = _typed()
    rec["device"] = ["x" * 1000]
    with pytest.raises(InputError) as exc:
        _load(tmp_path, rec)
    assert len(str(exc.value)) == 300
    assert str(exc.value).startswith("p.json: provenance field 'device' must be a device name, got ['xxx")


def test_load_provenance_refuses_a_version_that_is_no_whole_number(tmp_path):
    for version in (True, "1", 1.0):
        rec = _typed()
        rec["version"] = version
        with pytest.raises(InputError) as exc:
            _load(tmp_path, rec)
        assert str(exc.value) == f"p.json: provenance field 'version' must be a whole number, got {version!r}"


def test_the_record_says_where_the_true_label_came_from(cine_result):
    import dataclasses

    study, result = cine_result
    assert result.true_label is not None and getattr(study, "label", None) is None
    source = prov.provenance_record(result, study)["input"]["true_label_source"]
    assert source == "clean prediction"  # neither given nor a class folder
    foldered = dataclasses.replace(study, label=result.true_label)
    assert prov.provenance_record(result, foldered)["input"]["true_label_source"] == "class folder"
    assert prov.provenance_record(result, foldered, label="normal")["input"]["true_label_source"] == "given"
    other = dataclasses.replace(study, label="not-" + result.true_label)  # a folder the run did not use
    assert prov.provenance_record(result, other)["input"]["true_label_source"] == "clean prediction"


def test_a_de_identified_record_names_no_input(cine_result):
    study, result = cine_result
    rec = prov.provenance_record(result, study, input_sha256="ab" * 32, deidentified=True)
    assert rec["input"] == {"path": None, "sha256": None, "deidentified": True, "pseudonym": study.output_name,
                            "frame": 3, "n_frames": 30, "kind": "dicom", "true_label": result.true_label,
                            "true_label_source": "clean prediction"}


def test_an_existing_input_is_recorded_by_its_absolute_path(cine_result, monkeypatch):
    import dataclasses

    study, result = cine_result
    monkeypatch.chdir(Path(study.path).parent)
    relative = dataclasses.replace(study, path=Path(Path(study.path).name))
    assert prov.provenance_record(result, relative)["input"]["path"] == str(Path(study.path).resolve())


def test_the_given_label_is_recorded_when_the_run_had_none(cine_result):
    import dataclasses

    study, result = cine_result
    unlabelled = dataclasses.replace(result, true_label=None)
    rec = prov.provenance_record(unlabelled, study, label="malignant")
    assert rec["input"]["true_label"] == "malignant" and rec["input"]["true_label_source"] == "given"


@pytest.mark.usefixtures("plugin_sandbox")
def test_a_plugin_attack_or_classifier_is_recorded_with_its_approved_hash(cine_result, tmp_path):
    import dataclasses

    from p2p_desktop import plugins

    root = tmp_path / "plugins"
    for folder, manifest, code in (
            ("atk", {"name": "p-atk", "kind": "attack", "entry": "impl:A"},
             "from p2p_desktop.attacks.fgsm import FGSM\n\nclass A(FGSM):\n    name = 'p-atk'\n"),
            ("clf", {"name": "p-clf", "kind": "classifier", "entry": "clf:load"},
             "def load(device='cpu'):\n    return device\n"),
            ("none", {"name": "None", "kind": "classifier", "entry": "clf:load"},  # a name like str(None)
             "def load(device='cpu'):\n    return device\n")):
        (root / folder).mkdir(parents=True)
        (root / folder / "plugin.json").write_text(json.dumps(manifest))
        (root / folder / (manifest["entry"].split(":")[0] + ".py")).write_text(code)
        plugins.enable(manifest["name"])
    plugins.load_plugins()
    assert plugins.loaded("p-atk") is None  # registered, not yet imported: nothing ran, nothing to record
    for name in ("p-atk", "p-clf", "None"):  # imported (after its hash check) when first used
        plugins.load_plugin_object(plugins.find(name))
    study, result = cine_result
    both = dataclasses.replace(result, attack="p-atk", classifier={**result.classifier, "name": "p-clf"})
    rec = prov.provenance_record(both, study)
    assert rec["attack"]["plugin"] == plugins.loaded("p-atk")
    assert rec["attack"]["plugin"]["sha256"] == plugins.find("p-atk").sha256
    assert rec["classifier"]["plugin"] == plugins.loaded("p-clf")
    assert rec["classifier"]["plugin"]["sha256"] == plugins.find("p-clf").sha256
    # a plugin is recorded only where it served as that kind, and a built-in has none
    crossed = dataclasses.replace(result, attack="p-clf", classifier={**result.classifier, "name": "p-atk"})
    rec = prov.provenance_record(crossed, study)
    assert "plugin" not in rec["attack"] and "plugin" not in rec["classifier"]
    assert "plugin" not in prov.provenance_record(result, study)["attack"]
    nameless = dataclasses.replace(result, classifier={k: v for k, v in result.classifier.items() if k != "name"})
    assert "plugin" not in prov.provenance_record(nameless, study)["classifier"]


def test_the_verdict_and_time_are_recorded_as_the_run_ended(cine_result):
    import dataclasses

    study, result = cine_result
    for success in (True, False):
        ended = dataclasses.replace(result, success=success, seconds=1.234567, iterations=3)
        rec = prov.provenance_record(ended, study)["result"]
        assert rec["success"] is success and rec["seconds"] == 1.2346 and rec["iterations"] == 3
