"""Features of a frozen backbone over a loader: what both the KNN monitor of a training run and
the offline evaluations classify."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


@torch.no_grad()
def extract_features(backbone: nn.Module, loader: Iterable, device: torch.device | str = "cpu",
                     channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features and labels of every batch of ``(x, y)`` (or ``(index, x, y)``)."""
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for batch in loader:
        x, y = batch[-2], batch[-1]
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats.append(backbone(x).float().cpu())
        labels.append(torch.as_tensor(y).cpu())
    backbone.train(was_training)
    if not feats:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels).long()
