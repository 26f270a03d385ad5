"""The images a run reads, checked before any loader exists: every data path of every format
(DataLoader, DALI, device-resident) and the evaluations start here.

Each function takes the config's ``data`` section (pretraining's ``DataConfig`` or evaluation's
``EvalDataConfig``; both hold ``dataset``, ``download``, ``verify`` and ``skip_corrupt``), never the
whole config. ``training_rows`` is the one place the ``data.fraction`` subset and the "fewer than
one batch" check are written.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from torch.utils.data import Dataset

from ..config.datasets import DATASETS
from ..errors import DataError
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


def image_source(data: Any, path: str, train: bool,
                 no_labels: bool = False) -> Union[ImageList, TorchvisionDataset]:
    """The images of ``path``, checked: a listed ImageFolder tree (class count against the dataset,
    ``data.verify``), or torchvision's CIFAR/STL files."""
    name = data.dataset
    if not data.download:
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
        return TorchvisionDataset(name, path, train, None, bool(data.download))
    images = scan_image_folder(path, no_labels=no_labels)
    expected = DATASETS[name].num_classes
    if not no_labels and expected is not None and len(images.classes) != expected:
        raise DataError(f"label count mismatch: data.dataset={name} has {expected} classes but "
                        f"{path} has {len(images.classes)} class folders: set data.dataset to "
                        "the dataset the folder holds (custom for your own)")
    return check_images(images, str(path), data)


def check_images(images: ImageList, root: str, data: Any) -> ImageList:
    """``data.verify``: ``quick`` (header and end of every file), ``full`` (decode every image) or
    ``none``. An unreadable file is a DataError naming it, or is left out with
    ``data.skip_corrupt``."""
    verify = str(data.verify)
    if verify == "none":
        return images
    bad = verify_images(images.paths, full=verify == "full")
    if not bad:
        return images
    if not data.skip_corrupt:
        path, why = bad[0]
        more = f"; {len(bad) - 1} more unreadable files in {root}" if len(bad) > 1 else ""
        raise DataError(f"cannot read image {path}: {why}{more} (data.skip_corrupt=true leaves "
                        "them out)")
    warnings.warn(f"skipping {len(bad)} unreadable images in {root}", stacklevel=2)
    bad_set = {p for p, _ in bad}
    return images.subset([i for i, p in enumerate(images.paths) if p not in bad_set])


def build_dataset(data: Any, path: str, train: bool, transform: Optional[Callable],
                  with_index: bool = True, no_labels: bool = False) -> Dataset:
    """An ImageFolder tree when ``path`` has class folders (or ``no_labels``); torchvision's
    CIFAR/STL loader otherwise, for the datasets it knows."""
    source = image_source(data, path, train, no_labels)
    if isinstance(source, TorchvisionDataset):
        source.transform, source.with_index = transform, with_index
        return source
    return ImageDataset(source, transform, skip_corrupt=bool(data.skip_corrupt),
                        with_index=with_index)


def count_classes(data: Any) -> int:
    """Class count of a custom dataset: its class folders (1 when unlabeled)."""
    if data.no_labels:
        return 1
    return len(scan_image_folder(data.train_path).classes)


def training_rows(targets: Sequence[int], data: Any, seed: int, batch_size: int) -> list[int]:
    """The rows of the training images a run trains on: all, or the class-balanced
    ``data.fraction`` subset; fewer than one batch is a DataError."""
    rows = list(range(len(targets)))
    fraction = float(data.fraction)
    if 0 < fraction < 1:
        rows = fraction_indices(targets, fraction, seed=seed).tolist()
    if len(rows) < batch_size:
        raise DataError(f"{data.train_path} has {len(rows)} images, fewer than one batch "
                        f"(optimizer.batch_size={batch_size})")
    return rows
