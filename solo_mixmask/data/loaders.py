"""Datasets and DataLoaders for pretraining and evaluation, built from a parsed config."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from ..config.datasets import DATASETS
from ..config.loading import select
from ..errors import DataError
from .augmentations import build_eval_transform
from .batched import DRAWS, BatchedMultiCrop
from .datasets import (
    IMG_EXTENSIONS,
    ImageDataset,
    ImageList,
    TorchvisionDataset,
    fraction_indices,
    has_class_folders,
    scan_image_folder,
    verify_images,
)
from .recipe import Recipe, dataset_stats
from .sampling import EpochSampler, ResumableLoader


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


def build_dataset(cfg: DictConfig, path: str, train: bool, transform: Optional[Callable],
                  with_index: bool = True, no_labels: bool = False) -> Dataset:
    """An ImageFolder tree when ``path`` has class folders (or ``no_labels``); torchvision's
    CIFAR/STL loader otherwise, for the datasets it knows."""
    source = image_source(cfg, path, train, no_labels)
    if isinstance(source, TorchvisionDataset):
        source.transform, source.with_index = transform, with_index
        return source
    return ImageDataset(source, transform, skip_corrupt=bool(select(cfg, "data.skip_corrupt")),
                        with_index=with_index)


def image_source(cfg: DictConfig, path: str, train: bool,
                 no_labels: bool = False) -> Union[ImageList, TorchvisionDataset]:
    """The images of ``path``, checked: a listed ImageFolder tree (class count against the dataset,
    ``data.verify``), or torchvision's CIFAR/STL files."""
    name = cfg.data.dataset
    if not select(cfg, "data.download", False):
        if not Path(path).exists():
            raise DataError(f"data path does not exist: {path}")
        if Path(path).is_dir() and not any(Path(path).iterdir()):
            raise DataError(f"data path is empty: {path}")
    if DATASETS[name].torchvision and not no_labels and not has_class_folders(path):
        loose = Path(path).is_dir() and any(p.suffix.lower() in IMG_EXTENSIONS
                                            for p in Path(path).iterdir())
        if loose:
            raise DataError(f"{path} holds images but no class folders: use data.no_labels=true "
                            "or one sub-folder per class")
        return TorchvisionDataset(name, path, train, None, bool(cfg.data.download))
    images = scan_image_folder(path, no_labels=no_labels)
    expected = DATASETS[name].num_classes
    if not no_labels and expected is not None and len(images.classes) != expected:
        raise DataError(f"label count mismatch: data.dataset={name} has {expected} classes but "
                        f"{path} has {len(images.classes)} class folders: set data.dataset to "
                        "the dataset the folder holds (custom for your own)")
    return check_images(images, str(path), str(select(cfg, "data.verify", "quick")),
                        bool(select(cfg, "data.skip_corrupt", False)))


def check_images(images: ImageList, root: str, verify: str, skip_corrupt: bool) -> ImageList:
    """``data.verify``: ``quick`` (header and end of every file), ``full`` (decode every image) or
    ``none``. An unreadable file is a DataError naming it, or is left out with ``skip_corrupt``."""
    if verify in ("none", "False", "false"):
        return images
    bad = verify_images(images.paths, full=verify in ("full", "True", "true"))
    if not bad:
        return images
    if not skip_corrupt:
        path, why = bad[0]
        more = f"; {len(bad) - 1} more unreadable files in {root}" if len(bad) > 1 else ""
        raise DataError(f"cannot read image {path}: {why}{more} (data.skip_corrupt=true leaves "
                        "them out)")
    warnings.warn(f"skipping {len(bad)} unreadable images in {root}", stacklevel=2)
    bad_set = {p for p, _ in bad}
    return images.subset([i for i, p in enumerate(images.paths) if p not in bad_set])


def count_classes(cfg: DictConfig) -> int:
    """Class count of a custom dataset: its class folders (1 when unlabeled)."""
    if cfg.data.no_labels:
        return 1
    return len(scan_image_folder(cfg.data.train_path).classes)


def loader_kwargs(cfg: DictConfig, accelerator_is_gpu: bool) -> dict:
    workers = int(cfg.data.num_workers)
    pin = select(cfg, "performance.pin_memory", "auto")
    kw = {
        "num_workers": workers,
        "pin_memory": accelerator_is_gpu if pin == "auto" else bool(pin),
    }
    if workers > 0:
        kw["persistent_workers"] = bool(select(cfg, "performance.persistent_workers", True))
        kw["prefetch_factor"] = int(select(cfg, "performance.prefetch_factor", 2))
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
    ds = build_dataset(cfg, cfg.data.train_path, True, transform, no_labels=cfg.data.no_labels)
    indices = list(range(len(ds)))
    fraction = float(cfg.data.fraction)
    if 0 < fraction < 1:
        indices = fraction_indices(ds.targets, fraction, seed=int(cfg.seed)).tolist()
    if len(indices) < cfg.optimizer.batch_size:
        raise DataError(
            f"{cfg.data.train_path} has {len(indices)} images, fewer than one batch "
            f"(optimizer.batch_size={cfg.optimizer.batch_size})"
        )
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
    ds = build_dataset(cfg, path, train, transform, with_index=False)
    return DataLoader(ds, batch_size=batch_size or int(cfg.optimizer.batch_size), shuffle=False,
                      drop_last=False, **loader_kwargs(cfg, gpu))
