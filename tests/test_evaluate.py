"""Batch evaluation (``p2p-desktop evaluate``): tables, resume, fingerprint, FID, CLI.

Real artefacts: seeded torchvision classifiers saved as safetensors + model card JSON, a small
BUSI-layout phantom PNG folder (masks included), the real FGSM/PGD attacks and the real runner.
"""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from p2p_desktop.cancel import CancelToken
from p2p_desktop.errors import Cancelled, InputError

CLASSES = ("benign", "malignant", "normal")


# -- fixtures -----------------------------------------------------------------------------------------
def _save_classifier(folder: Path, arch: str, seed: int, name: str) -> Path:
    import torch
    from safetensors.torch import save_file

    from p2p_desktop.hashing import sha256_file
    from p2p_desktop.models.classifier import ModelCard, build_architecture

    torch.manual_seed(seed)
    module = build_architecture(arch, len(CLASSES))
    weights = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(weights))
    card = ModelCard(name=name, architecture=arch, classes=CLASSES, weights=weights.name, input_size=32,
                     sha256=sha256_file(weights))
    path = folder / f"{name}.json"
    path.write_text(json.dumps(card.to_dict()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Dataset, two classifier cards, and the clean verdicts computed independently."""
    from p2p_desktop.io import load_dataset, load_study
    from p2p_desktop.models.classifier import load_classifier

    base = tmp_path_factory.mktemp("bench")
    models = base / "models"
    models.mkdir()
    # seeds picked so that the untrained networks' verdicts vary and PGD can move them
    cards = [_save_classifier(models, "resnet18", 0, "rn"), _save_classifier(models, "squeezenet1_1", 0, "sq")]
    # the project's phantoms (BUSI layout, masks, a metadata CSV/JSON beside the class folders);
    # a failing import is a failure, not a reason to test something else
    from p2p_desktop.phantoms import write_png_dataset

    write_png_dataset(base / "busi", 9, seed=3, size=48)
    data = base / "busi"
    items = load_dataset(data)
    correct = {}
    for card in cards:
        clf = load_classifier(card)
        correct[clf.name] = {it.path.relative_to(data).as_posix() for it in items
                             if clf.predict(load_study(it.path).image)[0] == it.label}
    assert all(correct.values()), "each classifier must get some images right for the test to mean anything"
    return {"data": data, "cards": [str(c) for c in cards], "correct": correct, "n_images": len(items),
            "base": base}


@pytest.fixture(autouse=True)
def _no_hub_weights(tmp_path, monkeypatch):
    """An empty torch hub cache: no LPIPS/FID weights (as on a fresh machine)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _run(bench, out, **kw):
    from p2p_desktop.jobs.evaluate import evaluate

    kw.setdefault("device", "cpu")
    return evaluate(bench["data"], kw.pop("attacks", ["fgsm", "pgd"]), kw.pop("classifiers", bench["cards"]), out,
                    **kw)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def full_run(bench, tmp_path_factory):
    """One uninterrupted run (fgsm + pgd × 2 classifiers), shared by several tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
    try:
        out = tmp_path_factory.mktemp("full") / "out"
        return _run(bench, out, params={"pgd.steps": 3})
    finally:
        mp.undo()


# -- Fréchet distance -------------------------------------------------------------------------------
def test_frechet_identical_sets_is_zero():
    from p2p_desktop.metrics.fid import fid_from_features

    f = np.random.RandomState(0).randn(400, 16)
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-6)


def test_frechet_shifted_means_gives_squared_shift():
    from p2p_desktop.metrics.fid import fid_from_features

    f = np.random.RandomState(1).randn(400, 16)
    delta = np.linspace(-1, 2, 16)
    assert fid_from_features(f, f + delta) == pytest.approx(float(delta @ delta), rel=1e-6)


def test_frechet_known_gaussians():
    from p2p_desktop.metrics.fid import frechet_distance

    d = 6
    # equal means, Σ₁ = I, Σ₂ = 4I: Tr(I + 4I − 2·2I) = d
    assert frechet_distance(np.zeros(d), np.eye(d), np.zeros(d), 4 * np.eye(d)) == pytest.approx(d)
    # diagonal covariances: Σ (√a − √b)², plus ‖Δμ‖²
    a, b = np.arange(1.0, d + 1), np.arange(2.0, d + 2)
    mu = np.ones(d)
    expect = d + float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert frechet_distance(mu, np.diag(a), np.zeros(d), np.diag(b)) == pytest.approx(expect)


def test_frechet_rank_deficient_covariance_is_finite():
    """Fewer samples than dimensions (the usual case for small FID sets): finite, ≥ 0, real."""
    from p2p_desktop.metrics.fid import fid_from_features

    rng = np.random.RandomState(2)
    value = fid_from_features(rng.randn(5, 64), rng.randn(5, 64) + 0.5)
    assert np.isfinite(value) and value >= 0 and isinstance(value, float)
    with pytest.raises(ValueError):
        fid_from_features(rng.randn(1, 8), rng.randn(3, 8))


def test_frechet_in_sample_subspace_equals_full_computation():
    """Few samples, many dimensions: the subspace shortcut gives the full D×D value."""
    from p2p_desktop.metrics.fid import fid_from_features

    rng = np.random.RandomState(3)
    a, b = rng.randn(20, 50), 1.5 * rng.randn(25, 50) + 0.3
    assert fid_from_features(a, b, reduce=True) == pytest.approx(fid_from_features(a, b, reduce=False), rel=1e-6)


def test_fid_status_names_missing_files_and_folder():
    import torch

    from p2p_desktop.metrics.fid import PYTORCH_FID_FILE, TORCHVISION_FILE, fid_status, load_inception

    status = fid_status()
    assert not status.available and load_inception() is None
    folder = str(Path(torch.hub.get_dir()) / "checkpoints")
    assert PYTORCH_FID_FILE in status.note and TORCHVISION_FILE in status.note and folder in status.note


# -- the batch ------------------------------------------------------------------------------------------
def test_tables_complete(bench, full_run):
    from p2p_desktop.jobs.evaluate import PER_IMAGE_COLUMNS, SUMMARY_COLUMNS

    res = full_run
    out = res.out_dir
    attacks, clfs = ["fgsm", "pgd"], ["rn", "sq"]
    # every classifier × attack row, every column
    assert [(r["classifier"], r["attack"]) for r in res.summary] == [(c, a) for c in clfs for a in attacks]
    for r in res.summary:
        assert set(r) == set(SUMMARY_COLUMNS)
        n_correct = len(bench["correct"][r["classifier"]])
        assert r["images"] == bench["n_images"]
        assert r["correct"] == n_correct
        assert r["skipped_misclassified"] == bench["n_images"] - n_correct
        assert r["errors"] == 0
        assert r["success_rate"] == pytest.approx(r["successes"] / n_correct)
        assert r["lpips"] is None and r["lpips_paper"] is None  # no AlexNet weights here
        assert r["fid"] is None  # no InceptionV3 weights here
        wins = [x for x in res.rows if x["classifier"] == r["classifier"] and x["attack"] == r["attack"]
                and x["success"]]
        if wins:
            assert r["ssim"] == pytest.approx(np.mean([x["ssim"] for x in wins]))
            assert r["ssim_paper"] == pytest.approx(sum(x["ssim"] for x in wins) / n_correct)
        else:
            assert r["ssim"] is None and r["ssim_paper"] == 0.0
    # per-image CSV: one row per correctly classified image × attack, the contract's columns
    rows = _csv(out / "per_image.csv")
    assert tuple(rows[0].keys()) == PER_IMAGE_COLUMNS
    expected = {(i, c, a) for c in clfs for i in bench["correct"][c] for a in attacks}
    assert len(rows) == len(expected) == sum(len(v) for v in bench["correct"].values()) * len(attacks)
    assert {(r["image"], r["classifier"], r["attack"]) for r in rows} == expected
    assert all(r["clean_pred"] == r["label"] and r["error"] == "" for r in rows)
    # adversarial image of each success, and only those
    for r in rows:
        assert (out / "adversarial" / r["classifier"] / r["attack"] / r["image"]).is_file() == (r["success"] == "true")
    # summary tables, all three, with their hashes
    from p2p_desktop.hashing import sha256_file

    kinds = {o["kind"]: o for o in res.outputs}
    assert set(kinds) == {"per-image-csv", "summary-md", "summary-csv", "summary-json", "oracle-csv", "transfer-csv"}
    for o in res.outputs:
        assert sha256_file(o["path"]) == o["sha256"]
    table = _csv(out / "summary.csv")
    assert len(table) == 4 and tuple(table[0].keys()) == SUMMARY_COLUMNS
    md = (out / "summary.md").read_text(encoding="utf-8")
    for c in clfs:
        for a in attacks:
            assert f"| {c} | {a}[default, " in md  # issue 12: rows name the procedure
    assert "paper's averaging convention" in md and "FID not computed" in md and "LPIPS not computed" in md
    doc = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert doc["summary"] == json.loads(json.dumps(res.summary))
    assert any("pt_inception-2015-12-05-6726825d.pth" in n for n in doc["notes"])
    assert not list(out.rglob("*.part"))


def test_rows_hold_the_values_of_a_direct_run_of_each_job(bench, full_run):
    """Each row's verdict and metrics are those of the job run on its own (same seed and
    settings), and a success's adversarial PNG is that run's written image."""
    from p2p_desktop.attacks.runner import run_attack
    from p2p_desktop.io import load_study
    from p2p_desktop.jobs.evaluate import build_attacks
    from p2p_desktop.models.classifier import load_classifier

    attacks = {a.name: a for a in build_attacks(["fgsm", "pgd"], seed=0, params={"pgd.steps": 3})}
    cards = {load_classifier(c).name: c for c in bench["cards"]}
    csv_rows = {(r["image"], r["classifier"], r["attack"]): r for r in _csv(full_run.out_dir / "per_image.csv")}
    checked = set()
    for row in full_run.rows:
        if (row["classifier"], row["attack"]) in checked:
            continue  # one job per classifier × attack keeps this quick
        checked.add((row["classifier"], row["attack"]))
        clf = load_classifier(cards[row["classifier"]])
        study = load_study(bench["data"] / row["image"])
        assert row["clean_pred"] == clf.predict(study.image)[0] == row["label"]
        res = run_attack(study, clf, attacks[row["attack"]], true_label=row["label"])
        assert row["adv_pred"] == res.adversarial_label and row["success"] == res.success
        assert row["iterations"] == res.iterations
        for key in ("ssim", "psnr", "l2", "linf"):
            assert row[key] == pytest.approx(res.metrics[key], rel=1e-6, abs=1e-9), key
        text = csv_rows[(row["image"], row["classifier"], row["attack"])]
        assert text["adv_pred"] == res.adversarial_label and text["success"] == str(res.success).lower()
        assert float(text["ssim"]) == pytest.approx(res.metrics["ssim"], rel=1e-6)
        png = full_run.out_dir / "adversarial" / row["classifier"] / row["attack"] / row["image"]
        if res.success:
            np.testing.assert_allclose(load_study(png).image, res.adversarial, atol=1e-6)
    assert len(checked) == 4


def test_resume_after_cancel_does_not_redo_finished_jobs(bench, full_run, tmp_path):
    out = tmp_path / "out"
    total = sum(len(v) for v in bench["correct"].values()) * 2  # attacked jobs
    jobs = bench["n_images"] * 2 * 2  # image × classifier × attack, misclassified included
    k = 3
    token = CancelToken()
    steps_started: list[int] = []

    def on_step(ev):
        if ev.step == 1:
            steps_started.append(1)
            if len(steps_started) == k + 1:  # cancel inside attack k+1: it must leave no row
                token.cancel()

    with pytest.raises(Cancelled, match="run the same command again"):
        _run(bench, out, params={"pgd.steps": 3}, cancel=token, on_step=on_step)
    rows = _csv(out / "per_image.csv")
    assert len(rows) == k
    assert not (out / "summary.md").exists() and not (out / "summary.json").exists()
    # a crash mid-append leaves a cut line: it is dropped on resume
    with open(out / "per_image.csv", "ab") as fh:
        fh.write(b"benign/benign (1).png,benign,sq,fg")

    progress = []
    res = _run(bench, out, params={"pgd.steps": 3}, on_progress=progress.append)
    assert res.resumed == k and res.attacked == total - k
    assert ((progress[0].step, progress[0].total) == (k, jobs)
            and (progress[-1].step, progress[-1].total) == (jobs, jobs))
    assert all(b.step >= a.step for a, b in zip(progress, progress[1:]))  # never goes back
    # the ETA is the pace of this call's jobs only: the resumed ones took no time here
    assert progress[0].eta is None and all(ev.start == k for ev in progress)
    timed = [ev for ev in progress if ev.step < jobs and ev.eta is not None]
    assert timed and all(ev.eta == pytest.approx(ev.elapsed / (ev.step - k) * (jobs - ev.step)) for ev in timed)
    rows = _csv(out / "per_image.csv")
    keys = [(r["image"], r["classifier"], r["attack"]) for r in rows]
    assert len(keys) == len(set(keys)) == total
    # same seed, same device: the resumed batch gives the uninterrupted batch's results
    ref = {(r["image"], r["classifier"], r["attack"]): r for r in full_run.rows}
    for r in res.rows:
        key = (r["image"], r["classifier"], r["attack"])
        assert (r["success"], r["adv_pred"]) == (ref[key]["success"], ref[key]["adv_pred"])
        assert r["ssim"] == pytest.approx(ref[key]["ssim"])
    assert [{k: v for k, v in s.items() if k != "seconds_mean"} for s in res.summary] == \
        [{k: v for k, v in s.items() if k != "seconds_mean"} for s in full_run.summary]
    # a finished run: nothing left to attack, tables rewritten in place
    again = _run(bench, out, params={"pgd.steps": 3})
    assert again.attacked == 0 and again.resumed == total
    assert sorted(p.name for p in out.glob("summary*")) == ["summary.csv", "summary.json", "summary.md"]


def test_different_settings_refused(bench, full_run):
    out = full_run.out_dir
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(InputError, match=r"other settings \(different: .*seed\)"):
        _run(bench, out, params={"pgd.steps": 3}, seed=1)
    with pytest.raises(InputError, match="different: attacks"):
        _run(bench, out, params={"pgd.steps": 4})
    with pytest.raises(InputError, match="different: images"):
        _run(bench, out, params={"pgd.steps": 3}, limit=2)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_bad_settings_refused_before_any_write(bench, tmp_path):
    out = tmp_path / "out"
    cases = [
        ({"attacks": ["nope"]}, "unknown attack"),
        ({"params": {"pgd.eps": -1}}, "eps"),
        ({"params": {"bogus": 1}}, "bogus"),
        ({"params": {"p2p.steps": 1}}, "not in --attacks"),
        ({"preset": "paper"}, "preset of that name"),
        ({"classifiers": [bench["cards"][0], bench["cards"][0]]}, "named 'rn'"),
        ({"limit": 0}, "limit"),
    ]
    for kw, msg in cases:
        with pytest.raises(InputError, match=msg):
            _run(bench, out, **kw)
        assert not out.exists()
    with pytest.raises(InputError, match="inside the input study's folder"):
        _run(bench, bench["data"] / "out")
    assert not (bench["data"] / "out").exists()


def test_failed_attack_is_recorded_not_fatal(bench, tmp_path, monkeypatch):
    import p2p_desktop.attacks.runner as runner

    real = runner.run_attack
    victim = sorted(bench["correct"]["rn"])[0]

    def flaky(study, classifier, attack, **kw):
        if attack.name == "fgsm" and study.path.relative_to(bench["data"]).as_posix() == victim:
            raise RuntimeError("simulated failure")
        return real(study, classifier, attack, **kw)

    monkeypatch.setattr(runner, "run_attack", flaky)
    res = _run(bench, tmp_path / "out", params={"pgd.steps": 2}, classifiers=bench["cards"][:1])
    errs = [r for r in res.rows if r["error"]]
    assert len(errs) == 1 and "simulated failure" in errs[0]["error"] and errs[0]["success"] is None
    fgsm = next(r for r in res.summary if r["attack"] == "fgsm")
    assert fgsm["errors"] == 1 and fgsm["correct"] == len(bench["correct"]["rn"])
    assert any("ended in an error" in n for n in res.notes)


def _random_inception_state(flavour: str) -> dict:
    """State dict of the right shapes with random values (built on the meta device: no slow init)."""
    import torch

    from p2p_desktop.metrics.fid import build_inception

    with torch.device("meta"):
        model = build_inception(flavour)
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, t in model.state_dict().items():
        if t.dtype != torch.float32:
            state[key] = torch.zeros(t.shape, dtype=t.dtype)
        elif t.dim() > 1:
            state[key] = torch.randn(t.shape, generator=g) / float(np.sqrt(t[0].numel()))
        elif key.endswith(("running_var", ".weight")):
            state[key] = torch.ones(t.shape)
        else:
            state[key] = torch.zeros(t.shape)
    return state


def test_fid_computed_when_weights_present(bench, tmp_path, monkeypatch):
    """With (here: random) pytorch-fid InceptionV3 weights in the hub cache, FID is a number."""
    import torch

    from p2p_desktop.metrics import METRICS
    from p2p_desktop.metrics import fid as fidlib

    home = tmp_path / "hub-with-inception"
    monkeypatch.setenv("TORCH_HOME", str(home))
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(_random_inception_state("pytorch-fid"), home / "hub" / "checkpoints" / fidlib.PYTORCH_FID_FILE)
    status = fidlib.fid_status()
    assert status.available and status.flavour == "pytorch-fid" and status.note == ""

    res = _run(bench, tmp_path / "out", attacks=["pgd"], classifiers=bench["cards"][:1], params={"pgd.steps": 3})
    row = res.summary[0]
    assert row["successes"] >= 2, "PGD should fool this untrained network"
    assert row["fid"] is not None and row["fid"] > 0 and row["fid_samples"] == row["successes"]
    assert any("biased" in n for n in res.notes)
    assert not any("FID not computed" in n for n in res.notes)
    md = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert f"| {METRICS['fid'].fmt.format(row['fid'])} |" in md  # the metric table's format


def test_torchvision_inception_weights_are_used_and_noted(tmp_path, monkeypatch):
    """torchvision's file (with its auxiliary head) loads too, and the note says it is not standard FID."""
    import torch

    from p2p_desktop.metrics import fid as fidlib

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(_random_inception_state("torchvision"), tmp_path / "hub" / "checkpoints" / fidlib.TORCHVISION_FILE)
    status = fidlib.fid_status()
    assert status.flavour == "torchvision" and fidlib.PYTORCH_FID_FILE in status.note
    feats = fidlib.load_inception()([np.full((40, 40, 1), 0.3, np.float32)])
    assert feats.shape == (1, fidlib.FEATURE_DIM) and np.isfinite(feats).all()


def test_inception_file_that_needs_unpickling_is_refused(tmp_path, monkeypatch):
    from p2p_desktop.errors import UnsafeFileError
    from p2p_desktop.metrics import fid as fidlib

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    import torch

    torch.save({"layer": Path("not-a-tensor")}, tmp_path / "hub" / "checkpoints" / fidlib.PYTORCH_FID_FILE)
    with pytest.raises((UnsafeFileError, InputError)):
        fidlib.load_inception()


def test_limit_takes_classes_in_turn():
    from p2p_desktop.io import DatasetItem
    from p2p_desktop.jobs.evaluate import select_items

    items = [DatasetItem(Path(f"{c}/{i}.png"), c) for c in CLASSES for i in range(4)]
    picked = select_items(items, 5)
    assert [it.label for it in picked] == ["benign", "benign", "malignant", "malignant", "normal"]
    assert select_items(items, 100) == items


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_json(bench, tmp_path, capsys):
    from p2p_desktop.cli.main import main

    out = tmp_path / "out"
    rc = main(["evaluate", str(bench["data"]), "--attacks", "fgsm", "--classifiers", bench["cards"][0],
               "--out", str(out), "--limit", "6", "--device", "cpu", "--report", "docx"])
    assert rc == 2 and "docx" in capsys.readouterr().err and not out.exists()

    rc = main(["evaluate", str(bench["data"]), "--attacks", "fgsm", "--classifiers", bench["cards"][0],
               "--out", str(out), "--limit", "6", "--device", "cpu", "--json", "--report", "html"])
    captured = capsys.readouterr()
    assert rc == 0
    doc = json.loads(captured.out)
    assert set(doc) == {"summary", "outputs", "notes", "metrics", "warnings"}  # issue 12: + protocol, warnings
    assert doc["metrics"] == "native" and doc["warnings"] == []
    assert len(doc["summary"]) == 1 and doc["summary"][0]["images"] == 6
    assert {o["kind"] for o in doc["outputs"]} == {"per-image-csv", "summary-md", "summary-csv", "summary-json",
                                                   "oracle-csv", "transfer-csv", "report-html"}
    assert all(set(o) == {"kind", "path", "sha256"} for o in doc["outputs"])
    html = (out / "evaluation_report.html").read_text(encoding="utf-8")
    summary_md = next(o for o in doc["outputs"] if o["kind"] == "summary-md")
    assert summary_md["sha256"] in html  # the report lists the tables with their hashes

    rc = main(["evaluate", str(bench["data"]), "--attacks", "fgsm", "--classifiers", bench["cards"][0],
               "--out", str(out), "--seed", "3", "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == "" and "other settings" in captured.err


def test_cli_ctrl_c_exits_3_and_keeps_progress(bench, tmp_path, monkeypatch, capsys):
    """A real SIGINT during the second attack: exit 3, finished rows kept, no tables."""
    import p2p_desktop.attacks.runner as runner
    from p2p_desktop.cli.main import main

    real = runner.run_attack
    calls = []

    def interrupting(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **kw)

    monkeypatch.setattr(runner, "run_attack", interrupting)
    out = tmp_path / "out"
    rc = main(["evaluate", str(bench["data"]), "--attacks", "fgsm", "--classifiers", bench["cards"][0],
               "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 3 and "run the same command again to resume" in err
    assert len(_csv(out / "per_image.csv")) == 1
    assert not (out / "summary.md").exists() and not list(out.rglob("*.part"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# -- the audit record -----------------------------------------------------------------------------------
def _audit_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.is_file() else []


def test_a_finished_run_writes_one_verified_audit_record_with_every_output(bench, tmp_path, monkeypatch):
    from p2p_desktop.audit import verify_log
    from p2p_desktop.hashing import sha256_file

    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(log))
    res = _run(bench, tmp_path / "out", attacks=["fgsm"], classifiers=bench["cards"][:1], limit=2)
    records = _audit_records(log)
    assert [r["event"] for r in records] == ["evaluate"]
    data = records[0]["data"]
    assert data["command"] == "evaluate" and data["status"] == "finished"
    assert data["dataset"] == str(bench["data"]) and data["out"] == str(res.out_dir)
    assert data["fingerprint"] == res.fingerprint and data["config"] == json.loads(json.dumps(res.config))
    assert data["attacks"] == ["fgsm"] and data["classifiers"] == [s["classifier"] for s in res.summary]
    assert data["backbone"] is None and data["deidentified"] is False
    assert (data["total"], data["done"], data["resumed"]) == (2, 2, 0) and data["attacked"] == res.attacked
    assert data["outputs"] == res.outputs and {o["kind"] for o in data["outputs"]} >= {"per-image-csv", "summary-json"}
    for o in data["outputs"]:
        assert sha256_file(o["path"]) == o["sha256"]
    assert verify_log(log).ok


def test_a_cancelled_run_is_audited_with_the_rows_it_keeps(bench, tmp_path, monkeypatch):
    from p2p_desktop.audit import verify_log
    from p2p_desktop.hashing import sha256_file

    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("P2P_DESKTOP_AUDIT_LOG", str(log))
    token = CancelToken()

    def progress(ev):
        if ev.step >= 1:  # after the first finished job
            token.cancel()

    with pytest.raises(Cancelled, match="run the same command again to resume"):
        _run(bench, tmp_path / "out", attacks=["fgsm"], classifiers=bench["cards"][:1], on_progress=progress,
             cancel=token, command="gui-evaluate")
    records = _audit_records(log)
    assert [r["event"] for r in records] == ["evaluate"]
    data = records[0]["data"]
    assert data["status"] == "cancelled" and data["command"] == "gui-evaluate" and "cancelled" in data["reason"]
    per_image = tmp_path / "out" / "per_image.csv"
    assert data["outputs"] == [{"kind": "per-image-csv", "path": str(per_image), "sha256": sha256_file(per_image)}]
    assert 1 <= data["done"] < data["total"]
    assert verify_log(log).ok
    # settings refused before any work: nothing to audit
    with pytest.raises(InputError):
        _run(bench, tmp_path / "out", attacks=["fgsm"], classifiers=bench["cards"][:1], seed=5)
    assert len(_audit_records(log)) == 1


def test_a_deidentifying_runs_record_names_neither_the_dataset_nor_its_images(tmp_path):
    from types import SimpleNamespace

    from p2p_desktop.audit import verify_log
    from p2p_desktop.jobs.evaluate import record_evaluation

    plan = SimpleNamespace(config={"backbone": None}, deidentified=True, root=tmp_path / "DOE_JANE_734291",
                           out=tmp_path / "out", attack_names=["fgsm"], classifier_names=["c"], fingerprint="f")
    log = tmp_path / "audit.jsonl"
    rec = record_evaluation(plan, [], status="failed", counts={"done": 1, "total": 2}, log=log,
                            reason="cannot load DOE_JANE_734291/benign/DOE_JANE_19610317.dcm")
    assert "DOE_JANE" not in json.dumps(rec)
    assert rec["data"]["dataset"] is None and len(rec["data"]["dataset_keyed_digest"]) == 64
    assert rec["data"]["status"] == "failed" and (rec["data"]["done"], rec["data"]["total"]) == (1, 2)
    assert verify_log(log).ok


# -- the demo bundle -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_classifiers_on_phantoms(tmp_path):
    """End to end with the shipped demo classifiers on a few phantoms (fgsm + pgd)."""
    from p2p_desktop.jobs.evaluate import evaluate
    from p2p_desktop.paths import models_dir

    demo = sorted(p.parent.name for p in models_dir().glob("demo-*/card.json")
                  if json.loads(p.read_text(encoding="utf-8")).get("kind", "classifier") == "classifier")
    if not demo:
        pytest.skip("the demo bundle (resources/models/demo-*) is not built")
    from p2p_desktop.phantoms import write_png_dataset

    data = tmp_path / "phantoms"
    write_png_dataset(data, 6, seed=11, size=128)
    res = evaluate(data, ["fgsm", "pgd"], demo, tmp_path / "out", device="cpu")
    assert len(res.summary) == 2 * len(demo)
    for row in res.summary:
        assert row["correct"] + row["skipped_misclassified"] + row["skipped_unknown_label"] == row["images"] == 6
        if row["correct"]:
            assert row["success_rate"] is not None
    assert (tmp_path / "out" / "summary.md").is_file()
