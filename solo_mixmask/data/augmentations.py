"""Crop recipes (solo-learn's ``augmentations`` list) on torchvision.transforms.v2.

Images arrive as uint8 CHW tensors, so every operation runs on tensors; normalisation happens last,
in float. Each entry of the list yields ``num_crops`` crops; the crops of all entries, in order, form
the ``[crop_1..crop_n]`` of a training batch.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from omegaconf import DictConfig
from torchvision.transforms import v2

from ..config.loading import select

Transform = Callable[[torch.Tensor], torch.Tensor]


def blur_kernel(crop_size: int) -> int:
    """An odd kernel of about a tenth of the crop (23 px at 224, as in SimCLR/BYOL)."""
    k = max(3, int(round(crop_size * 0.1)))
    return k if k % 2 else k + 1


def build_crop_transform(aug: DictConfig, mean: Sequence[float],
                         std: Sequence[float]) -> Transform:
    """One crop recipe: random resized crop, colour jitter, grayscale, blur, solarization,
    equalization, flip, then float conversion and normalisation."""
    size = int(aug.crop_size)
    ops: list[Callable] = []
    if select(aug, "rrc.enabled", True):
        ops.append(v2.RandomResizedCrop(
            size,
            scale=(float(select(aug, "rrc.crop_min_scale", 0.08)),
                   float(select(aug, "rrc.crop_max_scale", 1.0))),
            interpolation=v2.InterpolationMode.BICUBIC, antialias=True,
        ))
    else:
        ops += [v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                v2.CenterCrop(size)]
    p = float(select(aug, "color_jitter.prob", 0.0))
    if p > 0:
        jitter = v2.ColorJitter(
            float(select(aug, "color_jitter.brightness", 0.4)),
            float(select(aug, "color_jitter.contrast", 0.4)),
            float(select(aug, "color_jitter.saturation", 0.2)),
            float(select(aug, "color_jitter.hue", 0.1)),
        )
        ops.append(v2.RandomApply([jitter], p=p))
    p = float(select(aug, "grayscale.prob", 0.0))
    if p > 0:
        ops.append(v2.RandomGrayscale(p=p))
    p = float(select(aug, "gaussian_blur.prob", 0.0))
    if p > 0:
        sigma = (float(select(aug, "gaussian_blur.sigma_min", 0.1)),
                 float(select(aug, "gaussian_blur.sigma_max", 2.0)))
        ops.append(v2.RandomApply([v2.GaussianBlur(blur_kernel(size), sigma=sigma)], p=p))
    p = float(select(aug, "solarization.prob", 0.0))
    if p > 0:
        ops.append(v2.RandomSolarize(threshold=128, p=p))
    p = float(select(aug, "equalization.prob", 0.0))
    if p > 0:
        ops.append(v2.RandomEqualize(p=p))
    p = float(select(aug, "horizontal_flip.prob", 0.0))
    if p > 0:
        ops.append(v2.RandomHorizontalFlip(p=p))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)


class MultiCrop:
    """Applies each recipe ``num_crops`` times: image -> list of crops."""

    def __init__(self, recipes: Sequence[tuple[Transform, int]]) -> None:
        self.recipes = list(recipes)

    def __call__(self, img: torch.Tensor) -> list[torch.Tensor]:
        return [t(img) for t, n in self.recipes for _ in range(n)]

    def __repr__(self) -> str:
        return "\n".join(f"{n} x {t}" for t, n in self.recipes)


def build_pretrain_transform(augmentations: Sequence[DictConfig], mean: Sequence[float],
                             std: Sequence[float]) -> MultiCrop:
    return MultiCrop([(build_crop_transform(a, mean, std), int(select(a, "num_crops", 1)))
                      for a in augmentations])


def build_eval_transform(crop_size: int, mean: Sequence[float], std: Sequence[float]) -> Transform:
    """Validation transform: resize (to crop/0.875 above 64 px) and centre crop."""
    resize = crop_size if crop_size <= 64 else int(round(crop_size / 0.875))
    return v2.Compose([
        v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(crop_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])


def build_linear_train_transform(crop_size: int, mean: Sequence[float],
                                 std: Sequence[float]) -> Transform:
    """Standard supervised training augmentation for linear probes: crop and flip."""
    return v2.Compose([
        v2.RandomResizedCrop(crop_size, scale=(0.08, 1.0),
                             interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])
