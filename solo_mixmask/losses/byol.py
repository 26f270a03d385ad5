"""BYOL's normalised regression loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._reduce import reduce


def byol_loss_func(p: torch.Tensor, z: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``2 - 2 cos(p, z)`` per sample; ``z`` (the target projection) carries no gradient."""
    values = 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)
    return reduce(values, reduction)
