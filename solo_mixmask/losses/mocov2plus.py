"""InfoNCE against a momentum key and a queue of past keys (MoCo)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._reduce import reduce


def mocov2plus_loss_func(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor,
                         temperature: float = 0.1, reduction: str = "mean") -> torch.Tensor:
    """``-log softmax`` of the positive logit ``q.k`` among ``[q.k, q.queue]``.

    Args:
        query: ``(n, d)`` L2-normalised queries.
        key: ``(n, d)`` L2-normalised keys; row i is the positive of query i.
        queue: ``(d, K)`` L2-normalised negatives.
    """
    pos = (query * key).sum(dim=1, keepdim=True)
    neg = query @ queue
    logits = torch.cat([pos, neg], dim=1) / temperature
    targets = torch.zeros(len(query), dtype=torch.long, device=query.device)
    return reduce(F.cross_entropy(logits, targets, reduction="none"), reduction)
