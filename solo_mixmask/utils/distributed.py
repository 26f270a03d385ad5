"""Collectives that are no-ops on a single process, and the process count a config asks for."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig, ListConfig


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the running group (1 without one)."""
    return dist.get_world_size() if is_dist() else 1


def num_devices(devices: Any) -> int:
    """Devices given as an int, a list of ids or a string ('0,1' or '2'); -1/'auto' means 1 here."""
    if isinstance(devices, (list, tuple, ListConfig)):
        return max(1, len(devices))
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1", ""):
            return 1
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        return max(1, int(text))
    return max(1, int(devices))


def configured_world_size(cfg: DictConfig) -> int:
    """Processes the config's ``devices`` and ``num_nodes`` will start: known before any process
    group exists (learning-rate scaling, queue sizes, steps per epoch)."""
    return num_devices(cfg.devices) * int(cfg.num_nodes)


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


@torch.no_grad()
def gather_nograd(x: torch.Tensor) -> torch.Tensor:
    """Concatenates ``x`` from all ranks along dim 0 (rank order), without gradient."""
    if not is_dist():
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor):  # type: ignore[override]
        out = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):  # type: ignore[override]
        g = torch.stack(grads)
        dist.all_reduce(g)
        return g[rank()]


def gather(x: torch.Tensor) -> torch.Tensor:
    """All-gather that lets gradients flow back to every rank's own rows (for SimCLR negatives)."""
    if not is_dist():
        return x
    return torch.cat(_GatherWithGrad.apply(x))


@torch.no_grad()
def broadcast(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    if is_dist():
        dist.broadcast(x, src)
    return x
