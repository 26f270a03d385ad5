"""NT-Xent (SimCLR) and the generic InfoNCE it is built from."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils.distributed import gather, rank
from ._reduce import reduce


def info_nce(query: torch.Tensor, keys: torch.Tensor, positives: torch.Tensor,
             temperature: float = 0.1, exclude: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``query @ keys.T / T`` with target column ``positives[i]`` for row i.

    ``exclude`` is an optional boolean ``(n, len(keys))`` mask of logits to drop (self-similarity).
    """
    logits = F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T / temperature
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    return reduce(F.cross_entropy(logits, positives, reduction="none"), reduction)


def simclr_loss_func(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1,
                     reduction: str = "mean") -> torch.Tensor:
    """NT-Xent over two views; negatives are every other embedding of both views on all ranks.

    Returns ``2n`` per-sample values (view 1 rows, then view 2 rows) with ``reduction="none"``.
    """
    n = len(z1)
    offset = rank() * n
    all1, all2 = gather(z1), gather(z2)
    keys = torch.cat([all1, all2])  # (2N, d)
    total = len(all1)
    idx = torch.arange(n, device=z1.device) + offset
    queries = torch.cat([z1, z2])
    positives = torch.cat([idx + total, idx])
    self_cols = torch.cat([idx, idx + total])
    exclude = torch.zeros(2 * n, 2 * total, dtype=torch.bool, device=z1.device)
    exclude[torch.arange(2 * n, device=z1.device), self_cols] = True
    return info_nce(queries, keys, positives, temperature, exclude, reduction)


def mixture_nce(emb: torch.Tensor, keys: torch.Tensor, offset: int,
                temperature: float) -> torch.Tensor:
    """Per-sample InfoNCE of a mixed crop's embeddings (this rank's ``n`` rows) against ``keys``,
    the candidates gathered from every rank: row i's positive is key ``offset + i`` (the target
    crop's embedding of the same sample; ``offset`` is this rank's first row). Every other key is
    a negative, so the candidates are one clean crop's embeddings (the MoCo form) or both crops'
    (NT-Xent's set, the target crop's first)."""
    positives = torch.arange(len(emb), device=emb.device) + offset
    return info_nce(emb, keys, positives, temperature, reduction="none")
