#!/usr/bin/env python
"""P2P `paper` preset against `fast`, on the same phantoms, backbone, classifier, resolution and output mode.

    python benchmarks/p2p_presets.py [--n 8] [--classifier demo-squeezenet1_1] [--backbone demo]
                                     [--runs fast,paper] [--profile-steps 5] [--json FILE]

Each image goes through every run in turn (so a shared machine's changing load falls on all runs
alike). Prints, per run: wall and CPU seconds per attacked image, success rate, mean SSIM (over successes, over all
attacked images, and over the images BOTH of the first two runs fooled), iterations; then the
speed ratio paper/fast (wall and CPU) and whether `fast` meets the target (≥ 10× quicker on both, success rate no worse
and SSIM on the images both fooled within 0.02). SSIM is compared on the images both presets
fooled: a failed attack that barely touched its image has a high SSIM, so "over all" favours the
preset that fails more. Only phantoms the clean classifier gets right are attacked (as in the paper).

`fast` runs at the `paper` preset's working resolution and output mode (224 px, decoded) and
precision, so that only the procedure differs. A run is ``PRESET`` or ``PRESET:KEY=VALUE;...``
(e.g. ``paper:cls_scale=1`` for the loss-scale ablation, ``paper:steps=100`` for a shorter check);
the first two runs are compared.

Then a per-iteration cost breakdown of each run from ``torch.profiler`` (text encoder, UNet, VAE
decode, classifier, backward, optimiser, other), measured on the first phantom over
``--profile-steps`` iterations without early stop, so it shows how close each preset is to the
cost of its model calls.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PARTS = ("text_encoder", "unet", "vae_decode", "classifier", "backward", "optimizer")


def parse_run(text: str) -> tuple[str, str, dict[str, str]]:
    """``paper:cls_scale=1;steps=100`` -> (label, preset, overrides)."""
    preset, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, (s.strip() for s in rest.split(";"))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--runs: {item!r} is not KEY=VALUE")
        overrides[key.strip()] = value.strip()
    return text, preset.strip(), overrides


def cost_breakdown(attack, study, clf, bb) -> dict[str, float]:
    """Milliseconds per iteration of each part (torch.profiler ranges recorded by the attack)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from p2p_desktop.attacks.runner import run_attack

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        res = run_attack(study, clf, attack, backbone=bb)
    wall = time.perf_counter() - t0
    its = max(1, res.iterations)
    totals = {p: 0.0 for p in PARTS}
    for ev in prof.key_averages():
        if ev.key.startswith("p2p."):
            part = ev.key[4:]
            if part in totals:
                totals[part] += ev.cpu_time_total / 1000.0  # µs -> ms
    out = {p: v / its for p, v in totals.items()}
    out["total"] = wall * 1000.0 / its
    out["other"] = out["total"] - sum(out[p] for p in PARTS)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--n", type=int, default=8, help="correctly classified phantoms to attack")
    ap.add_argument("--seed", type=int, default=7_000_000, help="first phantom seed (never used in training)")
    ap.add_argument("--classifier", default="demo-squeezenet1_1")
    ap.add_argument("--backbone", default="demo")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", default="fast,paper",
                    help="comma-separated runs PRESET[:KEY=VALUE;...]; the first two are compared (default fast,paper)")
    ap.add_argument("--profile-steps", type=int, default=5,
                    help="iterations of the profiled run per preset (0: no cost breakdown)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    import torch

    from p2p_desktop.attacks import _diffusion as D
    from p2p_desktop.attacks.procedure import describe
    from p2p_desktop.attacks.registry import get
    from p2p_desktop.attacks.runner import run_attack
    from p2p_desktop.io.study import Study
    from p2p_desktop.models.backbone import load_backbone
    from p2p_desktop.models.classifier import load_classifier
    from p2p_desktop.phantoms import generate_phantom

    P2P = get("p2p")
    paper = P2P.from_preset("paper").config
    shared = {"resolution": paper.resolution, "output": paper.output, "dtype": paper.dtype}
    runs = [parse_run(r) for r in args.runs.split(",") if r.strip()]
    if len(runs) < 2:
        raise SystemExit("--runs: give at least two runs to compare")

    clf = load_classifier(args.classifier, device=args.device)
    bb = load_backbone(args.backbone, device=args.device, dtype=None if paper.dtype == "auto" else paper.dtype)
    studies = []
    seed = args.seed
    while len(studies) < args.n:
        ph = generate_phantom(seed, size=256)
        seed += 1
        st = Study(path=Path(f"phantom_{ph.seed}.png"), image=ph.image[:, :, None].copy(), kind="image",
                   label=ph.label)
        if clf.predict(st.image)[0] == ph.label:
            studies.append(st)
    print(f"{args.n} correctly classified phantoms (seeds {args.seed}..{seed - 1}, 256 px), classifier "
          f"{args.classifier}, backbone {args.backbone}, device {args.device}, torch threads "
          f"{torch.get_num_threads()}; runs at the paper preset's resolution, output mode and precision "
          f"({shared['resolution']} px, {shared['output']}, {D.precision_name(bb.dtype)}) unless a run overrides them",
          flush=True)

    def make(preset: str, overrides: dict[str, str], **more):
        return P2P.from_preset(preset, seed=0, **{**shared, **overrides, **more})

    figures, settings = {}, {}
    per_image: dict[str, list] = {label: [] for label, _, _ in runs}
    for label, preset, overrides in runs:
        settings[label] = make(preset, overrides).config.to_dict()
        print(f"run {label}: {describe(make(preset, overrides), preset, bb)['label']}", flush=True)
    # Interleaved (each image through every run in turn), so that a shared machine's changing load
    # falls on all runs alike; CPU seconds of this process are measured next to wall seconds.
    for st in studies:
        for label, preset, overrides in runs:
            attack = make(preset, overrides)
            t0, c0 = time.perf_counter(), time.process_time()
            res = run_attack(st, clf, attack, backbone=bb)
            rows = per_image[label]
            rows.append({"image": st.path.name, "seconds": time.perf_counter() - t0,
                         "cpu_seconds": time.process_time() - c0, "success": res.success,
                         "ssim": res.metrics["ssim"], "iterations": res.iterations,
                         "chosen_t": res.info.get("chosen_t")})
            print(f"  {label:<12} {st.path.name}: {'success' if res.success else 'failed '} "
                  f"SSIM {res.metrics['ssim']:.3f} {rows[-1]['seconds']:.1f} s (CPU {rows[-1]['cpu_seconds']:.1f} s) "
                  f"{res.iterations} it", flush=True)
    for label, _, _ in runs:
        rows = per_image[label]
        succ = [r for r in rows if r["success"]]
        figures[label] = {
            "seconds_per_image": statistics.mean(r["seconds"] for r in rows),
            "cpu_seconds_per_image": statistics.mean(r["cpu_seconds"] for r in rows),
            "success_rate": len(succ) / len(rows),
            "ssim_mean_successes": statistics.mean(r["ssim"] for r in succ) if succ else None,
            "ssim_mean_all": statistics.mean(r["ssim"] for r in rows),
            "iterations_mean": statistics.mean(r["iterations"] for r in rows),
        }
    a_label, b_label = runs[0][0], runs[1][0]
    both = [i for i, (a, b) in enumerate(zip(per_image[a_label], per_image[b_label])) if a["success"] and b["success"]]
    for name, v in figures.items():
        v["ssim_mean_both_fooled"] = (statistics.mean(per_image[name][i]["ssim"] for i in both) if both else None)
    f, p = figures[a_label], figures[b_label]
    ratio = p["seconds_per_image"] / f["seconds_per_image"]
    cpu_ratio = p["cpu_seconds_per_image"] / f["cpu_seconds_per_image"]
    fmt = lambda v: "   n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print("\nrun           s/image  CPU s/image  success  SSIM(succ)  SSIM(all)  "
          f"SSIM(both fooled, n={len(both)})  iterations")
    for name, v in figures.items():
        print(f"{name:<12} {v['seconds_per_image']:8.1f}  {v['cpu_seconds_per_image']:11.1f}  {v['success_rate']:7.2f}"
              f"  {fmt(v['ssim_mean_successes']):>10}  {v['ssim_mean_all']:9.3f}"
              f"  {fmt(v['ssim_mean_both_fooled']):>24}  {v['iterations_mean']:10.1f}")
    ok_speed = min(ratio, cpu_ratio) >= 10
    ok_success = f["success_rate"] >= p["success_rate"]
    ok_ssim = bool(both) and f["ssim_mean_both_fooled"] >= p["ssim_mean_both_fooled"] - 0.02
    print(f"\nspeed ratio {b_label}/{a_label}: {ratio:.1f}x wall, {cpu_ratio:.1f}x CPU "
          f"(target ≥ 10x: {'met' if ok_speed else 'NOT met'}); "
          f"success {'no worse' if ok_success else 'WORSE'}; SSIM on images both fooled "
          f"{'within 0.02' if ok_ssim else ('WORSE' if both else 'n/a (none fooled by both)')}", flush=True)

    breakdown = {}
    if args.profile_steps > 0:
        print(f"\nper-iteration cost (ms, torch.profiler, {args.profile_steps} iterations on {studies[0].path.name}, "
              "no early stop)")
        print(f"{'run':<12} " + " ".join(f"{p:>12}" for p in (*PARTS, "other", "total")))
        for label, preset, overrides in runs:
            attack = make(preset, overrides, steps=args.profile_steps, early_stop=False)
            breakdown[label] = cost_breakdown(attack, studies[0], clf, bb)
            print(f"{label:<12} " + " ".join(f"{breakdown[label][p]:12.1f}" for p in (*PARTS, "other", "total")),
                  flush=True)
        print("(backward covers the gradient of every part; 'other' is the rest of the loop: noise, "
              "candidate checks, bookkeeping)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "figures": figures, "per_image": per_image, "ratio": ratio, "cpu_ratio": cpu_ratio, "n": args.n,
            "runs": [r[0] for r in runs],
            "settings": settings, "breakdown_ms_per_iteration": breakdown, "classifier": args.classifier,
            "backbone": args.backbone, "device": args.device, "cpu_count": os.cpu_count(),
            "targets": {"speed_10x": ok_speed, "success_no_worse": ok_success, "ssim_within_0.02": ok_ssim}},
            indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
