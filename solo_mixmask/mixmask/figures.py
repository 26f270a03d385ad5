"""Pictures of MixMask masks and mixtures from real images (as in the paper's Figures 1 and 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .masks import sample_masks
from .mixing import mix


def draw_masks(images: torch.Tensor, out: str | Path, grids: Sequence[int] = (2, 4, 8, 16),
               patterns: Sequence[str] = ("blocked", "discrete"), ratio: float = 0.5,
               seed: int = 0) -> Path:
    """Writes a PNG: per pattern and grid size, the mask, the mixture ``m*a + (1-m)*b`` and its
    switch image ``m*b + (1-m)*a`` (the same mask with the roles of the two images exchanged).

    ``images``: two float images ``(2, 3, H, W)`` in [0, 1].
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    size = tuple(images.shape[-2:])
    rows = [(p, g) for p in patterns for g in grids if g <= min(size)]
    fig, axes = plt.subplots(len(rows), 5, figsize=(11, 2.3 * len(rows)), squeeze=False)
    perm = torch.tensor([1, 0])  # reverse order of a pair: each image fills the other
    for r, (pattern, grid) in enumerate(rows):
        mask, lam = sample_masks(pattern, grid, ratio, size, 1, False, rng)
        mixed = mix(images, mask, perm)
        lam_v = float(lam)
        panels = [
            (images[0], "image a"),
            (images[1], "image b"),
            (mask[0, 0].float().expand(3, -1, -1), f"{pattern} {grid}x{grid} mask"),
            (mixed[0], f"mix: a {lam_v:.2f} / b {1 - lam_v:.2f}"),
            (mixed[1], f"switch: b {lam_v:.2f} / a {1 - lam_v:.2f}"),
        ]
        for c, (img, title) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"MixMask masks (ratio {ratio}); lambda = kept fraction of the actual mask",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
