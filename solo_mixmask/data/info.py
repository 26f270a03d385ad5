"""The dataset table, where the data modules first read it; it lives in ``config.datasets``
because the config checks, below ``data``, need it too."""

from __future__ import annotations

from ..config.datasets import (
    ALIASES,
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetInfo,
    canonical_dataset,
)

__all__ = ["ALIASES", "DATASETS", "IMAGENET_MEAN", "IMAGENET_STD", "DatasetInfo",
           "canonical_dataset"]
