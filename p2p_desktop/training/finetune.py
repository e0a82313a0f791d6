"""What the two text-conditioning fine-tunes of the demo backbone share (appearance, counterfactual):
their optimizer, the draw of timesteps, the one-step x0 estimate, and the resumable CPU-budgeted
loop (step, log, probe, checkpoint); each fine-tune brings its own data, loss and probe.

The checkpoint is one ``torch.save`` file in the scratch folder (``<name>-checkpoint.pt``):
``plan`` (the plan without ``minutes``), ``unet``, ``text_encoder``, ``optimizer``, ``generator``,
``step``, ``cpu_seconds``; a run with the same plan resumes from it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from p2p_desktop.io.outputs import atomic_replace_bytes
from p2p_desktop.training.backbone.card import publish_backbone
from p2p_desktop.training.backbone.data import encode_latents
from p2p_desktop.training.backbone.evaluation import load_parts
from p2p_desktop.training.backbone.loops import _log, _lr_factor

__all__ = ["encoded_data", "text_conditioning_optimizer", "sample_timesteps", "x0_estimator", "FinetuneRun",
           "finetune_arguments", "publish_finetuned"]


def encoded_data(parts: dict, plan, scratch: Path, load: Callable[[Path], Any], what: str):
    """``plan.threads`` torch threads; the training data (``load(scratch)``, cached there) and its
    latents under the frozen VAE (posterior mean × scaling factor). Returns ``(data, latents)``."""
    import torch

    torch.set_num_threads(plan.threads)
    scratch.mkdir(parents=True, exist_ok=True)
    started_cpu = time.process_time()
    data = load(scratch)
    vae = parts["vae"]
    vae.eval().requires_grad_(False)
    latents = encode_latents(vae, data.images) * float(vae.config.scaling_factor)
    _log(f"{len(data)} {what} encoded ({time.process_time() - started_cpu:.0f} CPU s)")
    return data, latents


def text_conditioning_optimizer(unet, text_encoder, plan):
    """AdamW over the UNet (``plan.unet_lr``, weight decay 1e-2) and the text encoder
    (``plan.text_lr``, no weight decay); each group keeps its ``base`` learning rate."""
    import torch

    return torch.optim.AdamW([
        {"params": list(unet.parameters()), "lr": plan.unet_lr, "base": plan.unet_lr},
        {"params": list(text_encoder.parameters()), "lr": plan.text_lr, "base": plan.text_lr, "weight_decay": 0.0},
    ], weight_decay=1e-2)


def sample_timesteps(plan, n: int, T: int, generator):
    """``n`` timesteps: from ``[0, small_t)`` with ``small_t_share``, from ``[small_t, mid_t)`` with
    ``mid_t_share``, else from ``[0, T)`` (one uniform draw picks the range)."""
    import torch

    u = torch.rand(n, generator=generator)
    return torch.where(u < plan.small_t_share, torch.randint(0, plan.small_t, (n,), generator=generator),
                       torch.where(u < plan.small_t_share + plan.mid_t_share,
                                   torch.randint(plan.small_t, plan.mid_t, (n,), generator=generator),
                                   torch.randint(0, T, (n,), generator=generator)))


def x0_estimator(unet, text_encoder, abar) -> Callable:
    """``x0_of(z_t, t, ids)``: the one-step clean-latent estimate (z_t − √(1−ᾱ)·ε̂) / √ᾱ."""

    def x0_of(zt, t, ids):
        a = abar[t].view(-1, 1, 1, 1)
        return (zt - (1 - a).sqrt() * unet(zt, t, text_encoder(ids)[0]).sample) / a.sqrt()

    return x0_of


@dataclass
class FinetuneRun:
    """The CPU-budgeted loop of a fine-tune, resumable from ``checkpoint``."""

    plan: Any
    unet: Any
    text_encoder: Any
    optimizer: Any
    generator: Any
    checkpoint: Path
    step: int = 0
    spent: float = 0.0  # CPU seconds already trained (from a resumed checkpoint)
    ema: float | None = None  # exponential moving average of the loss

    def _plan_key(self) -> dict:
        return {k: v for k, v in asdict(self.plan).items() if k != "minutes"}

    def resume(self) -> None:
        """Load the checkpoint when it was written under the same plan (the budget may differ)."""
        import torch

        if not self.checkpoint.is_file():
            return
        saved = torch.load(self.checkpoint, weights_only=True)  # our own file; tensors and numbers only
        if saved["plan"] == self._plan_key():
            self.unet.load_state_dict(saved["unet"])
            self.text_encoder.load_state_dict(saved["text_encoder"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.generator.set_state(saved["generator"])
            self.step, self.spent = int(saved["step"]), float(saved["cpu_seconds"])
            _log(f"resumed at step {self.step} ({self.spent:.0f} CPU s)")

    def save(self, cpu_seconds: float) -> None:
        import torch

        state = {"plan": self._plan_key(),
                 "unet": self.unet.state_dict(), "text_encoder": self.text_encoder.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                 "step": self.step, "cpu_seconds": cpu_seconds}
        atomic_replace_bytes(self.checkpoint, lambda fh: torch.save(state, fh))

    def record(self, started_cpu: float, probe_before: dict, probe_after: dict, what: str) -> dict:
        """The phase's record after the phantoms: plan, steps, CPU seconds since ``started_cpu``,
        the final loss, and the probe before and after (``what`` says what it measures)."""
        return {"plan": asdict(self.plan), "steps": self.step,
                "cpu_seconds": round(time.process_time() - started_cpu, 1), "final_loss_ema": self.ema,
                "probe_t25_latent": {"before": probe_before, "after": probe_after, "what": what}}

    def train(self, loss_of: Callable[[], Any], probe_figures: Callable[[], dict]) -> None:
        """Until ``plan.minutes`` of CPU time: ``loss_of()`` (it draws its batch from the generator),
        one clipped AdamW step at the warmup + cosine learning rate; the loss logged every 10
        steps, the probe every 100, a checkpoint every 2 minutes."""
        import torch

        plan, unet, te, opt = self.plan, self.unet, self.text_encoder, self.optimizer
        budget = plan.minutes * 60
        t0 = time.process_time() - self.spent
        last_save = time.monotonic()
        unet.train(), te.train()
        while (spent := time.process_time() - t0) < budget:
            frac = spent / budget
            loss = loss_of()
            for g in opt.param_groups:
                g["lr"] = g["base"] * _lr_factor(self.step, frac, plan.warmup_steps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(unet.parameters()) + list(te.parameters()), 1.0)
            opt.step()
            self.step += 1
            self.ema = loss.item() if self.ema is None else 0.95 * self.ema + 0.05 * loss.item()
            if self.step % 10 == 0:
                _log(f"step {self.step} {spent:.0f}/{budget:.0f} CPU s loss {self.ema:.4f}")
            if self.step % 100 == 0:
                _log(f"probe: {probe_figures()}")
            if time.monotonic() - last_save > 120:
                self.save(time.process_time() - t0)
                last_save = time.monotonic()


def finetune_arguments(name: str, description: str, plan_cls, seeds_help: str) -> argparse.ArgumentParser:
    """The command line of ``python -m p2p_desktop.training.<name>``: base and output folders,
    CPU minutes, seed, seeds, threads, scratch folder, evaluation images."""
    p = argparse.ArgumentParser(prog=f"python -m p2p_desktop.training.{name}", description=description)
    p.add_argument("--base", required=True, type=Path, help="trained backbone folder to start from")
    p.add_argument("--out", required=True, type=Path, help="backbone folder to write (may equal --base)")
    p.add_argument("--minutes", type=float, default=plan_cls.minutes,
                   help="CPU minutes of training (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-seeds", type=int, default=plan_cls.n_seeds, help=f"{seeds_help} (default %(default)s)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--scratch", type=Path, default=None,
                   help=f"checkpoint folder for resuming (default: <tmp>/p2p-desktop-{name}-seed<S>)")
    p.add_argument("--eval-images", type=int, default=9)
    return p


def publish_finetuned(name: str, args, plan, finetune: Callable, training: dict, base_card: dict) -> int:
    """Load ``args.base``, fine-tune it (``finetune(parts, plan, scratch)``), record the phase as
    ``training[name]`` and publish the folder at ``args.out``; prints the quality and the probe."""
    out = args.out.resolve()
    scratch = args.scratch or Path(tempfile.gettempdir()) / f"p2p-desktop-{name}-seed{args.seed}"
    started = time.monotonic()
    parts = load_parts(args.base.resolve())
    record = finetune(parts, plan, scratch)
    training[name] = record
    card = publish_backbone(parts, out, training, base_card.get("architecture", {}), args.eval_images)
    _log(f"wrote {out} in {time.monotonic() - started:.0f} s")
    print(json.dumps({"out": str(out), "quality": card["quality"], "probe": record["probe_t25_latent"]}, indent=2))
    return 0
