"""``solo-mixmask show-masks``: MixMask masks and mixtures of two real images, as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", default=None,
                   help="an ImageFolder tree or a packed .npz of JPEGs (default: the bundled "
                   "digits)")
    p.add_argument("--index", type=int, nargs=2, default=(0, 1), metavar=("A", "B"),
                   help="which two images (positions in the sorted dataset)")
    p.add_argument("--size", type=int, default=224, help="resize both images to this size")
    p.add_argument("--grids", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="mixmask_masks.png")


def load_pair(source: str | None, index: tuple[int, int], size: int) -> torch.Tensor:
    """Two real images as floats in [0, 1], resized to ``size``."""
    from torchvision.transforms.v2 import functional as F

    from ..data.datasets import decode_image, scan_image_folder

    if source is None:
        from ..data.digits import write_digits
        from .quickstart import cache_dir

        train, _ = write_digits(cache_dir() / "digits-32px")
        source = str(train)
    if source.endswith(".npz"):
        from ..data.npz import load_npz

        z = load_npz(source)
        jpeg, off = z["jpeg"], z["offsets"]
        n = len(off) - 1
        from torchvision.io import ImageReadMode, decode_jpeg

        pics = []
        for i in index:
            if not 0 <= i < n:
                raise DataError(f"image index {i} out of range: {source} holds {n} images")
            data = torch.from_numpy(np.ascontiguousarray(jpeg[off[i]:off[i + 1]]))
            pics.append(decode_jpeg(data, mode=ImageReadMode.RGB))
    else:
        images = scan_image_folder(source, no_labels=True)
        for i in index:
            if not 0 <= i < len(images):
                raise DataError(f"image index {i} out of range: {source} holds {len(images)} "
                                "images")
        pics = [decode_image(images.paths[i]) for i in index]
    pics = [F.center_crop(F.resize(p, size, antialias=True), [size, size]) for p in pics]
    return torch.stack(pics).float() / 255


def check_arguments(args: argparse.Namespace) -> None:
    if not 8 <= args.size <= 2048:
        raise ConfigError(f"--size {args.size}: use 8 to 2048 pixels")
    bad = [g for g in args.grids if not 2 <= g <= args.size]
    if bad:
        raise ConfigError(f"--grids {bad[0]}: a grid is 2 to --size ({args.size}) cells a side")
    if not 0 < args.ratio < 1:
        raise ConfigError(f"--ratio {args.ratio}: the kept fraction lies inside (0, 1)")
    out = Path(args.out)
    if out.suffix.lower() != ".png" or out.is_dir():
        raise ConfigError(f"--out {out}: give a .png file name")


def run(args: argparse.Namespace) -> int:
    from ..mixmask.figures import draw_masks

    check_arguments(args)

    pair = load_pair(args.images, tuple(args.index), args.size)
    out = draw_masks(pair, args.out, grids=args.grids, ratio=args.ratio, seed=args.seed)
    print(f"wrote {out}")
    return 0
