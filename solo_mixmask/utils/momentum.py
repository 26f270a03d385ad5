"""EMA ("momentum") targets: the update rule and the cosine tau schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def tau_at(step: int, max_steps: int, base_tau: float, final_tau: float) -> float:
    """Cosine increase from ``base_tau`` to ``final_tau`` over training (BYOL).

    A pure function of the step, so a resumed run continues with exactly the same schedule.
    """
    if max_steps <= 0:
        return base_tau
    progress = min(step, max_steps) / max_steps
    return final_tau - (final_tau - base_tau) * (math.cos(math.pi * progress) + 1) / 2


def copy_params(online: nn.Module, target: nn.Module) -> None:
    """Starts ``target`` as a frozen copy of ``online``."""
    target.load_state_dict(online.state_dict())
    for p in target.parameters():
        p.requires_grad = False


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, tau: float) -> None:
    """``target = tau * target + (1 - tau) * online`` for parameters.

    BatchNorm buffers are not copied: the target network keeps the running statistics of its own
    forward passes, as in MoCo and BYOL.
    """
    t_params = [p for p in target.parameters()]
    o_params = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(t_params, tau)
    torch._foreach_add_(t_params, o_params, alpha=1 - tau)
