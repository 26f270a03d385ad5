"""What the package knows about each dataset: class count, image statistics, whether torchvision
reads it. Plain data, here rather than in ``data`` because the config checks resolve dataset names
and class counts before any data module is needed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: Optional[int]  # None: counted from the class folders
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    torchvision: bool = False  # can be read (and downloaded) through torchvision.datasets


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True),
    "cifar100": DatasetInfo(100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True),
    "stl10": DatasetInfo(10, (0.4914, 0.4823, 0.4466), (0.247, 0.243, 0.261), True),
    "tiny-imagenet": DatasetInfo(200, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
    "imagenet100": DatasetInfo(100, IMAGENET_MEAN, IMAGENET_STD),
    "imagenet": DatasetInfo(1000, IMAGENET_MEAN, IMAGENET_STD),
    "custom": DatasetInfo(None, IMAGENET_MEAN, IMAGENET_STD),
}

ALIASES = {
    "imagenet-100": "imagenet100",
    "tinyimagenet": "tiny-imagenet",
    "tiny_imagenet": "tiny-imagenet",
    "imagenet-1k": "imagenet",
    "imagenet1k": "imagenet",
}


def canonical_dataset(name: str) -> str:
    key = str(name).lower()
    return ALIASES.get(key, key)
