#!/usr/bin/env python
"""P2P on a full-size Stable Diffusion backbone: seconds per iteration, peak memory and where the
time goes, per preset, working resolution and precision.

    python scripts/make_sd_shaped.py --preset sd15 --out /tmp/sd15        # or a real SD 1.5 folder
    python benchmarks/full_size.py --backbone /tmp/sd15 [--resolutions 224,512] [--dtypes fp32,fp16]
                                   [--presets fast,paper] [--iterations 2] [--levers on] [--json FILE]

Each configuration runs in its own child process, so its peak memory is its own: peak RSS on
CPU (``ru_maxrss``, the whole process: Python, torch, the classifier and the backbone's weights),
``torch.cuda.max_memory_allocated`` on a GPU. The cost breakdown (text encoder, UNet, VAE decode,
classifier, backward, optimiser) comes from the ``torch.profiler`` ranges the attack records
(``benchmarks/p2p_presets.py``'s ``cost_breakdown``); seconds per iteration are measured in that
same profiled run (the profiler adds a few per cent), as are the FLOPs per iteration
(``torch.utils.flop_counter``, forward and backward, as run — with gradient checkpointing the
recomputed forward counts too), from which GPU time can be estimated. ``--levers on`` sets P2P's ``low_memory``
(gradient checkpointing of UNet and VAE decoder, VAE slicing/tiling; attention is PyTorch's SDPA,
diffusers' default, reported per run). fp16 is skipped on CPU (no fast half kernels there); the
16 GB goals for a GPU are then computed from the CPU fp32 figures with the method printed below
the table. Nothing is downloaded; the weights may be random (the cost of a model does not
depend on its values).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GB = 1024**3
PARTS = ("text_encoder", "unet", "vae_decode", "classifier", "backward", "optimizer")


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def _current_rss_gb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GB


def one(args) -> dict:
    """One configuration, in this (child) process."""
    import torch
    from p2p_presets import cost_breakdown

    from p2p_desktop.attacks.factory import build_attack
    from p2p_desktop.device import resolve_device
    from p2p_desktop.io import load_study
    from p2p_desktop.models.backbone import load_backbone
    from p2p_desktop.models.classifier import load_classifier
    from p2p_desktop.phantoms import write_png_dataset

    preset, res, dtype = args.one.split(":")
    dev = resolve_device(args.device)
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="fullsize-"))
    write_png_dataset(tmp / "d", 1, seed=5000000, size=128)
    study = load_study(next((tmp / "d").rglob("*_5000000.png")), label="normal")
    clf = load_classifier(args.classifier, device=dev)
    base_rss = _current_rss_gb()
    t0 = time.perf_counter()
    bb = load_backbone(args.backbone, device=dev, dtype=dtype)
    load_s = time.perf_counter() - t0
    weights_gb = sum(p.numel() * p.element_size() for m in (bb.unet, bb.vae, bb.text_encoder)
                     for p in m.parameters()) / GB
    attention = sorted({type(p).__name__ for p in bb.unet.attn_processors.values()})
    params = {"steps": args.iterations, "early_stop": False, "resolution": int(res), "dtype": dtype,
              "low_memory": args.levers == "on"}
    attack = build_attack("p2p", preset=preset, seed=0, params=params)
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as flops:  # the model's FLOPs, forward and backward, as run
        bd = cost_breakdown(attack, study, clf, bb)
    out = {"preset": preset, "resolution": int(res), "dtype": dtype, "device": dev, "levers": args.levers,
           "iterations": args.iterations, "s_per_iteration": bd["total"] / 1000.0,
           "breakdown_ms": {k: round(v, 1) for k, v in bd.items()}, "load_s": round(load_s, 1),
           "weights_gb": round(weights_gb, 2), "attention": attention, "rss_before_backbone_gb": round(base_rss, 2),
           "peak_rss_gb": round(_rss_gb(), 2), "native_resolution": bb.resolution,
           "tflop_per_iteration": round(flops.get_total_flops() / args.iterations / 1e12, 3),
           "grad_accum": attack.config.grad_accum, "batch_timesteps": attack.config.batch_timesteps}
    if dev.startswith("cuda"):
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / GB, 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", required=True, help="a full-size diffusers folder (scripts/make_sd_shaped.py)")
    ap.add_argument("--classifier", default="demo-squeezenet1_1")
    ap.add_argument("--presets", default="fast,paper")
    ap.add_argument("--resolutions", default="224,512")
    ap.add_argument("--dtypes", default="fp32,fp16")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--levers", choices=["on", "off"], default="on")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--memory-limit-gb", type=float, default=22.0,
                    help="address-space limit of each child on CPU, so an overrun fails the run, not the machine")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args)), flush=True)
        return 0

    from p2p_desktop.device import resolve_device

    dev = resolve_device(args.device)
    results, skipped = [], []
    for preset in args.presets.split(","):
        for res in args.resolutions.split(","):
            for dtype in args.dtypes.split(","):
                if dtype != "fp32" and not dev.startswith("cuda"):
                    skipped.append(f"{preset} {res} px {dtype}: not run on {dev} (no fast half-precision kernels)")
                    continue
                cmd = [sys.executable, __file__, "--one", f"{preset}:{res}:{dtype}", "--backbone", args.backbone,
                       "--classifier", args.classifier, "--iterations", str(args.iterations), "--levers", args.levers,
                       "--device", args.device]
                limit = int(args.memory_limit_gb * GB)
                pre = (lambda limit=limit: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))) if dev == "cpu" \
                    else None
                r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=pre)
                line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
                if r.returncode != 0 or not line:
                    err = (r.stderr.strip().splitlines() or ["?"])[-1][:200]
                    skipped.append(f"{preset} {res} px {dtype}: failed ({err})")
                    print(f"{preset:<6} {res:>4} {dtype:<5} failed: {err}", flush=True)
                    continue
                rec = json.loads(line[0][7:])
                results.append(rec)
                bd = rec["breakdown_ms"]
                mem = rec.get("peak_gpu_gb", rec["peak_rss_gb"])
                print(f"{preset:<6} {res:>4} {dtype:<5} {rec['s_per_iteration']:8.1f} s/it  peak {mem:5.1f} GB  "
                      f"{rec['tflop_per_iteration']:.2f} TFLOP/it  "
                      + "  ".join(f"{p} {bd[p] / 1000:.1f}" for p in (*PARTS, "other")), flush=True)
    print("\nseconds per iteration; peak memory = " + ("torch.cuda.max_memory_allocated" if dev.startswith("cuda")
          else "peak RSS of the whole process") + "; breakdown in seconds per iteration (torch.profiler)")
    for s in skipped:
        print(f"  not measured: {s}")
    goals = sixteen_gb_goals(results, dev)
    for g in goals:
        print(f"  16 GB goal: {g}")
    if args.json:
        args.json.write_text(json.dumps({"device": dev, "results": results, "not_measured": skipped,
                                         "goals": goals}, indent=2), encoding="utf-8")
    return 0


def sixteen_gb_goals(results: list[dict], dev: str) -> list[str]:
    """P2P `paper` at 224 px fp32 and at 512 px fp16 within 16 GB: measured on a GPU, computed on CPU.

    On CPU the GPU figure is estimated as peak RSS − RSS before the backbone was loaded (Python,
    torch and the classifier are not on the GPU), halved for fp16 (weights and activations both
    half the bytes; the VAE runs in fp16 too unless its config forces fp32). ``fast`` and
    ``paper`` keep the same activations per UNet call (one timestep per call; paper accumulates
    gradients over 4 calls, which does not add memory), so a missing paper row is taken from fast.
    """
    out = []
    for res, dtype in ((224, "fp32"), (512, "fp16")):
        rows = [r for r in results if r["resolution"] == res and r["preset"] == "paper"] or \
               [r for r in results if r["resolution"] == res and r["preset"] == "fast"]
        exact = [r for r in rows if r["dtype"] == dtype and "peak_gpu_gb" in r]
        if exact:
            gb = exact[0]["peak_gpu_gb"]
            out.append(f"paper {res} px {dtype}: {gb:.1f} GB measured on {dev} -> {'met' if gb <= 16 else 'NOT met'}")
            continue
        fp32 = [r for r in rows if r["dtype"] == "fp32"]
        if not fp32:
            out.append(f"paper {res} px {dtype}: no figure")
            continue
        r = fp32[0]
        gb = r["peak_rss_gb"] - r["rss_before_backbone_gb"]
        if dtype == "fp16":
            gb /= 2
        out.append(f"paper {res} px {dtype}: ~{gb:.1f} GB computed from the {r['preset']} {res} px fp32 CPU run "
                   f"(peak RSS {r['peak_rss_gb']:.1f} − {r['rss_before_backbone_gb']:.1f} before the backbone"
                   f"{', halved for fp16' if dtype == 'fp16' else ''}) -> {'met' if gb <= 16 else 'NOT met'}")
    return out


if __name__ == "__main__":
    sys.exit(main())
