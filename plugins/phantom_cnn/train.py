"""Train the example plugin's CNN on synthetic phantoms (about two minutes on two CPU cores).

    python plugins/phantom_cnn/train.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(n_train: int = 1500, epochs: int = 6, seed: int = 0) -> None:
    """Train on ``n_train`` seeded phantoms for ``epochs`` epochs and write ``weights.safetensors``."""
    import phantom_cnn
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from p2p_desktop.models.classifier import Classifier, to_tensor
    from p2p_desktop.phantoms import CLASSES, generate_phantom

    torch.manual_seed(seed)
    labels = [CLASSES[i % 3] for i in range(n_train)]
    data = [generate_phantom(10_000_000 + i, label=lab, size=128) for i, lab in enumerate(labels)]
    x_all = torch.cat([to_tensor(p.image) for p in data])
    y_all = torch.tensor([CLASSES.index(p.label) for p in data])
    module = phantom_cnn.build()
    clf = Classifier(module, phantom_cnn.card())
    module.train()
    for p in module.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(module.parameters(), lr=2e-3)
    for epoch in range(epochs):
        perm = torch.randperm(n_train)
        for i in range(0, n_train, 32):
            idx = perm[i:i + 32]
            x = x_all[idx]
            flip = torch.rand(len(idx)) < 0.5
            x[flip] = x[flip].flip(-1)
            loss = F.cross_entropy(module(clf.preprocess(x)), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}", flush=True)
    module.eval()
    test = [generate_phantom(20_000_000 + i, size=128) for i in range(300)]
    with torch.no_grad():
        pred = clf.probs(torch.cat([to_tensor(p.image) for p in test])).argmax(1)
    acc = float(np.mean([CLASSES[int(k)] == p.label for k, p in zip(pred, test)]))
    print(f"test accuracy on 300 unseen phantoms: {acc:.3f}")
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(HERE / "weights.safetensors"))


if __name__ == "__main__":
    main()
