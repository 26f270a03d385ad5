"""Optimizers from solo-learn's ``optimizer`` config (SGD, LARS via timm, Adam, AdamW)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError


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
    kwargs = dict(kwargs)
    exclude = kwargs.pop("exclude_bias_n_norm", False)
    if exclude:
        groups = split_no_decay(groups)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, weight_decay=weight_decay,
                               momentum=kwargs.pop("momentum", 0.9), **kwargs)
    if name == "lars":
        from timm.optim import Lars

        return Lars(groups, lr=lr, weight_decay=weight_decay,
                    momentum=kwargs.pop("momentum", 0.9),
                    trust_coeff=kwargs.pop("eta", 1e-3),
                    trust_clip=kwargs.pop("clip_lr", False), **kwargs)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, **kwargs)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, **kwargs)
    raise ConfigError(f"unknown optimizer {name!r}")


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]
