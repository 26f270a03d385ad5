"""SimSiam's negative cosine similarity with stop-gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._reduce import reduce


def simsiam_loss_func(p: torch.Tensor, z: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``-cos(p, stopgrad(z))`` per sample."""
    return reduce(-F.cosine_similarity(p, z.detach(), dim=-1), reduction)
