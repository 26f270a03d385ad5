"""The DataLoader path (``data.format: image_folder``): workers decode and crop each image, the
batched recipe makes the crops of the worker's batch (``RecipeCollate``); and the unaugmented
loaders of validation and the clean KNN bank. The images come from ``sources.py``."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from .augmentations import build_eval_transform
from .batched import DRAWS, BatchedMultiCrop
from .recipe import Recipe
from .sampling import EpochSampler, ResumableLoader
from .sources import build_dataset, training_rows
from .spec import LoaderSpec


class DrawPerSample:
    """The pretraining dataset's transform: the decoded image and the uniforms of its crops, drawn
    from the sample's own generator (``sampling.py``), so the crops depend only on the seed, the
    epoch and the index. The recipe itself runs on the batch, in ``RecipeCollate``."""

    def __init__(self, num_crops: int) -> None:
        self.num_crops = int(num_crops)

    def __call__(self, img: torch.Tensor,
                 g: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        return img, torch.rand(self.num_crops, DRAWS, dtype=torch.float64, generator=g)


def worker_batch(shape: tuple[int, ...]) -> torch.Tensor:
    """An empty float32 batch, in shared memory inside a DataLoader worker (as torch's
    ``default_collate`` stacks there): the batch then reaches the training process without the
    copy into shared memory that sending an ordinary tensor makes."""
    empty = torch.empty(0, dtype=torch.float32)
    if get_worker_info() is None:
        return empty.new_empty(shape)
    storage = empty.untyped_storage()._new_shared(math.prod(shape) * empty.element_size())
    return empty.set_(storage).view(shape)


class RecipeCollate:
    """A DataLoader worker's collate function: ``(index, (image, uniforms), target)`` samples to
    ``[indexes, [crop_1..crop_n], targets]``, every crop made by the batched recipe."""

    def __init__(self, recipe: Recipe) -> None:
        self.crops = BatchedMultiCrop(recipe, allocate=worker_batch)

    def __call__(self, samples: Sequence[tuple[int, tuple[torch.Tensor, torch.Tensor], int]]
                 ) -> list[Any]:
        indexes = torch.tensor([s[0] for s in samples], dtype=torch.long)
        images = [s[1][0] for s in samples]
        uniforms = torch.stack([s[1][1] for s in samples], 1)  # (crops, B, DRAWS)
        targets = torch.tensor([s[2] for s in samples], dtype=torch.long)
        return [indexes, self.crops.apply_images(images, uniforms), targets]


def close_loaders(*loaders: object) -> None:
    """Stops the persistent workers of loaders a run is done with. Left to the garbage collector,
    their shutdown runs after the queues it signals through are finalized, and each worker is
    then joined for its full 5 s timeout before it is killed."""
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)
        if isinstance(loader, DataLoader) and iterator is not None:
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            loader._iterator = None


def build_pretrain_dataset(spec: LoaderSpec) -> tuple[Dataset, list[int]]:
    """The training dataset and the indices a run trains on (all, or the ``data.fraction``
    subset)."""
    ds = build_dataset(spec.data, spec.data.train_path, True, DrawPerSample(spec.recipe.num_crops),
                       no_labels=spec.data.no_labels)
    return ds, training_rows(ds.targets, spec.data, spec.seed, spec.batch_size)


def build_pretrain_loader(spec: LoaderSpec, data: tuple[Dataset, list[int]]) -> ResumableLoader:
    """Batches of ``[indexes, [crops], targets]`` of ``build_pretrain_dataset``'s dataset and
    indices; their order and crops depend only on the seed, the epoch and the sample
    (``sampling.py``), so a resumed run replays the uninterrupted one."""
    dataset, indices = data
    sampler = EpochSampler(indices, spec.batch_size, seed=spec.seed)
    return ResumableLoader(dataset, batch_size=spec.batch_size, sampler=sampler, drop_last=True,
                           collate_fn=RecipeCollate(spec.recipe), **spec.workers)


def build_eval_loader(spec: LoaderSpec, path: str, train: bool,
                      batch_size: Optional[int] = None) -> DataLoader:
    """Unaugmented ``(image, target)`` batches, e.g. for validation or a clean KNN bank."""
    transform = build_eval_transform(spec.eval_crop, spec.recipe.mean, spec.recipe.std)
    ds = build_dataset(spec.data, path, train, transform, with_index=False)
    return DataLoader(ds, batch_size=batch_size or spec.batch_size, shuffle=False,
                      drop_last=False, **spec.workers)
