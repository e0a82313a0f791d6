"""Norm-ball helpers shared by the gradient attacks and the optional output bound of P2P.

ε is in [0,1] pixel units. For L2 it bounds the Euclidean norm of the whole perturbation
(all pixels and channels), as torchattacks' PGDL2 does per image.
"""

from __future__ import annotations

__all__ = ["NORMS", "project", "normalise_step", "check_budget"]

NORMS = ("linf", "l2")


def project(delta, norm: str, eps: float):
    """Project ``delta`` (1, C, H, W) onto the ε-ball of ``norm``."""
    import torch

    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = delta.flatten(1).norm(p=2, dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return delta * torch.clamp(eps / n, max=1.0)


def normalise_step(grad, norm: str):
    """The steepest-ascent direction of unit size for ``norm``: sign(g) or g/‖g‖₂."""
    if norm == "linf":
        return grad.sign()
    n = grad.flatten(1).norm(p=2, dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return grad / n


def check_budget(eps: float, norm: str, attack: str) -> None:
    """An L∞ budget above 1 is meaningless on [0,1] images."""
    from p2p_desktop.errors import InputError

    if norm == "linf" and eps > 1.0:
        raise InputError(f"{attack}.eps: an L∞ budget must be at most 1.0 on [0,1] images, got {eps}")
