"""Building the mixed (or erased) inputs: permutations, MixMask filling, Un-Mix, erase fills."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..utils.transfer import host_to_device


def permutation(n: int, kind: str, rng: np.random.Generator,
                device: Optional[torch.device] = None) -> torch.Tensor:
    """``reverse`` (i -> n-1-i, the official code's flip) or a fresh ``random`` permutation (drawn
    on the host, copied without a blocking transfer)."""
    if kind == "reverse":
        return torch.arange(n - 1, -1, -1, device=device)
    if kind == "random":
        return host_to_device(rng.permutation(n), device)
    raise ValueError(f"unknown permutation {kind!r}")


def inverse(perm: torch.Tensor) -> torch.Tensor:
    """``inv[perm[i]] = i``: row j of ``emb[inv]`` is the mixture whose filler was sample j."""
    return torch.argsort(perm)


def mix(x: torch.Tensor, mask: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``mask * x_i + (1 - mask) * x_perm(i)`` in one pass (mask: bool, broadcastable)."""
    return torch.where(mask, x, x[perm])


def unmix(x: torch.Tensor, prob: float, alpha: float,
          rng: np.random.Generator) -> tuple[torch.Tensor, float, str]:
    """Un-Mix's image mixture with the reversed batch.

    lambda ~ Beta(alpha, alpha); with probability ``prob`` a global mixup
    ``lambda x_i + (1 - lambda) x_rev(i)``, otherwise a CutMix box of side ratio ``sqrt(1 - lambda)``
    pasted from ``x_rev`` with lambda recomputed from the box area. Returns the mixture, lambda and
    the kind (``mixup`` or ``cutmix``).
    """
    lam = float(rng.beta(alpha, alpha))
    rev = x.flip(0)
    if rng.random() < prob:
        return torch.lerp(rev, x, lam), lam, "mixup"
    h, w = x.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y1, y2 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, h)
    x1, x2 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, w)
    out = x.clone()
    out[..., y1:y2, x1:x2] = rev[..., y1:y2, x1:x2]
    lam = 1.0 - float((y2 - y1) * (x2 - x1)) / float(h * w)
    return out, lam, "cutmix"


def erase_fill(x: torch.Tensor, fill: str, mean: tuple[float, ...], std: tuple[float, ...],
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """What an erased area shows, in the normalised space of ``x``.

    ``zero``: black pixels; ``mean``: the dataset's mean colour (0 after normalisation);
    ``noise``: standard Gaussian noise.
    """
    if fill == "mean":
        return torch.zeros((), dtype=x.dtype, device=x.device)
    if fill == "zero":
        # computed on the host: a tensor built from Python values on the device is a blocking copy
        m = torch.tensor(mean, dtype=x.dtype)
        s = torch.tensor(std, dtype=x.dtype)
        return host_to_device(-m / s, x.device).view(1, -1, 1, 1)
    if fill == "noise":
        return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    raise ValueError(f"unknown erase fill {fill!r}")


def erase(x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> tuple[torch.Tensor,
                                                                            torch.Tensor]:
    """The masked view and its complement: ``m*x + (1-m)*fill`` and ``(1-m)*x + m*fill``."""
    return torch.where(mask, x, fill), torch.where(mask, fill, x)
