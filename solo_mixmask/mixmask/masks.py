"""Grid masks for MixMask: ``blocked`` (BEiT-style rectangles) and ``discrete`` (random cells).

A grid mask is an ``n_g x n_g`` boolean array; 1 (True) keeps the main image, 0 is filled. It is
upsampled (nearest) to the crop, and lambda is the kept fraction of the *upsampled* mask, which is
exact even when the crop is not a multiple of the grid. Only the tiny grid is generated on the host
(the blocked pattern needs a short loop); everything per pixel runs on the batch's device.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.transfer import host_to_device

Ratio = Union[float, tuple[float, float]]


def target_cells(ratio: float, grid: int) -> int:
    """Cells that keep the main image: ``round(ratio * grid^2)``, never none and never all."""
    return min(max(int(round(ratio * grid * grid)), 1), grid * grid - 1)


def _place_rectangle(mask: np.ndarray, lo: int, left: int, rng: np.random.Generator,
                     min_aspect: float, attempts: int) -> int:
    """Sets one random rectangle of at least ``lo`` cells adding 1..``left`` new cells; returns
    how many it added (0 when no try fitted)."""
    grid = mask.shape[0]
    log_lo, log_hi = math.log(min_aspect), math.log(1 / min_aspect)
    for _ in range(attempts):
        area = rng.uniform(lo, left)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        h = min(grid, max(1, int(round(math.sqrt(area * aspect)))))
        w = min(grid, max(1, int(round(math.sqrt(area / aspect)))))
        if h * w < lo:  # rounding shrank the rectangle below the minimum
            continue
        top = int(rng.integers(0, grid - h + 1))
        lft = int(rng.integers(0, grid - w + 1))
        block = mask[top:top + h, lft:lft + w]
        new = h * w - int(block.sum())
        if 0 < new <= left:
            block[...] = True
            return new
    return 0


def blocked_grid(grid: int, ratio: float, rng: np.random.Generator, min_cells: int = 4,
                 min_aspect: float = 0.3, attempts: int = 10) -> np.ndarray:
    """Sets ``round(ratio * grid^2)`` cells (at least one, never all) with random rectangles.

    Each rectangle has an area drawn uniformly between ``min_cells`` (capped by the cells still
    wanted) and the cells still wanted, a log-uniform aspect ratio in ``[min_aspect, 1/min_aspect]``,
    at least that minimum area after rounding to whole cells, and is accepted only if it adds
    between 1 and the still-wanted number of new cells. When no such rectangle fits in
    ``attempts`` tries (3 of 2x2 cells admit no rectangle of 3), smaller ones down to a single cell
    are tried, then one free cell is taken directly, so the mask always keeps exactly the target
    and lambda is the ratio the config asked for.
    """
    mask = np.zeros((grid, grid), dtype=bool)
    want = target_cells(ratio, grid)
    count = 0
    while count < want:
        left = want - count
        lo = min(min_cells, left)
        added = _place_rectangle(mask, lo, left, rng, min_aspect, attempts)
        if added == 0 and lo > 1:
            added = _place_rectangle(mask, 1, left, rng, min_aspect, attempts)
        if added == 0:  # random tries keep missing the few free cells: take one directly
            mask.flat[int(rng.choice(np.flatnonzero(~mask)))] = True
            added = 1
        count += added
    return mask


def discrete_grid(grid: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``round(ratio * grid^2)`` cells, uniformly at random, never none and never all."""
    cells = grid * grid
    k = target_cells(ratio, grid)
    flat = np.zeros(cells, dtype=bool)
    flat[rng.choice(cells, size=k, replace=False)] = True
    return flat.reshape(grid, grid)


def draw_ratio(ratio: Ratio, rng: np.random.Generator) -> float:
    """A constant ratio, or one drawn uniformly from ``(a, b)`` (once per batch)."""
    if isinstance(ratio, (tuple, list)):
        return float(rng.uniform(ratio[0], ratio[1]))
    return float(ratio)


def sample_grids(pattern: str, grid: int, ratio: Ratio, count: int,
                 rng: np.random.Generator) -> np.ndarray:
    """``count`` grid masks ``(count, grid, grid)``; the ratio is drawn once for the batch."""
    r = draw_ratio(ratio, rng)
    make = blocked_grid if pattern == "blocked" else discrete_grid
    if pattern not in ("blocked", "discrete"):
        raise ValueError(f"unknown mask pattern {pattern!r}")
    return np.stack([make(grid, r, rng) for _ in range(count)])


def upsample(grids: np.ndarray | torch.Tensor, size: tuple[int, int],
             device: Optional[torch.device] = None) -> torch.Tensor:
    """Nearest upsampling of ``(m, g, g)`` grids to a boolean ``(m, 1, H, W)`` pixel mask (the
    host grids reach the device without a blocking copy)."""
    g = host_to_device(grids, device).to(torch.float32)[:, None]
    return F.interpolate(g, size=size, mode="nearest") > 0.5


def sample_masks(pattern: str, grid: int, ratio: Ratio, size: tuple[int, int], batch: int,
                 per_sample: bool, rng: np.random.Generator,
                 device: Optional[torch.device] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel masks and their lambdas.

    Returns ``mask`` of shape ``(1, 1, H, W)`` (one mask for the batch) or ``(n, 1, H, W)``
    (per sample), and ``lam``: a scalar tensor or ``(n,)``, the kept fraction of each mask.
    """
    grids = sample_grids(pattern, grid, ratio, batch if per_sample else 1, rng)
    mask = upsample(grids, size, device)
    lam = mask.float().mean(dim=(1, 2, 3))
    return mask, (lam if per_sample else lam[0])
