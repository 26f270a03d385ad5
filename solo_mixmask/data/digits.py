"""scikit-learn's bundled handwritten digits as an ImageFolder tree: real images, no download.

1,797 grayscale 8x8 scans (10 classes) are upsampled to 32 px RGB PNGs and split, stratified and
seeded, into ``train/`` and ``val/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_digits(root: str | Path, size: int = 32, val_fraction: float = 0.3,
                 seed: int = 0) -> tuple[Path, Path]:
    """Writes ``root/train/<digit>/*.png`` and ``root/val/<digit>/*.png`` (once)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(root)
    train, val = root / "train", root / "val"
    if (root / ".complete").is_file():
        return train, val
    digits = load_digits()
    images = (digits.images / 16.0 * 255).clip(0, 255).astype(np.uint8)
    labels = digits.target
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        is_val[rng.choice(idx, size=int(round(len(idx) * val_fraction)), replace=False)] = True
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = (val if is_val[i] else train) / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        pic = Image.fromarray(img, mode="L").resize((size, size), Image.BILINEAR).convert("RGB")
        pic.save(folder / f"{i:04d}.png")
    (root / ".complete").write_text("ok\n")
    return train, val
