"""The main window without running attacks: first start, settings, study browser, viewer, forms."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytestmark = pytest.mark.gui


def _open(qtbot, window, paths):
    with qtbot.waitSignal(window.browser.loading_finished, timeout=20000):
        window.open_paths(paths)


def _tree_texts(node, depth=0):
    out = [(depth, node.text(0), node.text(1))]
    for i in range(node.childCount()):
        out += _tree_texts(node.child(i), depth + 1)
    return out


def _all_nodes(tree):
    out = []
    for i in range(tree.topLevelItemCount()):
        out += _tree_texts(tree.topLevelItem(i))
    return out


def test_first_start_opens_a_sample_with_demo_choices(qtbot, settings, classifier_name, no_thread_leak):
    from p2p_desktop.gui.attack_panel import DEFAULT_BACKBONE, DEFAULT_CLASSIFIER
    from p2p_desktop.gui.main_window import MainWindow, demo_sample_paths

    w = MainWindow(settings)  # first start: nothing in the settings file
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.current_study is not None, timeout=20000)
    expected = demo_sample_paths()
    if expected:  # the bundled demo sample, a DICOM study first
        from p2p_desktop.paths import samples_dir

        assert samples_dir() in Path(w.current_study.path).parents
        assert w.current_study.kind == ("dicom" if any(p.name == "dicom" for p in expected) else "image")
        assert not w.viewer.notice.isVisibleTo(w)
    else:  # no bundled sample yet: pydicom's ultrasound example, with a message saying so
        assert w.current_study.path.name == "examples_rgb_color.dcm"
        assert "resources/samples" in w.viewer.notice.text() and w.viewer.notice.isVisibleTo(w)
    assert w.panel.backbone_spec() == DEFAULT_BACKBONE
    from p2p_desktop.models import registry

    if DEFAULT_CLASSIFIER in registry.names("classifier"):
        assert w.panel.classifier_spec() == DEFAULT_CLASSIFIER
    assert w.panel.classifier_spec()  # something is selected
    assert w.panel.attack_name() == "fgsm"
    assert w.panel.run_button.isEnabled() and w.run_action.isEnabled()
    assert w.settings.path.startswith(str(Path(settings.path).parent))


def test_settings_persist_across_starts(qtbot, settings, classifier_name, no_thread_leak, tmp_path):
    from p2p_desktop.gui.main_window import MainWindow
    from p2p_desktop.gui.settings import AppSettings

    w = MainWindow(settings, load_demo=False)
    qtbot.addWidget(w)
    w.panel.set_device("cpu")
    w.panel.set_attack("pgd")
    w.panel.set_classifier(classifier_name)
    w.settings.add_recent_path(tmp_path)
    w.resize(700, 500)  # fits the offscreen screen (800x600), so restoring does not clamp it
    w.show()
    w.monitor_dock.hide()
    w.close()
    geometry = w.saveGeometry()
    again = MainWindow(AppSettings.at(settings.path), load_demo=False)
    qtbot.addWidget(again)
    assert again.panel.device() == "cpu"
    assert again.panel.attack_name() == "pgd"
    assert again.panel.classifier_spec() == classifier_name
    assert str(tmp_path) in again.settings.recent_paths
    # the offscreen screen (800x600) is smaller than the window, so compare what was saved
    assert AppSettings.at(settings.path).window_state()[0] == geometry
    assert again.monitor_dock.isHidden() and not again.history_dock.isHidden()


def test_dicom_ultrasound_tree_viewer_and_window_level(qtbot, window, ultrasound_file):
    path = ultrasound_file()
    _open(qtbot, window, [path])
    nodes = _all_nodes(window.browser.tree)
    depths = [d for d, _, _ in nodes]
    assert depths == [0, 1, 2, 3]  # Patient -> Study -> Series -> Instance
    assert nodes[0][1].startswith("Patient ")
    assert "US" in nodes[2][1]  # the series shows its modality
    assert path.name in nodes[3][1] and "320×240" in nodes[3][2]
    qtbot.waitUntil(lambda: window.current_study is not None)
    study = window.current_study
    assert study.kind == "dicom" and study.image.shape == (240, 320, 3)
    attrs = {window.browser.attributes.item(r, 0).text(): window.browser.attributes.item(r, 1).text()
             for r in range(window.browser.attributes.rowCount())}
    assert attrs["Modality"] == "US" and attrs["Study UID"] == study.metadata.study_uid
    # the instance has a thumbnail
    leaf = window.browser.tree.topLevelItem(0).child(0).child(0).child(0)
    assert not leaf.icon(0).isNull()
    # window / level in stored units maps onto the display levels
    viewer = window.viewer
    viewer.set_window(100.0, 50.0)  # 8-bit: 75..125 of 0..255
    lo, hi = viewer.pane.image_item.getLevels()
    assert lo == pytest.approx(75 / 255) and hi == pytest.approx(125 / 255)
    viewer.reset_window()
    assert viewer.pane.image_item.getLevels() == pytest.approx((0.0, 1.0))
    # pixel readout shows the stored value under the mouse position
    viewer._on_hover(10, 20)
    stored = ", ".join(f"{v:g}" for v in study.stored[10, 20])
    assert viewer.readout.text() == f"x 20, y 10: {stored}"


def test_png_dataset_by_class_with_masks_and_unreadable_files(qtbot, window, tmp_path, make_busi_folder):
    root = make_busi_folder(tmp_path / "busi")
    _open(qtbot, window, [root])
    browser = window.browser
    assert len(browser.items) == 4
    texts = {t for _, t, _ in _all_nodes(browser.tree)}
    assert {"Dataset busi", "benign", "malignant", "Unreadable files"} <= texts
    unreadable = {p.name: u.reason for p, u in browser.unreadable.items()}
    assert set(unreadable) == {"empty.png", "notes.png"}
    assert "empty" in unreadable["empty.png"]
    # the reason is shown in the tree next to the file
    rows = {t: d for _, t, d in _all_nodes(browser.tree)}
    assert rows["empty.png"] == unreadable["empty.png"]
    # a study with a mask: class label and mask overlay in the viewer
    assert browser.select_path(root / "benign" / "benign (1).png")
    qtbot.waitUntil(lambda: window.current_study is not None and window.current_study.path.name == "benign (1).png")
    study = window.current_study
    assert study.label == "benign" and study.mask is not None
    assert window.viewer.pane.overlay_item.isVisible()
    window.viewer.mask_check.setChecked(False)
    assert not window.viewer.pane.overlay_item.isVisible()


def test_cine_frames_with_slider(qtbot, window, pydicom_file):
    path = pydicom_file("SC_rgb_rle_2frame.dcm")
    _open(qtbot, window, [path])
    qtbot.waitUntil(lambda: window.current_study is not None)
    assert window.current_study.n_frames == 2
    assert window.viewer.frame_row.isVisibleTo(window.viewer)
    first = window.current_study.image.copy()
    window.viewer.frame_slider.setValue(1)
    qtbot.waitUntil(lambda: window.current_study.frame_index == 1, timeout=5000)
    assert not np.array_equal(first, window.current_study.image)


def test_drop_opens_files(qtbot, window, ultrasound_file):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(ultrasound_file()))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.browser.loading_finished, timeout=20000):
        window.dropEvent(event)
    assert len(window.browser.items) == 1
    assert str(ultrasound_file()) in window.settings.recent_paths


def test_parameter_form_is_generated_from_the_config_and_validated(qtbot, window):
    from p2p_desktop.attacks.pgd import PGDConfig
    from p2p_desktop.config import field_specs

    panel = window.panel
    assert panel.set_attack("pgd")
    specs = {s.name: s for s in field_specs(PGDConfig)}
    assert set(panel.form.rows) == set(specs) - {"seed", "target"}
    for name, row in panel.form.rows.items():
        assert row.editor.toolTip().startswith(specs[name].help)
    assert not panel.backbone_combo.isEnabled()  # PGD needs no backbone
    # a bad value: the config's own message beside the field, Run disabled
    panel.form.rows["eps"].editor.setText("-1")
    assert not panel.run_button.isEnabled()
    assert panel.form.rows["eps"].error.isVisibleTo(panel)
    assert "greater than 0" in panel.form.rows["eps"].error.text()
    panel.form.rows["eps"].editor.setText("abc")
    assert "not a valid float" in panel.form.rows["eps"].error.text()
    # a cross-field check (PGDConfig.validate) lands on the field it names
    panel.form.rows["eps"].editor.setText("0.01")
    panel.form.rows["alpha"].editor.setText("0.5")
    assert panel.form.rows["alpha"].error.text() and not panel.form.rows["eps"].error.text()
    panel.form.rows["alpha"].editor.setText("0.005")
    assert panel.run_button.isEnabled() and not panel.form.rows["alpha"].error.isVisibleTo(panel)
    attack = panel.build_attack()
    assert attack.config.eps == 0.01 and attack.config.alpha == 0.005
    # target classes come from the classifier's card
    assert [panel.target_combo.itemData(i) for i in range(panel.target_combo.count())] == \
        [None, "benign", "malignant", "normal"]


def test_presets_and_backbone_follow_the_attack(qtbot, window):
    from p2p_desktop.attacks.registry import available, get

    names = [window.panel.attack_combo.itemData(i) for i in range(window.panel.attack_combo.count())]
    assert names == [s.name for s in available()]
    with_presets = next((s.name for s in available() if getattr(get(s.name), "presets", None)), None)
    assert with_presets is not None  # the built-in diffusion attacks have presets
    panel = window.panel
    panel.set_attack(with_presets)
    cls = get(with_presets)
    assert panel.backbone_combo.isEnabled() == cls.requires_backbone
    presets = [panel.preset_combo.itemData(i) for i in range(1, panel.preset_combo.count())]
    assert presets == list(cls.presets)
    preset = presets[-1]
    panel.preset_combo.setCurrentIndex(panel.preset_combo.findData(preset))
    config = panel.build_attack().config
    for key, value in cls.presets[preset].items():
        if key in panel.form.rows:
            assert getattr(config, key) == value


def test_plugin_attacks_appear_and_broken_ones_are_reported(qtbot, window):
    from p2p_desktop.attacks import registry

    spec = registry.AttackSpec("gui-test-broken", "tests.does_not_exist:Nothing", "a broken plugin", source="plugin")
    registry.register(spec)
    try:
        window.panel.refresh_attacks()
        assert window.panel.set_attack("gui-test-broken")
        assert "could not be loaded" in window.panel.run_error.text()
        assert not window.panel.run_button.isEnabled()
        assert window.panel.set_attack("fgsm") and window.panel.run_button.isEnabled()
    finally:
        registry._specs.pop("gui-test-broken", None)
