"""Projection and prediction heads: small MLPs, every option a keyword."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, bn: bool = True,
        last_bn: bool = False, last_bn_affine: bool = True) -> nn.Sequential:
    """``num_layers`` linear layers with (BN +) ReLU between them.

    ``hidden_dim <= 0`` or ``num_layers == 1`` gives a single linear projection (MoCo v1).
    """
    if hidden_dim <= 0 or num_layers <= 1:
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    else:
        layers = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=last_bn_affine))
    return nn.Sequential(*layers)
