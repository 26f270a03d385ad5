"""Optimizers from solo-learn's ``optimizer`` config (SGD, LARS via timm, Adam, AdamW) and the
one place a model's ``optimizer`` and ``scheduler`` sections become what Lightning's
``configure_optimizers`` returns (pretraining and the linear probe alike)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from omegaconf import OmegaConf
from torch import nn

from ..errors import ConfigError
from .schedulers import build_schedule, constant


def split_no_decay(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Moves biases and normalisation parameters (ndim <= 1) of every group into a twin group
    with no weight decay (which also exempts them from LARS adaptation)."""
    out = []
    for g in groups:
        params = list(g["params"])
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        if decay:
            out.append({**g, "params": decay})
        if no_decay:
            out.append({**g, "params": no_decay, "weight_decay": 0.0,
                        "name": f"{g.get('name', 'group')}_no_decay"})
    return out


def build_optimizer(name: str, groups: list[dict[str, Any]], lr: float, weight_decay: float,
                    kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer of a validated ``optimizer`` section: ``kwargs`` holds every key of the
    optimizer's schema (``config.schema.OPTIMIZER_KWARGS``), defaults included."""
    kwargs = dict(kwargs)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, weight_decay=weight_decay, **kwargs)
    if name == "lars":
        from timm.optim import Lars

        if kwargs.pop("exclude_bias_n_norm"):
            groups = split_no_decay(groups)
        return Lars(groups, lr=lr, weight_decay=weight_decay, trust_coeff=kwargs.pop("eta"),
                    trust_clip=kwargs.pop("clip_lr"), **kwargs)
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(groups, lr=lr, weight_decay=weight_decay, betas=tuple(kwargs.pop("betas")),
                   **kwargs)
    raise ConfigError(f"unknown optimizer {name!r}")


def configure_optimization(groups: list[dict[str, Any]], optimizer: Any, scheduler: Any,
                           stepping_batches: Callable[[], int], epochs: int) -> Any:
    """``configure_optimizers``'s value for parameter ``groups`` and a model's validated
    ``optimizer`` and ``scheduler`` sections. A group may set ``lr``, ``weight_decay`` and
    ``fix_lr`` (kept constant); ``stepping_batches`` counts the run's optimizer steps and is
    called only for ``scheduler.interval: step``."""
    if optimizer.exclude_bias_n_norm_wd:
        groups = split_no_decay(groups)
    kwargs = OmegaConf.to_container(optimizer.kwargs, resolve=True)
    opt = build_optimizer(str(optimizer.name), groups, float(optimizer.lr),
                          float(optimizer.weight_decay), kwargs)
    interval = str(scheduler.interval)
    total = stepping_batches() if interval == "step" else epochs
    schedule = build_schedule(scheduler, float(optimizer.lr), total, epochs)
    if schedule is None:
        return opt
    lambdas = [constant if g.get("fix_lr") else schedule for g in opt.param_groups]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval}}


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]
