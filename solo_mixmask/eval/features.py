"""Feature banks of a frozen backbone, and the image datasets evaluations read.

``extract_features`` itself lives in ``utils.features``, where the training run's KNN monitor
takes it from too; it is re-exported here for the evaluations' callers.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.sources import build_dataset
from ..utils.features import extract_features

__all__ = ["class_names", "eval_loader", "extract_bank", "extract_features", "image_dataset"]


def _dataset_size(loader: Iterable) -> Optional[int]:
    try:
        return len(loader.dataset)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return None


@torch.no_grad()
def extract_bank(backbone: nn.Module, loader: Iterable, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, normalize: bool = False,
                 channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Like ``extract_features``, for large banks: each batch is optionally L2-normalised, cast to
    ``dtype`` and written into one preallocated CPU tensor, so an ImageNet bank (1.28M x 2048) takes
    5 GB in float16 and is never held twice."""
    was_training = backbone.training
    backbone.eval()
    size = _dataset_size(loader)
    bank: Optional[torch.Tensor] = None
    filled = 0
    overflow: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for batch in loader:
        x, y = batch[-2], batch[-1]
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        f = backbone(x).float()
        if normalize:
            f = torch.nn.functional.normalize(f, dim=1)
        f = f.to(dtype).cpu()
        if bank is None and size:
            bank = torch.empty(size, f.shape[1], dtype=dtype)
        if bank is not None and not overflow and filled + len(f) <= len(bank):
            bank[filled:filled + len(f)] = f
            filled += len(f)
        else:
            overflow.append(f)
        labels.append(torch.as_tensor(y).cpu())
    backbone.train(was_training)
    parts = ([bank[:filled]] if bank is not None and filled else []) + overflow
    if not parts:
        return torch.empty(0, dtype=dtype), torch.empty(0, dtype=torch.long)
    feats = parts[0] if len(parts) == 1 else torch.cat(parts)
    return feats, torch.cat(labels).long()


def image_dataset(data: Any, path: str | os.PathLike, transform: Optional[Callable],
                  train: bool) -> Dataset:
    """``(image, target)`` samples of an ImageFolder tree, or of torchvision's CIFAR/STL files for
    those datasets when ``path`` has no class folders (as in pretraining); ``data`` is the
    evaluation config's ``data`` section (``dataset``, ``download``, ``verify``,
    ``skip_corrupt``), read by the same source checks as pretraining."""
    return build_dataset(data, str(path), train, transform, with_index=False)


def class_names(ds: Dataset) -> Optional[list[str]]:
    """Class names of a dataset built by ``image_dataset`` (None when it has none)."""
    images = getattr(ds, "images", None)
    if images is not None and images.classes:
        return list(images.classes)
    inner = getattr(ds, "ds", None)
    classes = getattr(inner, "classes", None)
    return list(classes) if classes else None


def eval_loader(ds: Dataset, batch_size: int, num_workers: int, shuffle: bool = False,
                pin_memory: bool = False, drop_last: bool = False) -> DataLoader:
    kw: dict = {"num_workers": num_workers, "pin_memory": pin_memory}
    if num_workers > 0:
        kw["persistent_workers"] = False
    if not shuffle:  # its own generator: each pass seeds its workers from the global one otherwise,
        kw["generator"] = torch.Generator().manual_seed(0)  # so testing would shift training
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, **kw)
