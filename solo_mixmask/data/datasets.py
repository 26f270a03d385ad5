"""Indexed image datasets: ImageFolder trees, unlabeled folders and torchvision's CIFAR/STL.

Every pretraining sample is ``(index, crops, target)``: the index is the position in the full dataset
(solo-learn's batch format), the target is -1 for unlabeled data.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torchvision.datasets as tvd
from PIL import Image
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode
from torchvision.io import decode_image as decode_bytes
from torchvision.transforms.v2.functional import pil_to_tensor

from ..errors import DataError
from .sampling import sample_generator

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


@dataclass
class ImageList:
    """Files and labels of a dataset, in a stable (sorted) order."""

    paths: list[str]
    targets: list[int]
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, keep: Sequence[int]) -> ImageList:
        return ImageList([self.paths[i] for i in keep], [self.targets[i] for i in keep],
                         self.classes)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def _walk_images(root: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f)]
    return found


def scan_image_folder(root: str | os.PathLike, no_labels: bool = False) -> ImageList:
    """Lists an ImageFolder tree (one sub-folder per class) or, with ``no_labels``, every image.

    Raises a DataError for a missing or empty path and for a class folder without images.
    """
    root = str(root)
    if not os.path.exists(root):
        raise DataError(f"data path does not exist: {root}")
    if not os.path.isdir(root):
        raise DataError(f"data path is not a directory: {root}")
    if no_labels:
        paths = _walk_images(root)
        if not paths:
            raise DataError(f"no images found under {root}")
        return ImageList(paths, [-1] * len(paths))
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        loose = [f for f in os.listdir(root) if _is_image(f)]
        if loose:
            raise DataError(
                f"{root} holds images but no class folders: use data.no_labels=true "
                "or one sub-folder per class"
            )
        raise DataError(f"data path is empty: {root}")
    paths: list[str] = []
    targets: list[int] = []
    for label, name in enumerate(classes):
        files = _walk_images(os.path.join(root, name))
        if not files:
            raise DataError(f"class folder has no images: {os.path.join(root, name)}")
        paths += files
        targets += [label] * len(files)
    return ImageList(paths, targets, classes)


def fraction_indices(targets: Sequence[int], fraction: float, seed: int = 0) -> np.ndarray:
    """A class-balanced, seeded subset of about ``fraction`` of the samples (sorted)."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(targets):
        idx = np.flatnonzero(targets == label)
        n = max(1, int(round(len(idx) * fraction)))
        keep.append(rng.choice(idx, size=n, replace=False))
    return np.sort(np.concatenate(keep))


def decode_image(path: str) -> torch.Tensor:
    """An image file as uint8 RGB (3, H, W): libjpeg-turbo/libpng through torchvision, PIL for
    other formats. The bytes are read in Python: on CIFAR-10's 32 px JPEGs that decodes 1.4x the
    images per second of reading them with ``torchvision.io.read_file``."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    try:
        return decode_bytes(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):  # ValueError: an empty file
        with Image.open(path) as img:
            return pil_to_tensor(img.convert("RGB"))


class ImageDataset(Dataset):
    """Files on disk, decoded to uint8 tensors and transformed; returns ``(index, x, target)``.

    A file that cannot be decoded raises a DataError naming it, or, with ``skip_corrupt``, is
    replaced by the next readable sample with a warning that counts the skips.
    """

    def __init__(self, images: ImageList, transform: Optional[Callable] = None,
                 skip_corrupt: bool = False, with_index: bool = True) -> None:
        self.images = images
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.with_index = with_index
        self.skipped = 0

    @property
    def targets(self) -> list[int]:
        return self.images.targets

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> torch.Tensor:
        for offset in range(len(self)):
            i = (index + offset) % len(self)
            path = self.images.paths[i]
            try:
                return decode_image(path)
            except Exception as exc:  # noqa: BLE001 - any decoder failure
                if not self.skip_corrupt:
                    raise DataError(f"cannot read image {path}: {exc}") from None
                self.skipped += 1
                warnings.warn(f"skipping unreadable image {path} ({self.skipped} skipped so far)",
                              stacklevel=2)
        raise DataError("no readable image in the dataset")

    def __getitem__(self, key: Any):
        """``key``: an index, or ``(sample_seed, index)`` from ``EpochSampler`` (the crops are then
        drawn from the sample's own generator)."""
        index, g = sample_generator(key)
        img = self.load(index)
        if self.transform is not None:
            img = self.transform(img, g) if g is not None else self.transform(img)
        target = self.images.targets[index]
        return (index, img, target) if self.with_index else (img, target)


class TorchvisionDataset(Dataset):
    """CIFAR-10/100 or STL-10 through torchvision, with the same sample layout as ImageDataset."""

    def __init__(self, name: str, root: str, train: bool, transform: Optional[Callable],
                 download: bool, no_labels: bool = False, with_index: bool = True) -> None:
        try:
            if name == "stl10":
                split = ("train+unlabeled" if no_labels else "train") if train else "test"
                self.ds = tvd.STL10(root, split=split, download=download)
            else:
                cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
                self.ds = cls(root, train=train, download=download)
        except RuntimeError:
            raise DataError(
                f"{root} has no class folders and no torchvision {name} files: point the path at "
                f"an ImageFolder tree (one sub-folder per class), or set data.download=true to "
                f"fetch {name} there"
            ) from None
        self.transform = transform
        self.with_index = with_index
        labels = getattr(self.ds, "targets", None)
        if labels is None:
            labels = self.ds.labels
        self.targets = [int(t) for t in labels]

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: Any):
        index, g = sample_generator(key)
        img, target = self.ds[index]
        img = pil_to_tensor(img.convert("RGB"))
        if self.transform is not None:
            img = self.transform(img, g) if g is not None else self.transform(img)
        return (index, img, int(target)) if self.with_index else (img, int(target))


def has_class_folders(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and any(e.is_dir() and not e.name.startswith(".") for e in p.iterdir())


#: leading bytes of the image formats the decoders read
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF8", b"II*\x00", b"MM\x00*", b"P5",
          b"P6", b"P3", b"P2")


def header_problem(path: str) -> Optional[str]:
    """Why a file is not a readable image judging from its first and last bytes, or None.

    Checks that the file opens, starts with a known image signature (JPEG, PNG, BMP, GIF, TIFF,
    PPM/PGM, WebP) and, for a JPEG, ends with the end-of-image marker (a truncated download or
    copy loses it). Two small reads per file: cheap enough to run before every training start.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64))
            tail = f.read().rstrip(b"\x00")
    except OSError as exc:
        return f"cannot open: {exc.strerror or exc}"
    if size == 0:
        return "empty file"
    webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    if not webp and not head.startswith(_MAGIC):
        return "not an image (unknown file signature)"
    if head.startswith(b"\xff\xd8\xff") and not tail.endswith(b"\xff\xd9"):
        return "truncated JPEG (no end-of-image marker)"
    return None


def verify_images(paths: Sequence[str], full: bool = True) -> list[tuple[str, str]]:
    """``(path, problem)`` of every unreadable file: ``full`` decodes each image, else only the
    header and end checks of ``header_problem`` run (threads: the work is file I/O)."""
    def problem(path: str) -> Optional[str]:
        if not full:
            return header_problem(path)
        try:
            decode_image(path)
        except Exception as exc:  # noqa: BLE001 - any decoder failure
            return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None

    workers = min(16, (os.cpu_count() or 1) * 4) if not full else (os.cpu_count() or 1)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        found = list(pool.map(problem, paths, chunksize=256))
    return [(p, why) for p, why in zip(paths, found) if why is not None]
