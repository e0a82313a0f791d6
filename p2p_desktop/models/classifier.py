"""Classifier wrapper: a torch module with its classes, input size, normalisation, channels.

The model card JSON is the canonical description::

    {"name": "demo-squeezenet1_1", "kind": "classifier", "architecture": "squeezenet1_1",
     "classes": ["benign", "malignant", "normal"], "input_size": 128,
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
     "weights": "model.safetensors", "sha256": "..."}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from p2p_desktop.errors import InputError, ModelError
from p2p_desktop.hashing import sha256_file

__all__ = [
    "ARCHITECTURES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelCard",
    "Classifier",
    "build_architecture",
    "load_classifier",
    "classifier_sha256",
    "NonFiniteLogits",
]

class NonFiniteLogits(ModelError):
    """The classifier computed NaN or Inf logits (broken weights, or an input it overflows on)."""


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ARCHITECTURES = (
    "densenet121",
    "resnet18",
    "resnet34",
    "resnet50",
    "squeezenet1_1",
    "efficientnet_b0",
    "mobilenet_v3_small",
)


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to rebuild and trust a classifier."""

    name: str
    architecture: str
    classes: tuple[str, ...]
    weights: str  # path relative to the card's folder, or absolute
    input_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    in_channels: int = 3
    sha256: str | None = None
    kind: str = "classifier"
    extra: dict[str, Any] = field(default_factory=dict)
    card_path: str | None = None  # where the card was read from (not serialised)

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise ModelError(f"model card {self.name!r}: needs at least two classes, got {list(self.classes)}")
        if len(set(self.classes)) != len(self.classes):
            raise ModelError(f"model card {self.name!r}: duplicate class names {list(self.classes)}")
        if not (16 <= int(self.input_size) <= 2048):
            raise ModelError(f"model card {self.name!r}: input_size {self.input_size} outside 16..2048")
        if len(self.mean) != len(self.std) or len(self.mean) not in (1, 3):
            raise ModelError(f"model card {self.name!r}: mean/std must both have 1 or 3 values")
        if any(s <= 0 for s in self.std):
            raise ModelError(f"model card {self.name!r}: std values must be > 0")
        if self.in_channels not in (1, 3):
            raise ModelError(f"model card {self.name!r}: in_channels must be 1 or 3")

    @property
    def weights_path(self) -> Path:
        p = Path(self.weights)
        if not p.is_absolute() and self.card_path:
            p = Path(self.card_path).parent / p
        return p

    @classmethod
    def from_json(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"model card not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ModelError(f"model card {path.name} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ModelError(f"model card {path.name} must be a JSON object")
        return cls.from_dict(data, card_path=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], card_path: str | None = None) -> ModelCard:
        known = {"name", "architecture", "classes", "weights", "input_size", "mean", "std",
                 "in_channels", "sha256", "kind"}
        missing = [k for k in ("architecture", "classes", "weights") if k not in data]
        if missing:
            where = Path(card_path).name if card_path else "model card"
            raise ModelError(f"{where}: missing field(s) {', '.join(missing)}")
        extra = {k: v for k, v in data.items() if k not in known}
        where = Path(card_path).name if card_path else "model card"
        classes = data["classes"]
        if not isinstance(classes, list) or not 2 <= len(classes) <= MAX_CLASSES:
            count = len(classes) if isinstance(classes, list) else type(classes).__name__
            raise ModelError(f"{where}: 'classes' must be a list of 2 to {MAX_CLASSES} names, got {count}; "
                             "refused before building the model")
        size = data.get("input_size", 224)
        if isinstance(size, bool) or not isinstance(size, int) or not MIN_INPUT <= size <= MAX_INPUT:
            raise ModelError(f"{where}: 'input_size' must be a whole number from {MIN_INPUT} to {MAX_INPUT}, "
                             f"got {size!r}")
        if data.get("in_channels", 3) not in (1, 3):
            raise ModelError(f"{where}: 'in_channels' must be 1 or 3, got {data.get('in_channels')!r}")
        try:
            return cls(
                name=str(data.get("name") or Path(str(data["weights"])).stem),
                architecture=str(data["architecture"]),
                classes=tuple(str(c) for c in data["classes"]),
                weights=str(data["weights"]),
                input_size=int(data.get("input_size", 224)),
                mean=tuple(float(v) for v in data.get("mean", IMAGENET_MEAN)),
                std=tuple(float(v) for v in data.get("std", IMAGENET_STD)),
                in_channels=int(data.get("in_channels", 3)),
                sha256=data.get("sha256"),
                kind=str(data.get("kind", "classifier")),
                extra=extra,
                card_path=card_path,
            )
        except (TypeError, ValueError) as exc:
            raise ModelError(f"model card has a malformed field: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("card_path")
        extra = d.pop("extra")
        d["classes"] = list(self.classes)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d.update(extra)
        return d


MAX_CLASSES = 1000  # ImageNet's head; a card asking for millions would exhaust memory while building
MIN_INPUT, MAX_INPUT = 16, 4096


def build_architecture(arch: str, num_classes: int, in_channels: int = 3):
    """An untrained torchvision network with a ``num_classes`` head (no download ever)."""
    import torch.nn as nn
    import torchvision

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= MAX_CLASSES:
        raise ModelError(f"a classifier needs 2 to {MAX_CLASSES} classes, got {num_classes!r}; refused before "
                         "building it")

    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHITECTURES)}")
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if in_channels == 1:
        # Replace the first convolution so the network takes one grey channel.
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d) and module.in_channels == 3:
                new = nn.Conv2d(1, module.out_channels, module.kernel_size, module.stride,
                                module.padding, bias=module.bias is not None)
                parent = model
                parts = name.split(".")
                for p in parts[:-1]:
                    parent = getattr(parent, p)
                setattr(parent, parts[-1], new)
                break
    return model


class Classifier:
    """A frozen classifier that takes images in [0, 1] at any size and channel count.

    ``preprocess`` is differentiable (resize, grey <-> RGB, normalisation), so attacks can
    optimise in the source's own geometry.
    """

    def __init__(self, module, card: ModelCard, device: str = "cpu") -> None:
        import torch

        self.card = card
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        c = card.in_channels
        mean = list(card.mean) * (c if len(card.mean) == 1 else 1)
        std = list(card.std) * (c if len(card.std) == 1 else 1)
        self._mean = torch.tensor(mean[:c], dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        self._std = torch.tensor(std[:c], dtype=torch.float32, device=self.device).view(1, c, 1, 1)

    # -- identity ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.card.name

    @property
    def classes(self) -> tuple[str, ...]:
        return self.card.classes

    @property
    def input_size(self) -> int:
        return int(self.card.input_size)

    def class_index(self, name: str) -> int:
        try:
            return self.classes.index(name)
        except ValueError:
            raise InputError(f"unknown class {name!r}: this classifier knows {', '.join(self.classes)}") from None

    # -- tensors ------------------------------------------------------------------------
    def preprocess(self, x):
        """(B, C, H, W) in [0,1], C in {1,3} -> normalised (B, in_channels, S, S)."""
        import torch.nn.functional as F

        x = x.to(self.device, dtype=torch_float32())
        if x.shape[1] == 1 and self.card.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and self.card.in_channels == 1:
            x = x.mean(dim=1, keepdim=True)
        s = self.input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=False)
        return (x - self._mean) / self._std

    def logits(self, x):
        """The network's logits for a batch in [0,1]; non-finite logits (NaN or Inf: broken weights,
        or an input the network overflows on) raise :class:`ModelError`, so no verdict, gradient or
        probability is ever made of them (the one check that attack, classify, evaluate and the
        desktop app share)."""
        import torch

        out = self.module(self.preprocess(x))
        if not bool(torch.isfinite(out.detach()).all()):
            raise NonFiniteLogits(f"classifier {self.name} returned non-finite logits (NaN or Inf): its weights are "
                             "broken, or the input overflows it; no verdict was made")
        return out

    def probs(self, x):
        import torch

        return torch.softmax(self.logits(x), dim=1)

    def gradient(self, x, label: int):
        """d CE(F(x), label) / dx for a (1, C, H, W) batch in [0,1]."""
        import torch
        import torch.nn.functional as F

        x = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(self.logits(x), torch.tensor([label], device=self.device))
        (grad,) = torch.autograd.grad(loss, x)
        return grad

    # -- numpy convenience ----------------------------------------------------------------
    def predict(self, image: np.ndarray) -> tuple[str, dict[str, float]]:
        """Classify one (H, W, C) float image in [0,1]; returns (label, {class: p})."""
        import torch

        with torch.no_grad():
            p = self.probs(to_tensor(image))[0].cpu().numpy().astype(float)
        return self.classes[int(p.argmax())], {c: float(v) for c, v in zip(self.classes, p)}

    def identity(self) -> dict[str, Any]:
        """Name, architecture and weight hash, for reports and provenance."""
        return {
            "name": self.card.name,
            "architecture": self.card.architecture,
            "classes": list(self.classes),
            "input_size": self.input_size,
            "weights": str(self.card.weights_path),
            "sha256": self.card.sha256,
        }


def torch_float32():
    import torch

    return torch.float32


def to_tensor(image: np.ndarray):
    """(H, W, C) float [0,1] numpy -> (1, C, H, W) float32 tensor."""
    import torch

    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]


def to_numpy(x) -> np.ndarray:
    """(1, C, H, W) tensor -> (H, W, C) float32 numpy."""
    return x.detach().cpu().float()[0].permute(1, 2, 0).numpy().astype(np.float32)


def load_classifier(
    spec: str | Path,
    *,
    arch: str | None = None,
    classes: list[str] | tuple[str, ...] | None = None,
    input_size: int | None = None,
    device: str = "cpu",
    verify_hash: bool = True,
) -> Classifier:
    """Load a classifier from a registered name, a model card JSON, or a weights file.

    A bare weights file needs ``arch`` and ``classes``. The weights' SHA-256 is checked
    against the card when the card records one; a mismatch is refused.
    """
    from p2p_desktop.models.weights import WEIGHT_SUFFIXES, load_state_dict

    spec_str = str(spec)
    path = Path(spec_str)
    card: ModelCard
    if path.suffix.lower() == ".json":
        card = ModelCard.from_json(path)
    elif path.suffix.lower() in WEIGHT_SUFFIXES + (".ckpt", ".bin"):
        if not path.exists():
            raise ModelError(f"weights file not found: {path}")
        if not arch or not classes:
            raise InputError(f"{path.name}: a bare weights file needs --arch NAME and --classes a,b,c")
        card = ModelCard(
            name=path.stem,
            architecture=arch,
            classes=tuple(classes),
            weights=str(path.resolve()),
            input_size=input_size or 224,
        )
    elif path.is_dir() and (path / "card.json").is_file():
        card = ModelCard.from_json(path / "card.json")
    else:
        from p2p_desktop.models.registry import resolve

        entry = resolve(spec_str, "classifier", "a model card .json, or a weights file with --arch and --classes")
        if entry.loader is not None:  # a plugin's own loader
            return entry.loader(device=device)
        return load_classifier(entry.path, device=device, verify_hash=False)  # verified by resolve

    if card.architecture not in ARCHITECTURES:
        raise ModelError(f"{card.name}: unknown architecture {card.architecture!r}: "
                         f"choose one of {', '.join(ARCHITECTURES)}")
    weights = card.weights_path
    if not weights.is_file():
        raise ModelError(f"weights file for {card.name!r} not found: {weights}")
    if verify_hash and card.sha256:
        actual = sha256_file(weights)
        if actual != card.sha256:
            raise ModelError(
                f"{weights.name}: SHA-256 {actual[:12]}… does not match its card ({card.sha256[:12]}…); "
                "the file is corrupted or was replaced"
            )
    if verify_hash and not card.sha256:
        card = ModelCard(**{**asdict(card), "sha256": sha256_file(weights)})
    return classifier_from_state_dict(card, load_state_dict(weights), device=device)


def classifier_sha256(spec: str | Path) -> str | None:
    """The weights' SHA-256 a run of classifier ``spec`` records (as :meth:`Classifier.identity`
    gives it once loaded), without loading the model: for the audit record of a run cancelled or
    failed before its result. The registered entry's or model card's hash, else the weights
    file's; None when ``spec`` names nothing readable (or a plugin that loads itself)."""
    from p2p_desktop.models.weights import WEIGHT_SUFFIXES

    path = Path(str(spec))
    try:
        card_file = path if path.suffix.lower() == ".json" else path / "card.json" if path.is_dir() else None
        if card_file is not None:
            card = ModelCard.from_json(card_file)
            return card.sha256 or (sha256_file(card.weights_path) if card.weights_path.is_file() else None)
        if path.suffix.lower() in WEIGHT_SUFFIXES + (".ckpt", ".bin"):
            return sha256_file(path) if path.is_file() else None
        from p2p_desktop.models.registry import find

        entry = find(str(spec))
        return entry.card.get("sha256") if entry is not None and isinstance(entry.card, dict) else None
    except (InputError, ModelError, OSError, ValueError, TypeError):
        return None


def classifier_from_state_dict(card: ModelCard, state: dict, device: str = "cpu") -> Classifier:
    import torch

    module = build_architecture(card.architecture, len(card.classes), card.in_channels)
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        msg = str(exc)
        if "size mismatch" in msg:
            raise ModelError(
                f"{card.name}: weights do not fit {card.architecture} with {len(card.classes)} classes "
                f"({', '.join(card.classes)}); check --arch and --classes"
            ) from None
        raise ModelError(f"{card.name}: weights do not match architecture {card.architecture}") from None
    return Classifier(module, card, device=device)
