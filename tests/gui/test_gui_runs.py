"""Attack runs through the GUI worker: results, heatmap, cancel, errors, responsiveness, closing,
history and comparison, exports, batch evaluation and the smoke test."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from p2p_desktop.attacks.base import Attack, AttackConfig, AttackOutput  # noqa: E402
from p2p_desktop.config import param  # noqa: E402

pytestmark = pytest.mark.gui



@dataclass(frozen=True)
class FailingConfig(AttackConfig):
    steps: int = param(3, help="Steps before the failure.", min=1)


class FailingAttack(Attack):
    """A plugin attack whose loop raises after one step."""

    name = "gui-test-failing"
    Config = FailingConfig
    summary = "fails on purpose"

    def run(self, x, ctx) -> AttackOutput:
        ctx.step(1, self.config.steps, 1.0, [1 / 3] * 3)
        raise RuntimeError("the model exploded on purpose")


@pytest.fixture
def failing_attack():
    from p2p_desktop.attacks import registry

    registry.register(registry.AttackSpec(FailingAttack.name, f"{__name__}:FailingAttack",
                                          FailingAttack.summary, source="plugin"))
    yield FailingAttack.name
    registry._specs.pop(FailingAttack.name, None)  # the registry has no public unregister


def test_fgsm_end_to_end_through_the_worker(qtbot, window, tmp_path, ultrasound_file, run_attack, open_study):
    open_study([ultrasound_file()])
    events = []
    window.runner.progress.connect(events.append)
    entry = run_attack("fgsm", eps=0.03)
    assert entry is not None and window.errors == []
    r = entry.result
    assert r.attack == "fgsm" and r.config["eps"] == 0.03
    assert [e.step for e in events] == [1] and window.monitor.steps == [1]
    # the heatmap is adversarial − original (signed: the channel mean)
    view = window.results
    np.testing.assert_array_equal(view.perturbation.delta, r.adversarial - r.original)
    np.testing.assert_array_equal(view.perturbation.delta, r.perturbation)
    np.testing.assert_allclose(view.heatmap_item.image, (r.adversarial - r.original).mean(axis=2), atol=1e-7)
    lo, hi = view.heatmap_levels()
    assert lo == pytest.approx(-hi) and hi == pytest.approx(np.abs(view.heatmap_item.image).max(), rel=1e-4)
    np.testing.assert_array_equal(view.original_pane.image_item.image, r.original)
    np.testing.assert_array_equal(view.adversarial_pane.image_item.image, r.adversarial)
    # probability shift and metrics come from the result
    before, after = view.chart.values
    assert before == pytest.approx([r.original_probs[c] for c in r.classes])
    assert after == pytest.approx([r.adversarial_probs[c] for c in r.classes])
    assert view.metrics.value("ssim") == view.metrics.value("SSIM ↑") == f"{r.metrics['ssim']:.4f}"
    assert view.metrics.value("lpips") == ("—" if r.metrics["lpips"] is None else f"{r.metrics['lpips']:.4f}")
    if r.metrics["lpips"] is None:
        assert "LPIPS not computed" in view.notes.text()
    assert window.tabs.currentWidget() is view
    assert len(window.history.entries) == 1
    assert window.monitor.progress.value() == window.monitor.progress.maximum()


def test_heatmap_controls_roi_and_lesion_energy(qtbot, window, tmp_path, make_busi_folder, run_attack, open_study):
    root = make_busi_folder(tmp_path / "busi")
    open_study([root])
    assert window.browser.select_path(root / "malignant" / "malignant (1).png")
    qtbot.waitUntil(lambda: window.current_study.path.name == "malignant (1).png")
    entry = run_attack("fgsm", eps=0.05)
    view = window.results
    pm = view.perturbation
    assert entry.result.true_label == "malignant"
    # absolute mode and amplification
    view.set_mode("absolute")
    np.testing.assert_allclose(view.heatmap_item.image, np.abs(entry.result.perturbation).max(axis=2))
    top = pm.scale("absolute")
    view.amp_spin.setValue(4.0)
    assert view.heatmap_levels() == pytest.approx((0.0, top / 4))
    view.set_mode("signed")
    assert view.heatmap_levels() == pytest.approx((-pm.scale("signed") / 4, pm.scale("signed") / 4))
    # overlay on the original: the bar's colours, fading towards 0 (more strength, more opaque pixels)
    view.amp_spin.setValue(1.0)
    view.overlay_check.setChecked(True)
    top = pm.scale("signed")
    view.colorbar.setLevels((-2 * top, 2 * top))  # a wider bar (dragged): every |δ| at half its range
    view.opacity_slider.setValue(5)
    assert view.heatmap_pane.base_item.isVisible() and view.heat_overlay_item.isVisible()
    faint = int(view.heat_overlay_item.image[..., 3].astype(np.int64).sum())
    view.opacity_slider.setValue(90)
    assert int(view.heat_overlay_item.image[..., 3].astype(np.int64).sum()) > faint
    view.amp_spin.setValue(4.0)
    # hover readout: position and values
    view._on_hover(5, 7)
    d = entry.result.perturbation[5, 7, 0]
    assert view.readout.text().startswith("x 7, y 5") and f"{d:+.4f}" in view.readout.text()
    # the ROI starts on the lesion; its statistics follow it
    mask = entry.study.mask
    rows, cols = np.nonzero(mask)
    assert (view.roi.pos().x(), view.roi.pos().y()) == (cols.min(), rows.min())
    view.roi.setPos((2, 3))
    view.roi.setSize((10, 8))
    stats = view.roi_stats()
    expected = pm.region_stats(2, 3, 10, 8)
    assert stats == expected and f"L2 {expected.l2:.4f}" in view.roi_label.text()
    # inside vs outside the lesion
    le = pm.lesion_energy()
    assert le is not None and le.inside_pixels == int(mask.sum())
    assert f"{100 * le.inside_fraction:.1f}% of ‖δ‖² inside" in view.lesion_label.text()


def test_cancel_stops_a_running_job_within_one_iteration(qtbot, window, tmp_path, ultrasound_file, open_study):
    open_study([ultrasound_file()])
    window.panel.set_attack("pgd")
    window.panel.set_params(steps=10000, alpha=0.001, eps=0.05)
    seen = []

    def on_step(event):
        seen.append(event.step)
        if len(seen) == 1:
            window.cancel_run()
            seen.append(("cancelled at", time.perf_counter()))

    window.runner.progress.connect(on_step)
    with qtbot.waitSignals([window.runner.cancelled, window.runner.finished], timeout=60000):
        assert window.run_attack()
        assert not window.run_action.isEnabled() and window.panel.cancel_button.isEnabled()
    steps = [s for s in seen if isinstance(s, int)]
    assert steps[0] == 1 and len(steps) <= 3  # the core checks the token after every step
    assert window.history.entries == [] and window.errors == []
    assert window.panel.run_button.isEnabled() and not window.panel.cancel_button.isEnabled()
    assert "cancelled" in window.monitor.title.text()


@pytest.fixture(scope="module")
def tiny_sd_folder(tmp_path_factory):
    """A tiny seeded Stable-Diffusion-format folder (tests/tiny_sd.py), loaded like any backbone."""
    from tests.tiny_sd import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd")


def test_cancel_a_p2p_job_on_a_tiny_backbone(qtbot, window, tiny_sd_folder, ultrasound_file, open_study):
    folder = tiny_sd_folder
    open_study([ultrasound_file()])
    panel = window.panel
    assert panel.set_attack("p2p")
    assert panel.backbone_combo.isEnabled()
    panel.add_backbone(str(folder))
    panel.set_params(steps=2000, early_stop=False)
    first = []
    window.runner.progress.connect(lambda ev: (first.append(ev), window.cancel_run() if len(first) == 1 else None))
    with qtbot.waitSignals([window.runner.cancelled, window.runner.finished], timeout=120000):
        assert window.run_attack()
    assert 1 <= len(first) <= 3 and first[0].total == 2000
    assert window.history.entries == []


def test_p2p_result_shows_the_learned_prompts_nearest_words(qtbot, window, tiny_sd_folder, ultrasound_file, run_attack,
                                                            open_study):
    folder = tiny_sd_folder
    open_study([ultrasound_file()])
    window.panel.set_attack("p2p")
    window.panel.add_backbone(str(folder))
    entry = run_attack("p2p", timeout=120000, steps=2, early_stop=False)
    assert entry is not None, window.errors
    words = entry.result.info["nearest_words"]
    assert words and "nearest words" in window.results.notes.text()
    assert words[0]["token"] in window.results.notes.text()
    assert entry.backbone_spec == str(folder)


def test_a_failing_attack_shows_an_error_dialog_and_the_app_goes_on(qtbot, window, failing_attack, ultrasound_file,
                                                                    run_attack, open_study):
    open_study([ultrasound_file()])
    window.panel.refresh_attacks()
    assert window.panel.set_attack(failing_attack)
    with qtbot.waitSignals([window.runner.failed, window.runner.finished], timeout=30000):
        assert window.run_attack()
    box = window.last_error_dialog
    from PySide6.QtCore import Qt

    # shown with open(): window-modal over the main window, without a blocking exec() loop
    assert box is not None and box.isVisible()
    assert box.windowModality() == Qt.WindowModality.WindowModal and box.parent() is window
    assert "the model exploded on purpose" in box.informativeText()
    assert "Traceback" in box.detailedText() and "RuntimeError" in box.detailedText()
    assert any("exploded" in m for _, m in window.errors)
    assert "exploded" in window.log_panel.toPlainText()
    box.close()
    # the app still works
    assert window.panel.run_button.isEnabled()
    entry = run_attack("fgsm")
    assert entry is not None and entry.result.attack == "fgsm"


def test_a_bad_model_is_a_readable_error(qtbot, window, tmp_path, ultrasound_file, open_study):
    card = tmp_path / "card.json"
    card.write_text('{"name": "broken", "architecture": "squeezenet1_1", "classes": ["a", "b"], '
                    '"weights": "missing.safetensors"}')
    open_study([ultrasound_file()])
    window.panel.add_classifier(str(card))
    with qtbot.waitSignal(window.runner.finished, timeout=30000):
        assert window.run_attack()
    box = window.last_error_dialog
    assert "not found" in box.informativeText() and box.detailedText() == ""  # a user error: no traceback


def test_the_event_loop_keeps_answering_during_a_run(qtbot, window, ultrasound_file, open_study):
    """A 50 ms heartbeat timer keeps firing on time while the attack iterates on the worker.

    Measured between the first and the last step event (model loading before and the result
    display after are one-off GUI work). The 95th percentile must stay under 100 ms late; the
    single worst beat is only bounded loosely, because on a shared, overloaded CPU the OS
    alone can delay any thread by a few hundred ms.
    """
    from PySide6.QtCore import QTimer

    open_study([ultrasound_file()])
    window.panel.set_attack("pgd")
    window.panel.set_params(steps=60, alpha=0.005)
    beats: list[tuple[float, float]] = []
    steps: list[float] = []
    last = [time.perf_counter()]

    def beat():
        now = time.perf_counter()
        beats.append((now, now - last[0] - 0.050))
        last[0] = now

    window.runner.progress.connect(lambda _ev: steps.append(time.perf_counter()))
    timer = QTimer()
    timer.setInterval(50)
    timer.timeout.connect(beat)
    timer.start()
    with qtbot.waitSignal(window.runner.finished, timeout=120000):
        assert window.run_attack()
    timer.stop()
    assert window.current_entry() is not None and len(steps) == 60
    late = sorted(lateness for when, lateness in beats if steps[0] < when <= steps[-1])
    assert len(late) >= 5, "the run was too short to measure"
    p95 = late[int(0.95 * (len(late) - 1))]
    assert p95 < 0.100, f"heartbeat 95th percentile {p95 * 1000:.0f} ms late (worst {late[-1] * 1000:.0f} ms)"
    assert late[-1] < 1.0, f"heartbeat stalled for {late[-1] * 1000:.0f} ms"


def test_closing_during_a_run_asks_then_cancels_and_waits(qtbot, window, ultrasound_file, open_study):
    open_study([ultrasound_file()])
    window.panel.set_attack("pgd")
    window.panel.set_params(steps=10000, alpha=0.001)
    asked = []
    window.ask_before_close = True
    window.confirm_close = lambda: asked.append("no") or False
    with qtbot.waitSignal(window.runner.progress, timeout=30000):
        window.run_attack()
    assert not window.close()  # refused: the job goes on
    assert asked == ["no"] and window.isVisible() and window.runner.is_running()
    window.confirm_close = lambda: asked.append("yes") or True
    with qtbot.waitSignals([window.runner.cancelled, window.runner.finished], timeout=30000):
        window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
    assert asked == ["no", "yes"] and not window.runner.is_running() and window.history.entries == []


def test_history_shows_runs_again_and_compares_two(qtbot, window, ultrasound_file, run_attack, open_study):
    open_study([ultrasound_file()])
    first = run_attack("fgsm", eps=0.01)
    second = run_attack("fgsm", eps=0.04)
    history = window.history
    assert [e.number for e in history.entries] == [1, 2]
    assert window.results.entry is second
    history.select(1)
    assert window.results.entry is first
    np.testing.assert_array_equal(window.results.perturbation.delta, first.result.perturbation)
    history.select(1, 2)
    assert history.compare_button.isEnabled()
    history.compare_button.click()
    assert window.tabs.currentWidget() is window.compare
    assert window.compare.entries == (first, second)
    left, right = window.compare.columns
    lo_l, hi_l = left["heatmap"].image_item.getLevels()
    assert (lo_l, hi_l) == tuple(right["heatmap"].image_item.getLevels())  # one shared colour scale
    assert hi_l == pytest.approx(max(np.abs(first.result.perturbation.mean(axis=2)).max(),
                                     np.abs(second.result.perturbation.mean(axis=2)).max()), rel=1e-5)
    assert left["metrics"].value("ssim") == f"{first.result.metrics['ssim']:.4f}"


def test_exports_write_all_files_or_none(qtbot, window, tmp_path, ultrasound_file, run_attack, open_study):
    import json

    from p2p_desktop.audit import default_log_path, verify_log

    source = tmp_path / "study"
    source.mkdir()
    study_file = source / "us.dcm"
    study_file.write_bytes(ultrasound_file().read_bytes())
    open_study([study_file])
    run_attack("fgsm")
    log_path = default_log_path()
    records_before = len(log_path.read_text().splitlines()) if log_path.exists() else 0
    out = tmp_path / "out"
    with qtbot.waitSignal(window.export_runner.finished, timeout=30000):
        assert window.export_png(str(out))
    names = sorted(Path(p).name for p in window.last_export)
    assert names == ["us_fgsm_adv.png", "us_fgsm_perturbation.npy"]
    np.testing.assert_array_equal(np.load(out / "us_fgsm_perturbation.npy"), window.current_entry().result.perturbation)
    # every export is recorded in the (test-private) audit log, with its files' hashes
    lines = log_path.read_text().splitlines()
    assert len(lines) == records_before + 1
    record = json.loads(lines[-1])
    assert record["event"] == "export" and record["data"]["what"] == "png"
    assert sorted(Path(o["path"]).name for o in record["data"]["outputs"]) == names
    assert verify_log(log_path).ok
    # refused inside the study's folder: an error dialog, nothing written
    with qtbot.waitSignal(window.export_runner.finished, timeout=30000):
        assert window.export_png(str(source / "inside"))
    assert "inside the input study" in window.last_error_dialog.informativeText()
    assert not (source / "inside").exists()
    assert window.export_dicom_action.isEnabled()
    with qtbot.waitSignal(window.export_runner.finished, timeout=60000):
        assert window.export_dicom(str(tmp_path / "dcm"), deidentify=True)
    assert [Path(p).suffix for p in window.last_export] == [".dcm"]
    assert Path(window.last_export[0]).name.startswith("deid-")  # no identifying file name
    import pydicom

    ds = pydicom.dcmread(window.last_export[0])
    assert ds.PatientIdentityRemoved == "YES"
    with qtbot.waitSignal(window.export_runner.finished, timeout=120000):
        assert window.export_report(str(tmp_path / "report"), formats=("html",))
    assert window.errors[-1][0].startswith("PNG")  # only the refused export failed
    kinds = {Path(p).name.rsplit("_", 1)[-1] for p in window.last_export}
    assert {"adv.png", "perturbation.npy", "provenance.json", "result.json", "report.html"} <= kinds


def test_batch_view_runs_evaluate_and_shows_the_table(qtbot, window, tmp_path, classifier_name, make_busi_folder):
    from p2p_desktop.gui.batch import evaluate_function

    batch = window.batch
    if evaluate_function() is None:
        assert not batch.run_button.isEnabled() and "not available" in batch.run_button.toolTip()
        return
    root = make_busi_folder(tmp_path / "busi")
    batch.dataset_edit.setText(str(root))
    batch.out_edit.setText(str(tmp_path / "eval"))
    for lst, wanted in ((batch.attack_list, {"fgsm"}), (batch.classifier_list, {classifier_name})):
        for i in range(lst.count()):
            from PySide6.QtCore import Qt

            lst.item(i).setCheckState(Qt.CheckState.Checked if lst.item(i).text() in wanted
                                      else Qt.CheckState.Unchecked)
    batch.limit_spin.setValue(1)
    progress = []
    batch.runner.progress.connect(progress.append)
    with qtbot.waitSignal(batch.runner.finished, timeout=120000):
        assert batch.start()
        assert not window.panel.run_button.isEnabled()  # one heavy job at a time
    assert window.errors == [], window.errors
    assert progress and progress[-1].step == progress[-1].total  # p2p_desktop.progress.Progress events
    assert batch.rows and batch.rows[0]["attack"] == "fgsm" and batch.rows[0]["classifier"] == classifier_name
    assert batch.table.rowCount() == len(batch.rows)
    batch.table_combo.setCurrentIndex(1)
    assert batch.table.rowCount() == len(batch.last_result.rows)
    assert window.panel.run_button.isEnabled()


def test_smoke_test_driver_produces_a_screenshot(qtbot, window, tmp_path):
    from PySide6.QtGui import QImage

    from p2p_desktop.gui.app import run_smoke_test

    window.load_demo()
    shot = tmp_path / "shot.png"
    ok, message = run_smoke_test(window, str(shot), timeout_s=60)
    assert ok, message
    image = QImage(str(shot))
    assert not image.isNull() and image.width() == window.width()
    assert window.tabs.currentWidget() is window.results and window.history.entries


def test_run_app_smoke_test_exit_code(qtbot, settings, no_thread_leak, tmp_path, capsys):
    """``p2p-desktop --smoke-test --screenshot FILE`` end to end, in-process (demo bundle)."""
    from p2p_desktop.gui.app import run_app
    from p2p_desktop.gui.attack_panel import DEFAULT_CLASSIFIER
    from p2p_desktop.models import registry

    shot = tmp_path / "smoke" / "window.png"
    code = run_app(smoke_test=True, screenshot=str(shot))
    out = capsys.readouterr()
    if DEFAULT_CLASSIFIER not in registry.names("classifier"):
        assert code == 1 and "no classifier registered" in out.err
        return
    assert code == 0, out.err
    assert "smoke test passed" in out.out and shot.is_file() and shot.stat().st_size > 10000
