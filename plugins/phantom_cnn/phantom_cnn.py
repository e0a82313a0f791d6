"""Example classifier plugin: a small CNN that is not a torchvision architecture.

``load(device)`` returns a :class:`p2p_desktop.models.classifier.Classifier`; the weights are
``weights.safetensors`` beside this file (trained by ``train.py`` on synthetic phantoms).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
CLASSES = ("benign", "malignant", "normal")
INPUT_SIZE = 64


def build():
    """The untrained network: four conv/BN/ReLU/max-pool blocks, global pooling, a linear head."""
    import torch.nn as nn

    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    return nn.Sequential(*block(1, 16), *block(16, 32), *block(32, 64), *block(64, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, len(CLASSES)))


def card():
    """The model card: classes, 64 px single-channel input, normalisation, the weights beside this file."""
    from p2p_desktop.models.classifier import ModelCard

    return ModelCard(name="phantom-cnn", architecture="phantom-cnn (plugin)", classes=CLASSES,
                     weights=str(HERE / "weights.safetensors"), input_size=INPUT_SIZE, mean=(0.5,), std=(0.25,),
                     in_channels=1)


def load(device: str = "cpu"):
    """The trained classifier on ``device``, its card carrying the weights' SHA-256."""
    from p2p_desktop.hashing import sha256_file
    from p2p_desktop.models.classifier import Classifier, ModelCard
    from p2p_desktop.models.weights import load_state_dict

    c = card()
    module = build()
    module.load_state_dict(load_state_dict(c.weights_path))
    c = ModelCard(**{**c.__dict__, "sha256": sha256_file(c.weights_path)})
    return Classifier(module, c, device=device)
