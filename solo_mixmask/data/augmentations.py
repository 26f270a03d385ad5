"""The evaluation transforms (torchvision.transforms.v2): the validation crop and the linear probe's
supervised augmentation. The pretraining recipe is ``recipe.py``, executed by ``batched.py``."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torchvision.transforms import v2

Transform = Callable[..., torch.Tensor]


def to_normalised(mean: Sequence[float], std: Sequence[float]) -> Transform:
    """uint8 grey levels to float in [0, 1], then normalised: the end of every eval transform."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def build_eval_transform(crop_size: int, mean: Sequence[float], std: Sequence[float]) -> Transform:
    """Validation transform: resize (to crop/0.875 above 64 px) and centre crop. Takes one image
    or a batch (the device-resident path's eval loader runs it on whole batches)."""
    resize = crop_size if crop_size <= 64 else int(round(crop_size / 0.875))
    return v2.Compose([
        v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(crop_size),
        to_normalised(mean, std),
    ])


def build_linear_train_transform(crop_size: int, mean: Sequence[float],
                                 std: Sequence[float]) -> Transform:
    """Standard supervised training augmentation for linear probes: crop and flip."""
    return v2.Compose([
        v2.RandomResizedCrop(crop_size, scale=(0.08, 1.0),
                             interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(),
        to_normalised(mean, std),
    ])
