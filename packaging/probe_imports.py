"""List the lazily-imported modules the app really uses (hidden imports for the PyInstaller spec).

diffusers and transformers resolve their public names through lazy modules, which static
analysis cannot follow. This script imports every ``p2p_desktop`` module, touches the
diffusers/transformers names the app uses, and prints (as JSON) the modules under the given
top-level packages that ended up in ``sys.modules``.

    python packaging/probe_imports.py diffusers transformers
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys

__all__ = ["DIFFUSERS_NAMES", "TRANSFORMERS_NAMES", "probe"]

# Every diffusers / transformers name the app's code paths resolve (models/backbone.py,
# training/backbone.py, single-file checkpoints through StableDiffusionPipeline).
DIFFUSERS_NAMES = ("AutoencoderKL", "UNet2DConditionModel", "DDPMScheduler", "DDIMScheduler",
                   "PNDMScheduler", "StableDiffusionPipeline")
TRANSFORMERS_NAMES = ("CLIPTextModel", "CLIPTextConfig", "CLIPTokenizer", "CLIPTokenizerFast",
                      "CLIPVisionModelWithProjection", "CLIPImageProcessor")
EXTRA_MODULES = ("diffusers.loaders.single_file_utils", "diffusers.pipelines.stable_diffusion.safety_checker")


def probe(prefixes: tuple[str, ...]) -> list[str]:
    """Modules under ``prefixes`` loaded once the app's code and lazy names are imported."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
    import torch  # noqa: F401 - first, as in the frozen entry script

    import p2p_desktop

    for info in pkgutil.walk_packages(p2p_desktop.__path__, "p2p_desktop."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # noqa: BLE001 - report and go on; the build decides
            print(f"probe: cannot import {info.name}: {exc}", file=sys.stderr)
    import diffusers
    import transformers

    for mod, names in ((diffusers, DIFFUSERS_NAMES), (transformers, TRANSFORMERS_NAMES)):
        for name in names:
            try:
                getattr(mod, name)
            except Exception as exc:  # noqa: BLE001
                print(f"probe: {mod.__name__}.{name}: {exc}", file=sys.stderr)
    for name in EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001
            print(f"probe: cannot import {name}: {exc}", file=sys.stderr)
    return sorted(m for m in list(sys.modules) if m.split(".")[0] in prefixes)


if __name__ == "__main__":
    json.dump(probe(tuple(sys.argv[1:]) or ("diffusers", "transformers")), sys.stdout)
