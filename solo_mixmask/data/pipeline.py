"""One way from a parsed config to a run's data: ``PIPELINES`` maps each ``data.format`` to a
builder, and every builder returns the same ``PretrainData``.

``image_folder`` covers ImageFolder trees and torchvision's CIFAR/STL files (``sources.py`` tells
them apart); ``dali`` decodes and crops with NVIDIA DALI; ``device`` holds the decoded images on the
training device. All of them take their images from ``sources.py``, where the checks, the
``data.fraction`` subset and the batch-count check are written once. The builders take a
``LoaderSpec`` (``spec.py``): what the loaders read of the config, resolved once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from omegaconf import DictConfig

from .dali import build_dali_pretrain_loader
from .loaders import build_eval_loader, build_pretrain_dataset, build_pretrain_loader, close_loaders
from .resident import build_device_loaders
from .sources import count_classes
from .spec import LoaderSpec


@dataclass
class PretrainData:
    """A run's loaders: ``train`` yields ``[indexes, [crops], targets]``; ``val`` (None without a
    labelled validation set) and ``bank`` (the clean KNN bank, None unless ``knn_eval.bank:
    clean``) yield unaugmented ``(image, target)`` batches."""

    train: Any
    val: Optional[Iterable] = None
    bank: Optional[Iterable] = None

    def close(self) -> None:
        """Stops the loaders' persistent workers (see ``loaders.close_loaders``)."""
        close_loaders(self.train, self.val, self.bank)


def _held_out(spec: LoaderSpec) -> tuple[Optional[Iterable], Optional[Iterable]]:
    """Validation loader and clean KNN bank read by DataLoader workers."""
    if not spec.held_out:
        return None, None
    val = build_eval_loader(spec, str(spec.data.val_path), train=False)
    bank = build_eval_loader(spec, str(spec.data.train_path), train=True) if spec.clean_bank else None
    return val, bank


def _image_folder(spec: LoaderSpec) -> PretrainData:
    return PretrainData(build_pretrain_loader(spec, build_pretrain_dataset(spec)), *_held_out(spec))


def _dali(spec: LoaderSpec) -> PretrainData:
    return PretrainData(build_dali_pretrain_loader(spec), *_held_out(spec))


def _device(spec: LoaderSpec) -> PretrainData:
    return PretrainData(*build_device_loaders(spec))


#: ``data.format`` -> builder; the schema's choices for ``data.format`` are these keys
PIPELINES: dict[str, Callable[[LoaderSpec], PretrainData]] = {
    "image_folder": _image_folder,
    "dali": _dali,
    "device": _device,
}


def build_pretrain_data(cfg: DictConfig, gpu: bool) -> PretrainData:
    """The loaders of a parsed pretraining config (a custom dataset's class count is read from
    its folders first, so the model's heads can be sized). The config is read here, once, into
    the ``LoaderSpec`` every builder takes."""
    if cfg.data.dataset == "custom" and cfg.data.num_classes is None:
        cfg.data.num_classes = count_classes(cfg.data)
    return PIPELINES[cfg.data.format](LoaderSpec.from_config(cfg, gpu))
