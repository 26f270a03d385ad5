"""The DataLoader path (``data.format: image_folder``): workers decode and crop each image, the
batched recipe makes the crops of the worker's batch (``RecipeCollate``); and the unaugmented
loaders of validation and the clean KNN bank. The images come from ``sources.py``."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from .augmentations import build_eval_transform
from .batched import DRAWS, BatchedMultiCrop
from .recipe import Recipe, dataset_stats
from .sampling import EpochSampler, ResumableLoader
from .sources import build_dataset, training_rows


class DrawPerSample:
    """The pretraining dataset's transform: the decoded image and the uniforms of its crops, drawn
    from the sample's own generator (``sampling.py``), so the crops depend only on the seed, the
    epoch and the index. The recipe itself runs on the batch, in ``RecipeCollate``."""

    def __init__(self, num_crops: int) -> None:
        self.num_crops = int(num_crops)

    def __call__(self, img: torch.Tensor,
                 g: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        return img, torch.rand(self.num_crops, DRAWS, dtype=torch.float64, generator=g)


class RecipeCollate:
    """A DataLoader worker's collate function: ``(index, (image, uniforms), target)`` samples to
    ``[indexes, [crop_1..crop_n], targets]``, every crop made by the batched recipe."""

    def __init__(self, recipe: Recipe) -> None:
        self.crops = BatchedMultiCrop(recipe)

    def __call__(self, samples: Sequence[tuple[int, tuple[torch.Tensor, torch.Tensor], int]]
                 ) -> list[Any]:
        indexes = torch.tensor([s[0] for s in samples], dtype=torch.long)
        images = [s[1][0] for s in samples]
        uniforms = torch.stack([s[1][1] for s in samples], 1)  # (crops, B, DRAWS)
        targets = torch.tensor([s[2] for s in samples], dtype=torch.long)
        return [indexes, self.crops.apply_images(images, uniforms), targets]


def loader_kwargs(cfg: DictConfig, accelerator_is_gpu: bool) -> dict:
    workers = int(cfg.data.num_workers)
    perf = cfg.performance
    kw = {
        "num_workers": workers,
        "pin_memory": accelerator_is_gpu if perf.pin_memory == "auto" else bool(perf.pin_memory),
    }
    if workers > 0:
        kw["persistent_workers"] = bool(perf.persistent_workers)
        kw["prefetch_factor"] = int(perf.prefetch_factor)
    return kw


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


def build_pretrain_dataset(cfg: DictConfig) -> tuple[Dataset, list[int]]:
    """The training dataset and the indices a run trains on (all, or the ``data.fraction``
    subset)."""
    transform = DrawPerSample(Recipe.from_config(cfg).num_crops)
    ds = build_dataset(cfg.data, cfg.data.train_path, True, transform,
                       no_labels=cfg.data.no_labels)
    indices = training_rows(ds.targets, cfg.data, int(cfg.seed), int(cfg.optimizer.batch_size))
    return ds, indices


def build_pretrain_loader(cfg: DictConfig, data: tuple[Dataset, list[int]],
                          gpu: bool) -> ResumableLoader:
    """Batches of ``[indexes, [crops], targets]`` of ``build_pretrain_dataset``'s dataset and
    indices; their order and crops depend only on the seed, the epoch and the sample
    (``sampling.py``), so a resumed run replays the uninterrupted one."""
    dataset, indices = data
    sampler = EpochSampler(indices, int(cfg.optimizer.batch_size), seed=int(cfg.seed))
    return ResumableLoader(dataset, batch_size=int(cfg.optimizer.batch_size), sampler=sampler,
                           drop_last=True, collate_fn=RecipeCollate(Recipe.from_config(cfg)),
                           **loader_kwargs(cfg, gpu))


def build_eval_loader(cfg: DictConfig, path: str, train: bool, gpu: bool,
                      batch_size: Optional[int] = None) -> DataLoader:
    """Unaugmented ``(image, target)`` batches, e.g. for validation or a clean KNN bank."""
    mean, std = dataset_stats(cfg)
    transform = build_eval_transform(int(cfg.augmentations[0].crop_size), mean, std)
    ds = build_dataset(cfg.data, path, train, transform, with_index=False)
    return DataLoader(ds, batch_size=batch_size or int(cfg.optimizer.batch_size), shuffle=False,
                      drop_last=False, **loader_kwargs(cfg, gpu))
