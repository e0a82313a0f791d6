"""Fixtures for the tests that open the window (offscreen Qt): temporary settings, a small
classifier, the shown main window, a BUSI-layout folder, and a check that fails a test leaving a
job thread running (napari's ``conftest.py`` does the same for its Qt tests)."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

import numpy as np
import pytest

# before any test module of this folder imports Qt
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

CLASSES = ("benign", "malignant", "normal")
DEMO_CLASSIFIER = "demo-squeezenet1_1"
TEST_CLASSIFIER = "gui-test-squeezenet"


def _save_seeded_squeezenet(folder: Path) -> Path:
    """An untrained, seeded torchvision SqueezeNet 1.1 at 64 px (fast on CPU), saved as a model
    card + safetensors weights, so it loads through the same code as any user's model."""
    import json

    import torch
    from safetensors.torch import save_file

    from p2p_desktop.hashing import sha256_file
    from p2p_desktop.models.classifier import build_architecture

    torch.manual_seed(0)
    module = build_architecture("squeezenet1_1", len(CLASSES))
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "model.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(weights))
    card = {"name": TEST_CLASSIFIER, "kind": "classifier", "architecture": "squeezenet1_1",
            "classes": list(CLASSES), "input_size": 64, "weights": weights.name, "sha256": sha256_file(weights)}
    (folder / "card.json").write_text(json.dumps(card, indent=2))
    return folder / "card.json"


@pytest.fixture(scope="session")
def classifier_name(tmp_path_factory):
    """The classifier the GUI tests select: the demo SqueezeNet when bundled, else a seeded one
    registered (for this session only) under ``gui-test-squeezenet``."""
    import json

    from p2p_desktop.models import registry

    if DEMO_CLASSIFIER in registry.names("classifier") and registry.verify_entry(registry.find(DEMO_CLASSIFIER)) \
            == "verified":
        yield DEMO_CLASSIFIER
        return
    card = _save_seeded_squeezenet(tmp_path_factory.mktemp("gui-classifier"))
    registry.register(registry.ModelEntry(name=TEST_CLASSIFIER, kind="classifier", path=card,
                                          card=json.loads(card.read_text()), source="test"))
    yield TEST_CLASSIFIER
    registry._extra.pop(TEST_CLASSIFIER, None)  # the registry has no public unregister


@pytest.fixture
def settings(tmp_path):
    """Settings in a temporary INI file (never the user's)."""
    from PySide6.QtCore import QSettings

    from p2p_desktop.gui.settings import AppSettings

    # Even a stray default QSettings() would land in the temporary folder.
    for fmt in (QSettings.Format.IniFormat, QSettings.Format.NativeFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    return AppSettings.at(tmp_path / "settings.ini")


@pytest.fixture(autouse=True)
def collect_earlier_windows():
    """Collect the earlier tests' Qt garbage now, at a safe point.

    A dead window's pyqtgraph menus sit in reference cycles; left to the garbage collector's own
    timing, they were once collected inside a QObject::disconnect of the next test's new window
    (both needing the same Qt mutex): the suite hung in MainWindow.__init__ with no timeout firing
    (py-spy: gc_collect_main -> ~QMenu -> QBasicMutex::lockInternal under QObject::disconnect).
    """
    gc.collect()
    yield


@pytest.fixture(autouse=True)
def no_thread_leak(request):
    """Fail a Qt test (one that uses ``qtbot``) if it leaves a job QThread or a Python thread running."""
    if "qtbot" not in request.fixturenames:
        yield
        return
    qtbot = request.getfixturevalue("qtbot")  # set up first, so it is torn down after this check
    from p2p_desktop.gui.worker import live_threads

    before = set(threading.enumerate())
    yield

    def extra() -> list[threading.Thread]:
        # _DummyThread: Qt threads seen by Python; TMonitor: tqdm's process-wide monitor
        # (started by library code on first use, by design alive until exit)
        return [t for t in threading.enumerate() if t not in before and t.is_alive()
                and not isinstance(t, threading._DummyThread) and type(t).__name__ != "TMonitor"]

    try:
        qtbot.waitUntil(lambda: not live_threads() and not extra(), timeout=10000)
    except Exception:  # noqa: BLE001 - pytest-qt's TimeoutError
        pytest.fail(f"threads left running: Qt jobs {[t.objectName() for t in live_threads()]}, "
                    f"Python {[t.name for t in extra()]}")


@pytest.fixture
def window(qtbot, settings, classifier_name, no_thread_leak):
    """A shown MainWindow without the demo sample, the test classifier selected."""
    from p2p_desktop.gui.main_window import MainWindow

    w = MainWindow(settings, load_demo=False)
    qtbot.addWidget(w)
    w.ask_before_close = False
    w.panel.refresh_models()
    assert w.panel.set_classifier(classifier_name)
    w.panel.set_device("cpu")
    w.resize(1400, 900)
    w.show()
    yield w
    assert w.shutdown(30000), "a job did not stop"


@pytest.fixture
def make_busi_folder():
    """``make_busi_folder(root, size=48) -> root``: a small BUSI-layout dataset, benign/ and
    malignant/ PNGs (one with a lesion mask), plus an empty file and a text file renamed .png,
    which must be listed as unreadable."""

    def make(root: Path, size: int = 48) -> Path:
        from PIL import Image

        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:size, :size]
        for cls, sign in (("benign", 1), ("malignant", -1)):
            folder = root / cls
            folder.mkdir(parents=True)
            for i in range(2):
                disc = (yy - size / 2) ** 2 + (xx - size / 2 - 4 * i) ** 2 < (size / 5) ** 2
                img = np.clip(0.5 + 0.08 * rng.standard_normal((size, size)) + 0.2 * sign * disc, 0, 1)
                Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{cls} ({i + 1}).png")
                if i == 0:
                    Image.fromarray((disc * 255).astype(np.uint8)).save(folder / f"{cls} ({i + 1})_mask.png")
        (root / "benign" / "empty.png").write_bytes(b"")
        (root / "malignant" / "notes.png").write_text("not an image")
        return root

    return make


@pytest.fixture
def run_attack(qtbot, window):
    """``run_attack(attack="fgsm", timeout=60000, **params) -> HistoryEntry``: run an attack on the
    window's current study with these parameters, wait for it to finish, return its history entry."""

    def run(attack: str = "fgsm", timeout: int = 60000, **params):
        window.panel.set_attack(attack)
        window.panel.set_params(**params)
        with qtbot.waitSignal(window.runner.finished, timeout=timeout):
            assert window.run_attack()
        return window.current_entry()

    return run


@pytest.fixture
def open_study(qtbot, window):
    """``open_study(paths)``: open these files in the window and wait until they are listed and a
    study is shown."""

    def open_paths(paths, timeout: int = 30000) -> None:
        with qtbot.waitSignal(window.browser.loading_finished, timeout=timeout):
            window.open_paths(paths)
        qtbot.waitUntil(lambda: window.current_study is not None, timeout=5000)

    return open_paths
