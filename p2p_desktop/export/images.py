"""The basic outputs of an attack: adversarial PNG and perturbation .npy."""

from __future__ import annotations

from p2p_desktop.attacks.runner import AttackResult
from p2p_desktop.io.encode import encode_npy, encode_png
from p2p_desktop.io.outputs import OutputSet
from p2p_desktop.io.study import Study

__all__ = ["output_stem", "write_image_outputs"]


def output_stem(study: Study, attack: str) -> str:
    """Stem of the output file names for ``study`` and ``attack`` (with the frame of a multi-frame study)."""
    frame = f"_f{study.frame_index}" if study.n_frames > 1 else ""
    return f"{study.output_name or study.path.stem}{frame}_{attack}"


def write_image_outputs(result: AttackResult, study: Study, outs: OutputSet) -> None:
    """Adversarial PNG (source geometry, 16-bit for 16-bit grey sources) and signed perturbation."""
    stem = output_stem(study, result.attack)
    outs.write_bytes(f"{stem}_adv.png", encode_png(result.adversarial, bits=study.bits_stored), kind="png")
    outs.write_bytes(f"{stem}_perturbation.npy", encode_npy(result.perturbation), kind="perturbation")
