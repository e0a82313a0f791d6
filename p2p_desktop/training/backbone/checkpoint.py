"""Resumable training state: a scratch folder whose ``current/`` is replaced as a whole on each
save (weights as safetensors, optimizer and RNG state, ``state.json`` with the plan's key)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

__all__ = ["Checkpoint"]


def _save_state_dict(module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}, str(path))


def _load_state_dict(module, path: Path) -> None:
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path)))


class Checkpoint:
    """Resumable training state in a scratch folder (replaced atomically on each save)."""

    def __init__(self, folder: Path, plan):
        self.folder = Path(folder)
        self.plan = plan

    @property
    def current(self) -> Path:
        return self.folder / "current"

    def load_state(self) -> dict | None:
        f = self.current / "state.json"
        if not f.is_file():
            return None
        state = json.loads(f.read_text(encoding="utf-8"))
        if state.get("plan_key") != self.plan.key():
            print(f"[backbone] checkpoint in {self.folder} is from another plan; starting afresh",
                  file=sys.stderr)
            return None
        return state

    def save(self, state: dict, modules: dict, optimizer, generator) -> None:
        import torch

        tmp = self.folder / "writing"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, module in modules.items():
            _save_state_dict(module, tmp / f"{name}.safetensors")
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"generator": generator.get_state()}, tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "plan_key": self.plan.key()}, indent=1),
                                        encoding="utf-8")
        old = self.folder / "previous"
        shutil.rmtree(old, ignore_errors=True)
        if self.current.exists():
            os.replace(self.current, old)
        os.replace(tmp, self.current)
        shutil.rmtree(old, ignore_errors=True)

    def restore(self, modules: dict, optimizer, generator) -> None:
        import torch

        for name, module in modules.items():
            f = self.current / f"{name}.safetensors"
            if f.is_file():
                _load_state_dict(module, f)
        if optimizer is not None and (self.current / "optimizer.pt").is_file():
            optimizer.load_state_dict(torch.load(self.current / "optimizer.pt", weights_only=True))
        rng = torch.load(self.current / "rng.pt", weights_only=True)
        generator.set_state(rng["generator"])
