"""Provenance records: everything needed to reproduce one run, as JSON (output kind ``provenance``).

A record names the input (path, SHA-256, frame), the attack and its full config, the
classifier and backbone *as the user gave them* (registered name, card path, or weights file
with architecture and classes) with their weight hashes, the device, seed and library
versions, and the SHA-256 of every output written before it. ``p2p-desktop rerun`` reads it
back (:func:`load_provenance`), checks the hashes (:func:`verify_input`,
:func:`verify_model_hash`) and runs the job again; on CPU the adversarial PNG comes out
byte-identical.

The record keeps the input's path so that it can be re-run: it stays with the run's other
outputs on this machine and is not meant for sharing (reports and de-identified DICOMs are).
A de-identified run's record names no input (no path, no SHA-256, only the outputs' random
pseudonym), so ``rerun`` refuses it with one line: the source can be found again only through
the local pseudonym map the user asked for (``attack --pseudonym-map FILE``).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from p2p_desktop.errors import InputError, ModelError
from p2p_desktop.hashing import sha256_file
from p2p_desktop.jsonsafe import jsonable

__all__ = ["FORMAT", "VERSION", "model_spec", "provenance_record", "write_provenance", "load_provenance",
           "verify_input", "verify_model_hash", "provenance_name"]

FORMAT = "p2p-desktop/provenance"
VERSION = 1


def model_spec(spec: str | Path | None, **options: Any) -> dict[str, Any] | None:
    """How a model was named: ``{"spec": ..., **options}``; paths are made absolute.

    ``options`` are those a re-run needs to load it the same way (``arch``, ``classes``,
    ``input_size`` for a bare weights file; ``config_dir`` for a single-file backbone).
    """
    if spec is None:
        return None
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        text = str(path.resolve())
    out: dict[str, Any] = {"spec": text}
    for key, value in options.items():
        if value is None or value == "" or value == []:
            continue
        if key == "config_dir":
            value = str(Path(str(value)).expanduser().resolve())
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _weights_sha(identity: dict[str, Any] | None) -> str | None:
    if not identity:
        return None
    digest = identity.get("sha256")
    if digest:
        return str(digest)
    weights = identity.get("weights")
    if weights and Path(str(weights)).is_file():
        return sha256_file(weights)
    return None


def _plugin_identity(name: Any, kind: str) -> dict[str, Any]:
    """``{"plugin": {name, entry, path, sha256, ...}}`` when ``name`` is a plugin imported in this
    session (the hash is the one verified at import), else ``{}``."""
    from p2p_desktop import plugins

    info = plugins.loaded(str(name)) if name else None
    return {"plugin": dict(info)} if info and info.get("kind") == kind else {}


def _label_source(result, study, given: str | None) -> str:
    from p2p_desktop.export.report import true_label_source

    return true_label_source(result, study, given)


def provenance_name(study, attack: str) -> str:
    """File name of the provenance record written for ``study`` and ``attack``."""
    from p2p_desktop.export.images import output_stem

    return f"{output_stem(study, attack)}_provenance.json"


def _metric_protocol() -> dict[str, Any]:
    """The metric protocol of a single run's metrics (always native: the images as written)."""
    from p2p_desktop.attacks.procedure import metric_protocol

    return metric_protocol("native")


def provenance_record(result, study, *, input_sha256: str | None = None, classifier_spec: dict | None = None,
                      backbone_spec: dict | None = None, label: str | None = None,
                      options: dict[str, Any] | None = None, outputs: list[dict] | None = None,
                      created: _dt.datetime | None = None, deidentified: bool = False) -> dict[str, Any]:
    """The provenance of one :class:`~p2p_desktop.attacks.runner.AttackResult` as a JSON-ready dict.

    ``label`` is the true label the user gave (``--label``), None when the class folder or the
    clean prediction supplied it (``input.true_label_source`` says which; ``input.true_label`` is
    always the label the run used); ``options`` the export options (``deidentify`` and one
    entry per CLI row of the export-format table: ``export_dicom``, ``export_tiff``, ``report``).
    """
    path = Path(study.path)
    created = created or _dt.datetime.now(_dt.timezone.utc).astimezone()
    clf_identity = dict(result.classifier or {})
    bb_identity = dict(result.backbone) if result.backbone else None
    if deidentified:  # no path, no hash: nothing that leads back to the source
        source = {"path": None, "sha256": None, "deidentified": True, "pseudonym": study.output_name}
    else:
        source = {"path": str(path.resolve()) if path.exists() else str(path),
                  "sha256": input_sha256 or (sha256_file(path) if path.is_file() else None)}
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": created.isoformat(timespec="seconds"),
        "input": {
            **source,
            "frame": int(study.frame_index),
            "n_frames": int(study.n_frames),
            "kind": study.kind,
            # the label the run used (the report's too), and where it came from
            "true_label": result.true_label if result.true_label is not None else label,
            "true_label_source": _label_source(result, study, label),
        },
        "attack": {"name": result.attack, "config": jsonable(result.config),
                   "procedure": jsonable(result.procedure or {}),
                   "metric_protocol": _metric_protocol(),
                   **_plugin_identity(result.attack, "attack")},
        "classifier": {
            **(classifier_spec or {"spec": clf_identity.get("name")}),
            "weights_sha256": _weights_sha(clf_identity),
            "identity": jsonable(clf_identity),
            **_plugin_identity(clf_identity.get("name"), "classifier"),
        },
        "backbone": None if bb_identity is None and backbone_spec is None else {
            **(backbone_spec or {"spec": (bb_identity or {}).get("path")}),
            "weights_sha256": (bb_identity or {}).get("sha256"),
            "identity": jsonable(bb_identity),
        },
        "device": result.device,
        "seed": int(result.seed),
        "versions": dict(result.versions),
        "options": dict(options or {}),
        "result": {
            "true_label": result.true_label,
            "original_label": result.original_label,
            "adversarial_label": result.adversarial_label,
            "success": bool(result.success),
            "iterations": int(result.iterations),
            "seconds": round(float(result.seconds), 4),
        },
        "outputs": [{"kind": r["kind"], "name": Path(r["path"]).name, "sha256": r["sha256"]}
                    for r in (outputs or [])],
    }


def write_provenance(result, study, outs, **kwargs: Any) -> Path:
    """Write :func:`provenance_record` through ``outs`` (kind ``provenance``), listing the
    outputs written so far; returns its path. ``kwargs`` as for :func:`provenance_record`."""
    kwargs.setdefault("outputs", list(outs.records))
    record = provenance_record(result, study, **kwargs)
    from p2p_desktop.jsonsafe import finite_json

    data = json.dumps(finite_json(record), indent=2, sort_keys=False, allow_nan=False).encode("utf-8") + b"\n"
    return outs.write_bytes(provenance_name(study, result.attack), data, kind="provenance")


def load_provenance(path: str | Path) -> dict[str, Any]:
    """Read and check a provenance record; :class:`InputError` naming what is wrong."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"provenance record not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"{path.name} is not a readable provenance record ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(f"{path.name} is not a p2p-desktop provenance record (no \"format\": \"{FORMAT}\")")
    version = record.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InputError(f"{path.name}: provenance field 'version' must be a whole number, got {version!r}")
    if version > VERSION:
        raise InputError(f"{path.name} has provenance version {record.get('version')}; this program reads "
                         f"up to {VERSION} (update p2p-desktop)")
    for key in ("input", "attack", "classifier", "seed"):
        if key not in record:
            raise InputError(f"{path.name}: provenance record lacks {key!r}")
    if isinstance(record["input"], dict) and record["input"].get("deidentified"):
        raise InputError(f"{path.name} records a de-identified run: it names no input, so it cannot be re-run "
                         "(find the source through the pseudonym map, if one was kept, and run `attack` again)")
    if not isinstance(record["input"], dict) or not record["input"].get("path"):
        raise InputError(f"{path.name}: provenance record lacks the input path")
    if not isinstance(record["attack"], dict) or "name" not in record["attack"]:
        raise InputError(f"{path.name}: provenance record lacks the attack name")
    _check_types(record, path.name)
    return record


_SHA = frozenset("0123456789abcdef")


def _check_types(record: dict[str, Any], name: str) -> None:
    """Every field a re-run reads has the type it must have (a hand-edited record is bad input)."""
    def bad(field: str, what: str, value: Any) -> InputError:
        return InputError(f"{name}: provenance field {field!r} must be {what}, got {value!r}"[:300])

    def whole(field: str, value: Any, lo: int, hi: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise bad(field, f"a whole number from {lo} to {hi}", value)

    def sha(field: str, value: Any, required: bool = False) -> None:
        if value is None and not required:
            return
        if not isinstance(value, str) or len(value) != 64 or not set(value) <= _SHA:
            raise bad(field, "a SHA-256 (64 lowercase hex digits)", value)

    inp = record["input"]
    if not isinstance(inp["path"], str):
        raise bad("input.path", "a path", inp["path"])
    sha("input.sha256", inp.get("sha256"), required=True)
    if inp.get("frame") is not None:
        whole("input.frame", inp["frame"], 0, 1_000_000)
    if inp.get("true_label") is not None and not isinstance(inp["true_label"], str):
        raise bad("input.true_label", "a class name", inp["true_label"])
    whole("seed", record["seed"], 0, 2**63 - 1)
    attack = record["attack"]
    if not isinstance(attack["name"], str):
        raise bad("attack.name", "a name", attack["name"])
    if attack.get("config") is not None and not isinstance(attack["config"], dict):
        raise bad("attack.config", "an object", attack["config"])
    if not isinstance(record["classifier"], dict):
        raise bad("classifier", "an object", record["classifier"])
    sha("classifier.weights_sha256", record["classifier"].get("weights_sha256"))
    backbone = record.get("backbone")
    if backbone is not None:
        if not isinstance(backbone, dict) or not isinstance(backbone.get("spec"), str):
            raise bad("backbone", "an object with a 'spec'", backbone)
        sha("backbone.weights_sha256", backbone.get("weights_sha256"))
    for key in ("options", "versions"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            raise bad(key, "an object", record[key])
    if record.get("device") is not None and not isinstance(record["device"], str):
        raise bad("device", "a device name", record["device"])
    if not isinstance(record.get("outputs", []), list):
        raise bad("outputs", "a list", record.get("outputs"))


def verify_input(record: dict[str, Any]) -> Path:
    """The recorded input, checked against its recorded SHA-256 (InputError if missing/changed)."""
    info = record["input"]
    path = Path(info["path"])
    if not path.is_file():
        raise InputError(f"input {path} of the recorded run is missing")
    expected = info.get("sha256")
    if not expected:  # never re-run on a file nobody can show is the recorded one
        raise InputError(f"the provenance record has no SHA-256 of its input {path}, so it cannot be "
                         "verified that this is the recorded file; refused")
    if expected:
        actual = sha256_file(path)
        if actual != expected:
            raise InputError(f"input {path} has changed since the recorded run: SHA-256 {actual[:16]}… "
                             f"but the record says {expected[:16]}…")
    return path


def verify_model_hash(what: str, recorded: str | None, identity: dict[str, Any] | None) -> str | None:
    """Compare a loaded model's weight hash with the recorded one; :class:`ModelError` if they differ.

    Returns a note when nothing could be compared (no hash recorded or none computable).
    """
    actual = _weights_sha(identity)
    if not recorded:
        return f"{what}: no weight hash was recorded, so the weights could not be verified"
    if not actual:
        return f"{what}: the loaded weights have no hash to compare with the record"
    if actual != recorded:
        raise ModelError(f"{what} weights differ from the recorded run: SHA-256 {actual[:16]}… "
                         f"but the record says {recorded[:16]}…")
    return None
