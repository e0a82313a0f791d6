"""``python -m p2p_desktop.training.backbone``: train the demo backbone, or re-measure one."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from p2p_desktop.training.backbone.card import publish_backbone, write_card
from p2p_desktop.training.backbone.evaluation import evaluate_backbone
from p2p_desktop.training.backbone.loops import TrainingPlan, _log, train_backbone
from p2p_desktop.training.backbone.model import (
    SCHEDULER_CONFIG,
    TEXT_ENCODER_CONFIG,
    UNET_CONFIG,
    VAE_CONFIG,
    parameter_counts,
)

__all__ = ["main"]


def _reevaluate(folder: Path, n_images: int) -> int:
    """Refresh ``quality`` (and the file hashes) in an existing folder's card.json."""
    import torch

    torch.set_num_threads(1)
    card_file = folder / "card.json"
    card = json.loads(card_file.read_text(encoding="utf-8"))
    quality = evaluate_backbone(folder, n_images=n_images)
    write_card(folder, card.get("training", {}), quality, card.get("architecture", {}))
    print(json.dumps({"out": str(folder), "quality": quality}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train the demo backbone, or re-measure an existing one; the exit code."""
    p = argparse.ArgumentParser(prog="python -m p2p_desktop.training.backbone",
                                description="Train the demo diffusion backbone on synthetic phantoms (CPU).")
    p.add_argument("--out", required=True, type=Path, help="the backbone folder to write (e.g. resources/models/demo)")
    p.add_argument("--minutes", type=float, default=TrainingPlan.minutes,
                   help="CPU-time budget of the whole run, one thread (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and sampling seed")
    p.add_argument("--n-train", type=int, default=TrainingPlan.n_train, help="training phantoms (seeds 0..N-1)")
    p.add_argument("--n-pair-seeds", type=int, default=TrainingPlan.n_pair_seeds,
                   help="UNet phantoms: seeds 0..K-1, each as all three classes")
    p.add_argument("--scratch", type=Path, default=None,
                   help="checkpoint folder for resuming (default: <tmp>/p2p-desktop-backbone-seed<S>)")
    p.add_argument("--eval-images", type=int, default=9, help="held-out phantoms for the quality figures")
    p.add_argument("--evaluate-only", action="store_true",
                   help="re-measure the quality of an existing --out folder and rewrite its card.json")
    args = p.parse_args(argv)

    if args.evaluate_only:
        return _reevaluate(args.out, args.eval_images)
    plan = TrainingPlan(minutes=args.minutes, seed=args.seed, n_train=args.n_train,
                        n_pair_seeds=args.n_pair_seeds)
    scratch = args.scratch or Path(tempfile.gettempdir()) / f"p2p-desktop-backbone-seed{args.seed}"
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    parts, record = train_backbone(plan, scratch)
    arch = {"parameters": parameter_counts(parts),
            "vae": VAE_CONFIG | {"scaling_factor": parts["vae"].config.scaling_factor},
            "unet": UNET_CONFIG, "text_encoder": TEXT_ENCODER_CONFIG | {"vocab_size": len(parts["tokenizer"])},
            "scheduler": SCHEDULER_CONFIG | {"set_alpha_to_one": False}}
    card = publish_backbone(parts, out, record, arch, args.eval_images, before_card=lambda rec: rec.update(
        wall_seconds_this_run=round(time.monotonic() - started, 1)))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    _log(f"wrote {out} ({size / 1e6:.2f} MB) in {time.monotonic() - started:.0f}s")
    print(json.dumps({"out": str(out), "bytes": size, "quality": card["quality"],
                      "parameters": arch["parameters"]}, indent=2))
    return 0
