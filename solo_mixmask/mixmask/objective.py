"""The asymmetric two-term objective (paper Eq. 4-6)."""

from __future__ import annotations

from typing import Callable

import torch

from .mixing import inverse

PerSampleLoss = Callable[[torch.Tensor], torch.Tensor]


def _weight(lam: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """``lam`` as a tensor of ``like``'s dtype and device. A Python lambda (Un-Mix's) is filled in
    on the device: ``torch.as_tensor(float, device=...)`` would be a blocking host-to-device copy.
    Either way the value is the float rounded once to the dtype."""
    if isinstance(lam, torch.Tensor):
        return lam.to(dtype=like.dtype, device=like.device)
    return torch.full((), float(lam), dtype=like.dtype, device=like.device)


def two_term_loss(per_sample_loss: PerSampleLoss, emb: torch.Tensor, lam: torch.Tensor | float,
                  perm: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``lambda * L(f(mix), t) + (1 - lambda) * L(f(mix)[perm^-1], t)``.

    ``per_sample_loss(e)`` must score row i of ``e`` against target i. With a shared mask ``lam`` is
    a scalar; with per-sample masks it is ``(n,)`` and the filler term of source j is weighted by
    ``1 - lam[perm^-1(j)]`` (the mixture that used x_j as filler). Equal per-sample lambdas give
    exactly the shared value.
    """
    inv = inverse(perm)
    main = per_sample_loss(emb)
    filler = per_sample_loss(emb[inv])
    lam = _weight(lam, main)
    w_main = lam
    w_fill = 1 - (lam[inv] if lam.ndim else lam)
    loss = (w_main * main).mean() + (w_fill * filler).mean()
    return loss, {"main": main.detach().mean(), "fill": filler.detach().mean()}


def erase_loss(per_sample_loss: PerSampleLoss, emb_masked: torch.Tensor,
               emb_complement: torch.Tensor,
               lam: torch.Tensor | float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``lambda * L(f(m*x + (1-m)*fill), t) + (1 - lambda) * L(f((1-m)*x + m*fill), t)``."""
    a = per_sample_loss(emb_masked)
    b = per_sample_loss(emb_complement)
    lam = _weight(lam, a)
    loss = (lam * a).mean() + ((1 - lam) * b).mean()
    return loss, {"main": a.detach().mean(), "fill": b.detach().mean()}
