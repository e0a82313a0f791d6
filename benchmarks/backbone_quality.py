"""Print the quality figures of a diffusion backbone folder (default: the demo bundle).

    python benchmarks/backbone_quality.py [FOLDER] [--n-images N] [--json]

Re-measures on held-out phantoms (seeds 1_000_000 ..) what ``card.json`` records: VAE
round-trip SSIM, SSIM of one-step x0 estimates from t ∈ {10, 25, 49} (P2P's regime), how much
a different class prompt changes a denoised image against the seed-to-seed floor, and the CPU
cost of one UNet forward+backward and one VAE decode forward+backward (1 thread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from p2p_desktop.paths import models_dir
    from p2p_desktop.training.backbone import evaluate_backbone

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", type=Path, default=models_dir() / "demo")
    p.add_argument("--n-images", type=int, default=12)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if not (args.folder / "model_index.json").is_file():
        print(f"no diffusers folder at {args.folder}", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    q = evaluate_backbone(args.folder, n_images=args.n_images)
    q["evaluation_seconds"] = round(time.perf_counter() - t0, 1)
    card_file = args.folder / "card.json"
    if card_file.is_file():
        q["card_quality"] = json.loads(card_file.read_text(encoding="utf-8")).get("quality")
    if args.json:
        print(json.dumps(q, indent=2))
        return 0
    tc = q["text_conditioning"]
    print(f"backbone: {args.folder}  (held-out seeds {q['held_out_seeds']})")
    print(f"(a) VAE round-trip SSIM           {q['vae_ssim']:.4f}   (target >= 0.85)")
    for t, s in q["x0_ssim"].items():
        print(f"(b) one-step x0 SSIM, t={t:>3}      {s:.4f}   (own prompt; class prompt "
              f"{q['x0_ssim_class_prompt'][t]:.4f}; undenoised {q['undenoised_ssim'][t]:.4f})")
    rows = [(f"one-step x0, t={f['t']}", f) for f in tc["one_step"].values()]
    rows.append((f"DDIM {tc['ddim']['steps']} steps from t={tc['ddim']['t']}", tc["ddim"]))
    for label, f in rows:
        print(f"(c) {label:<26} prompt-swap MAD {f['prompt_swap_mad']:.4f} vs seed MAD {f['seed_mad']:.4f}"
              f" -> ratio {f['ratio_mad']:.2f}; 1-SSIM {f['prompt_swap_1mssim']:.4f} vs "
              f"{f['seed_1mssim']:.4f} -> ratio {f['ratio_1mssim']:.2f}")
    print(f"(c) headline: {tc['headline']}, ratio {tc['ratio_mad']:.2f} (target clearly > 1)")
    small = tc["one_step_small_t"]
    print(f"    prompt-swap MAD of the one-step x0 at P2P's t={small['t']}: {small['prompt_swap_mad']:.5f}")
    print(f"UNet forward+backward, batch 1, CPU 1 thread: {q['unet_fwd_bwd_seconds_cpu_1thread']:.3f} s")
    print(f"VAE decode forward+backward, batch 1, CPU 1 thread: {q['vae_decode_fwd_bwd_seconds_cpu_1thread']:.3f} s")
    print(f"evaluation took {q['evaluation_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
