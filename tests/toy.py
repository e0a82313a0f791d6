"""A small trained toy classifier for fast attack tests (seconds on CPU, fully seeded).

Three classes on 32×32 grey images: a bright disc ("benign"), a dark disc ("malignant"),
no disc ("normal") on noisy background. A tiny CNN learns it in ~1-2 s.
"""

from __future__ import annotations

import numpy as np

CLASSES = ("benign", "malignant", "normal")


def toy_image(rng: np.random.RandomState, label: int, size: int = 32) -> np.ndarray:
    img = 0.5 + 0.04 * rng.randn(size, size)
    if label < 2:
        yy, xx = np.mgrid[:size, :size]
        cy, cx = rng.randint(10, size - 10, 2)
        r = rng.uniform(4, 7)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img[disc] += 0.12 if label == 0 else -0.12
    return np.clip(img, 0, 1).astype(np.float32)[:, :, None]


def toy_module(seed: int = 0):
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(16, 3))


def trained_toy_classifier(seed: int = 0, steps: int = 100):
    """A Classifier (32 px, ImageNet normalisation) trained to ~100% on toy images."""
    import torch
    import torch.nn.functional as F

    from p2p_desktop.models.classifier import Classifier, ModelCard, to_tensor

    module = toy_module(seed)
    card = ModelCard(name="toy", architecture="toy-cnn", classes=CLASSES, weights="toy.safetensors",
                     input_size=32)
    clf = Classifier(module, card)
    for p in module.parameters():
        p.requires_grad_(True)
    module.train()
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    rng = np.random.RandomState(seed)
    g = torch.Generator().manual_seed(seed)  # noqa: F841 - documents the seeding
    for _ in range(steps):
        labels = rng.randint(0, 3, 32)
        x = torch.cat([to_tensor(toy_image(rng, int(y))) for y in labels])
        loss = F.cross_entropy(module(clf.preprocess(x)), torch.from_numpy(labels).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return clf
