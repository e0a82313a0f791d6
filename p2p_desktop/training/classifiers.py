"""Train the demo classifiers (DenseNet121, ResNet34, SqueezeNet1.1) on synthetic phantoms.

The paper attacks torchvision DenseNet121, ResNet34 and SqueezeNet1.1 trained on breast
ultrasound (Adam 1e-3, batch 32, best-validation checkpoint). Real scans cannot be shipped, so
the demo bundle trains the same architectures FROM SCRATCH (no pretrained weights, no download)
on the project's own phantoms, at 128 px, CPU only. The result is a synthetic demo, not a
medical device.

Inputs go through :meth:`Classifier.preprocess` exactly as at serving time (grey replicated to
three channels, ImageNet mean/std), so training and serving see the same tensors.

Seeds: training ``0 ..`` (labels balanced by ``seed % 3``), validation ``500_000 ..``, test
``2_000_000 ..``; the unit tests use ``3_000_000 ..``. No test seed is ever trained on.

Usage::

    python -m p2p_desktop.training.classifiers --out resources/models \
        [--arch densenet121,resnet34,squeezenet1_1] [--minutes M] [--cache DIR]

Budgets are CPU minutes of the training process (all its threads), and each architecture also
has an epoch cap. Measured on this project's 2-core machine, 128 px, batch 32, with the machine
otherwise idle: SqueezeNet1.1 ~45, ResNet34 ~24 (1 or 2 threads alike), DenseNet121 ~17
training images per CPU second. CPU time does not fully shield a run from a busy machine: with
three trainers sharing the two cores, ResNet34 and DenseNet121 managed only ~6 images per CPU
second (their cards record it), so a shared budget buys far fewer epochs. Each card
records the rate its run achieved. The shipped ResNet34 ran alone with ``--threads 2``.

Each model is written once, when final: ``<out>/demo-<arch>/model.safetensors`` (fp16) and
``card.json`` (classes, input size, normalisation, SHA-256, training record, test accuracy).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from p2p_desktop.io.outputs import atomic_replace_bytes, atomic_replace_json
from p2p_desktop.models.classifier import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Classifier,
    ModelCard,
)

__all__ = [
    "DEMO_ARCHITECTURES",
    "DEMO_CLASSES",
    "INPUT_SIZE",
    "TRAIN_SEED_START",
    "VAL_SEED_START",
    "TEST_SEED_START",
    "ArchRecipe",
    "RECIPES",
    "PhantomSet",
    "TrainResult",
    "phantom_set",
    "demo_card",
    "train_classifier",
    "evaluate",
    "write_classifier_bundle",
    "main",
]

DEMO_ARCHITECTURES = ("squeezenet1_1", "resnet34", "densenet121")
DEMO_CLASSES = ("benign", "malignant", "normal")
INPUT_SIZE = 128
TRAIN_SEED_START = 0
VAL_SEED_START = 500_000
TEST_SEED_START = 2_000_000


@dataclass(frozen=True)
class ArchRecipe:
    """Optimiser settings and CPU-time budget for one architecture."""

    lr: float
    warmup_steps: int
    max_epochs: int
    minutes: float  # default training budget, CPU minutes
    n_train: int = 3000  # default training phantoms, seeds TRAIN_SEED_START ..


# SqueezeNet1.1 has no batch norm and a ReLU before its pooled logits: from scratch at the
# paper's lr 1e-3 it often starts dead (all logits 0). A lower lr with a long warmup avoids that.
RECIPES: dict[str, ArchRecipe] = {
    "squeezenet1_1": ArchRecipe(lr=3e-4, warmup_steps=60, max_epochs=30, minutes=12),
    # ResNet34 needs more distinct phantoms than the others: 3,000 phantoms for 2 epochs gave 0.870
    # test accuracy, 12,000 for 10 epochs (100 CPU minutes) gives the shipped model (see its card).
    "resnet34": ArchRecipe(lr=1e-3, warmup_steps=20, max_epochs=10, minutes=100, n_train=12_000),
    "densenet121": ArchRecipe(lr=1e-3, warmup_steps=20, max_epochs=10, minutes=18),
}


@dataclass
class PhantomSet:
    """Phantom images (N, 1, S, S) float32 in [0, 1], integer labels (N,), and their seeds."""

    images: Any
    labels: Any
    seeds: tuple[int, int]  # first, last (inclusive)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, n: int) -> PhantomSet:
        """The first ``n`` phantoms (seeds ``seeds[0] .. seeds[0]+n-1``); the whole set if ``n >= len``."""
        n = min(int(n), len(self))
        if n < 1:
            raise ValueError("a phantom set needs at least one phantom")
        return PhantomSet(self.images[:n], self.labels[:n], (self.seeds[0], self.seeds[0] + n - 1))

    @property
    def seed_range(self) -> str:
        return f"{self.seeds[0]}..{self.seeds[1]}"


@dataclass
class TrainResult:
    """One training run: the best-validation module and how long and how well it trained."""

    module: Any
    steps: int
    epochs: float
    seconds: float  # wall time
    cpu_seconds: float  # this process's CPU time (the budget: robust to other jobs on the machine)
    images_per_second: float  # per CPU second
    best_val_accuracy: float
    best_step: int
    history: list[dict[str, float]] = field(default_factory=list)


def phantom_set(start: int, n: int, size: int = INPUT_SIZE, chunk: int = 250,
                cache: str | Path | None = None) -> PhantomSet:
    """``n`` phantoms from seeds ``start .. start+n-1``, labels balanced (``DEMO_CLASSES[seed % 3]``).

    With ``cache`` (a folder), each chunk of images is kept there as ``.npy`` and reused by later
    runs of the same generator.
    """
    import torch

    from p2p_desktop import phantoms

    if tuple(phantoms.CLASSES) != DEMO_CLASSES:
        raise RuntimeError(f"phantom classes {phantoms.CLASSES} differ from {DEMO_CLASSES}")
    seeds = list(range(start, start + n))
    labels = [DEMO_CLASSES[s % 3] for s in seeds]
    images = np.empty((n, 1, size, size), dtype=np.float32)
    fingerprint = _generator_fingerprint(size) if cache else ""
    for i in range(0, n, chunk):
        part = seeds[i:i + chunk]
        cache_file = Path(cache) / f"phantoms-{fingerprint}-{part[0]}-{len(part)}-{size}.npy" if cache else None
        if cache_file is not None and cache_file.is_file():
            block = np.load(cache_file, allow_pickle=False)
            if block.shape == (len(part), 1, size, size):
                images[i:i + len(part)] = block
                continue
        for j, ph in enumerate(phantoms.generate_batch(part, labels=labels[i:i + chunk], size=size)):
            if ph.label != labels[i + j]:
                raise RuntimeError(f"phantom seed {part[j]}: asked for {labels[i + j]}, got {ph.label}")
            images[i + j, 0] = np.asarray(ph.image, dtype=np.float32)
        if cache_file is not None:
            block = images[i:i + len(part)]
            atomic_replace_bytes(cache_file, lambda fh, block=block: np.save(fh, block, allow_pickle=False))
    y = torch.tensor([s % 3 for s in seeds], dtype=torch.long)
    return PhantomSet(torch.from_numpy(images), y, (start, start + n - 1))


def _generator_fingerprint(size: int) -> str:
    """Hash of a few phantoms as the loaded generator draws them, so a changed generator (even one
    edited while this process runs) never reuses a cache."""
    import hashlib

    from p2p_desktop import phantoms

    if size not in _FINGERPRINTS:
        h = hashlib.sha256()
        for ph in phantoms.generate_batch(range(6), size=size):
            h.update(ph.label.encode() + np.ascontiguousarray(ph.image, dtype=np.float32).tobytes())
        _FINGERPRINTS[size] = h.hexdigest()[:12]
    return _FINGERPRINTS[size]


_FINGERPRINTS: dict[int, str] = {}


def demo_card(arch: str, weights: str = "model.safetensors") -> ModelCard:
    """The card every demo classifier is served with (its preprocessing is the training one)."""
    return ModelCard(name=f"demo-{arch}", architecture=arch, classes=DEMO_CLASSES, weights=weights,
                     input_size=INPUT_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD, in_channels=3)


def _augment(x, gen):
    """Light augmentation in [0, 1]: left-right flips and small gain/offset jitter."""
    import torch

    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    gain = 1.0 + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.3  # 0.85 .. 1.15
    offset = (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.1  # -0.05 .. 0.05
    return (x * gain + offset).clamp_(0.0, 1.0)


def evaluate(forward: Callable, data: PhantomSet, batch_size: int = 64) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``forward`` (images in [0,1] -> logits) on ``data``."""
    import torch
    import torch.nn.functional as F

    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            logits = forward(data.images[i:i + batch_size])
            y = data.labels[i:i + batch_size]
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    return correct / len(data), loss_sum / len(data)


def train_classifier(
    arch: str,
    train: PhantomSet,
    val: PhantomSet,
    *,
    seconds: float,
    recipe: ArchRecipe | None = None,
    batch_size: int = 32,
    val_every: int = 25,
    seed: int = 0,
    init_state: dict | None = None,
    schedule: str = "constant",
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train ``arch`` from scratch within ``seconds`` of CPU time; return the best-validation weights.

    The budget counts this process's CPU time, not wall time, so a busy machine slows training
    down instead of cutting it short.

    Adam (the paper's optimiser), linear warmup, then a constant lr (``schedule="constant"``) or a
    cosine decay to zero over the CPU budget (``"cosine"``), batch 32. Validation runs every
    ``val_every`` steps and at the end of each epoch; training stops at the time budget, at
    ``recipe.max_epochs``, or after two validations in a row at 100 % accuracy. ``init_state``
    continues from earlier weights instead of a random start.
    """
    import torch
    import torch.nn.functional as F

    from p2p_desktop.models.classifier import build_architecture

    recipe = recipe or RECIPES[arch]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    module = build_architecture(arch, len(DEMO_CLASSES), in_channels=3)
    if init_state is not None:
        module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in init_state.items()})
    # The serving pipeline itself: Classifier.preprocess only uses the card, not the module.
    preprocess = Classifier(torch.nn.Identity(), demo_card(arch)).preprocess
    opt = torch.optim.Adam(module.parameters(), lr=recipe.lr)

    def forward_eval(x):
        module.eval()
        return module(preprocess(x))

    n = len(train)
    steps_per_epoch = math.ceil(n / batch_size)
    max_steps = recipe.max_epochs * steps_per_epoch
    best_state, best_key, best_step = None, (-1.0, 0.0), 0
    history: list[dict[str, float]] = []
    perfect_in_row = 0
    step, images_seen = 0, 0
    t0, c0 = time.monotonic(), time.process_time()
    train_time = 0.0

    def validate() -> bool:
        nonlocal best_state, best_key, best_step, perfect_in_row
        acc, loss = evaluate(forward_eval, val)
        history.append({"step": step, "epoch": round(images_seen / n, 3), "val_accuracy": acc,
                        "val_loss": round(loss, 4), "seconds": round(time.monotonic() - t0, 1)})
        key = (acc, -loss)
        marker = ""
        if key > best_key:
            best_key, best_step, marker = key, step, " *"
            best_state = copy.deepcopy(module.state_dict())
        rate = images_seen / train_time if train_time else 0.0
        log(f"{arch}: step {step} epoch {images_seen / n:.2f} val acc {acc:.3f} loss {loss:.3f} "
            f"({rate:.1f} img/s, cpu {time.process_time() - c0:.0f}s, wall {time.monotonic() - t0:.0f}s){marker}")
        perfect_in_row = perfect_in_row + 1 if acc >= 1.0 else 0
        return perfect_in_row >= 2

    stop = False
    while not stop and step < max_steps:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            if idx.numel() < 2:  # batch norm needs two samples
                continue
            ts = time.process_time()
            module.train()
            lr = recipe.lr * min(1.0, (step + 1) / max(1, recipe.warmup_steps))
            if schedule == "cosine":
                done = min(1.0, (time.process_time() - c0) / seconds) if seconds > 0 else 1.0
                lr *= 0.5 * (1.0 + math.cos(math.pi * done))
            for g in opt.param_groups:
                g["lr"] = lr
            x = _augment(train.images[idx], gen)
            loss = F.cross_entropy(module(preprocess(x)), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            train_time += time.process_time() - ts
            step += 1
            images_seen += idx.numel()
            if step % 5 == 0:
                log(f"{arch}: step {step} loss {loss.item():.4f}")
            out_of_time = time.process_time() - c0 >= seconds
            if step % val_every == 0 or out_of_time or step >= max_steps:
                stop = validate() or out_of_time or step >= max_steps
                if stop:
                    break
        else:
            if step % val_every:  # end of epoch, not just validated
                stop = validate()
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return TrainResult(module=module, steps=step, epochs=round(images_seen / n, 2),
                       seconds=round(time.monotonic() - t0, 1), cpu_seconds=round(time.process_time() - c0, 1),
                       images_per_second=round(images_seen / train_time, 2) if train_time else 0.0,
                       best_val_accuracy=best_key[0], best_step=best_step, history=history)


def write_classifier_bundle(module, card: ModelCard, out_dir: str | Path, extra: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` (fp16) and ``card.json`` into ``out_dir``, each atomically.

    Returns the card path. The card records the weights' SHA-256, so the registry and
    :func:`load_classifier` refuse a corrupted copy.
    """
    import torch
    from safetensors.torch import save

    from p2p_desktop.hashing import sha256_bytes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
             for k, v in module.state_dict().items()}
    blob = save(state, metadata={"format": "pt", "architecture": card.architecture,
                                 "classes": ",".join(card.classes)})
    digest = sha256_bytes(blob)
    atomic_replace_bytes(out_dir / card.weights, blob)
    data = {
        "name": card.name,
        "kind": "classifier",
        "architecture": card.architecture,
        "classes": list(card.classes),
        "input_size": card.input_size,
        "mean": list(card.mean),
        "std": list(card.std),
        "in_channels": card.in_channels,
        "weights": card.weights,
        "sha256": digest,
        **extra,
    }
    card_path = out_dir / "card.json"
    atomic_replace_json(card_path, data)
    return card_path


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m p2p_desktop.training.classifiers",
                                description="Train the demo classifiers from scratch on synthetic phantoms (CPU).")
    p.add_argument("--out", required=True, help="models folder; each model goes to OUT/demo-<arch>/")
    p.add_argument("--arch", default=",".join(DEMO_ARCHITECTURES),
                   help=f"comma-separated architectures (default: {','.join(DEMO_ARCHITECTURES)})")
    p.add_argument("--minutes", type=float,
                   help="training budget for all requested architectures together, in CPU minutes of "
                        "this process (with one thread on an idle core, wall minutes); split in "
                        "proportion to each architecture's default ("
                        + ", ".join(f"{a} {r.minutes:g}" for a, r in RECIPES.items()) + ")")
    p.add_argument("--n-train", type=int,
                   help="training phantoms (seeds 0..N-1) for every requested architecture (default: "
                        "each architecture's own: " + ", ".join(f"{a} {r.n_train}" for a, r in RECIPES.items())
                        + ")")
    p.add_argument("--n-val", type=int, default=300, help="validation phantoms (seeds 500000..)")
    p.add_argument("--n-test", type=int, default=300, help="test phantoms (seeds 2000000..)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedule", choices=["constant", "cosine"], default="cosine",
                   help="learning rate after warmup: constant, or cosine decay over the budget (default)")
    p.add_argument("--lr", type=float, help="override the architecture's learning rate")
    p.add_argument("--cache", help="folder to keep generated phantoms in (.npy) for later runs")
    p.add_argument("--continue-from", metavar="MODELS_DIR",
                   help="continue training from the demo bundles in this folder (their weights and "
                        "training record) instead of a random start")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command line: train the requested demo classifiers and write their bundles; the exit code."""
    import torch

    args = _parse_args(argv)
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    unknown = [a for a in archs if a not in RECIPES]
    if unknown:
        sys.stderr.write(f"unknown architecture(s) {', '.join(unknown)}: choose from {', '.join(RECIPES)}\n")
        return 2
    too_small = [f"{flag} must be at least {least}, got {value:g}"
                 for flag, value, least in (("--n-train", args.n_train, 2), ("--n-val", args.n_val, 1),
                                            ("--n-test", args.n_test, 1), ("--threads", args.threads, 1))
                 if value is not None and value < least]
    if args.minutes is not None and args.minutes <= 0:
        too_small.append(f"--minutes must be positive, got {args.minutes:g}")
    if too_small:
        sys.stderr.write(too_small[0] + "\n")
        return 2
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    t_all = time.monotonic()
    n_train = {a: args.n_train or RECIPES[a].n_train for a in archs}
    # One generated set; each architecture trains on its first n_train[arch] seeds.
    all_train = phantom_set(TRAIN_SEED_START, max(n_train.values()), cache=args.cache)
    val = phantom_set(VAL_SEED_START, args.n_val, cache=args.cache)
    test = phantom_set(TEST_SEED_START, args.n_test, cache=args.cache)
    log(f"phantoms: train {all_train.seed_range}, val {val.seed_range}, test {test.seed_range} "
        f"({time.monotonic() - t_all:.0f}s)")
    default_total = sum(RECIPES[a].minutes for a in archs)
    scale = (args.minutes / default_total) if args.minutes else 1.0
    summary = []
    for arch in archs:
        recipe = RECIPES[arch]
        budget = recipe.minutes * 60.0 * scale
        train = all_train.head(n_train[arch])
        log(f"{arch}: training for at most {budget:.0f} CPU seconds")
        init_state, previous = None, None
        if args.continue_from:
            from p2p_desktop.models.weights import load_state_dict

            prev_card = ModelCard.from_json(Path(args.continue_from) / f"demo-{arch}" / "card.json")
            init_state = load_state_dict(prev_card.weights_path)
            previous = prev_card.extra.get("training")
            recipe = replace(recipe, warmup_steps=min(recipe.warmup_steps, 20))
        if args.lr:
            recipe = replace(recipe, lr=args.lr)
        result = train_classifier(arch, train, val, seconds=budget, recipe=recipe, seed=args.seed,
                                  init_state=init_state, schedule=args.schedule, log=log)
        card = demo_card(arch)
        # Score what is served: fp16 weights, reloaded, through the serving preprocessing.
        served = _fp16_roundtrip(result.module, card)
        test_acc, _ = evaluate(served.logits, test)
        log(f"{arch}: {result.steps} steps, {result.epochs} epochs, {result.seconds}s wall, "
            f"{result.cpu_seconds}s cpu, "
            f"{result.images_per_second} img/s; best val {result.best_val_accuracy:.3f} at step "
            f"{result.best_step}; TEST accuracy {test_acc:.3f} on {len(test)}")
        extra = {
            "training": {
                "seeds": train.seed_range,
                "labels": "classes[seed % 3]",
                "n_train": len(train),
                "val_seeds": val.seed_range,
                "epochs": result.epochs,
                "steps": result.steps,
                "best_step": result.best_step,
                "batch_size": 32,
                "optimizer": f"Adam lr {recipe.lr:g}, linear warmup {recipe.warmup_steps} steps, "
                             f"then {args.schedule}",
                "augmentation": "left-right flip, gain 0.85-1.15, offset +-0.05",
                "from_scratch": True,
                "seconds": result.seconds,
                "cpu_seconds": result.cpu_seconds,
                "cpu_budget_seconds": round(budget),
                "images_per_second": result.images_per_second,
                "device": "cpu",
                "threads": args.threads,
                "torch": torch.__version__,
                **({"continued_from": previous,
                    "epochs_total": round(result.epochs + _total_epochs(previous), 2)} if previous else {}),
            },
            "accuracy": {"test": round(test_acc, 4), "n_test": len(test), "test_seeds": test.seed_range,
                         "val": round(result.best_val_accuracy, 4), "n_val": len(val)},
            "synthetic_demo": True,
            "description": (
                f"SYNTHETIC DEMO: torchvision {arch} trained from scratch on the project's synthetic "
                "breast-ultrasound phantoms (benign / malignant / normal), 128 px. It has never seen "
                "a real scan. For demonstrating the attacks only; NOT for clinical use."),
        }
        card_path = write_classifier_bundle(result.module, card, Path(args.out) / card.name, extra)
        size = (card_path.parent / card.weights).stat().st_size
        log(f"{arch}: wrote {card_path.parent} ({size / 1e6:.1f} MB)")
        summary.append((arch, test_acc))
    log(f"done in {time.monotonic() - t_all:.0f}s: " + ", ".join(f"{a} {acc:.3f}" for a, acc in summary))
    return 0


def _total_epochs(record: dict) -> float:
    """Epochs of a training record, including the runs it continued."""
    return float(record.get("epochs", 0.0)) + (_total_epochs(record["continued_from"])
                                                if isinstance(record.get("continued_from"), dict) else 0.0)


def _fp16_roundtrip(module, card: ModelCard) -> Classifier:
    """The classifier as it will be served: weights rounded to fp16 and back, in eval mode."""
    import torch

    from p2p_desktop.models.classifier import classifier_from_state_dict

    state = {k: v.detach().to(torch.float16) if v.is_floating_point() else v.detach()
             for k, v in module.state_dict().items()}
    return classifier_from_state_dict(card, state)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
