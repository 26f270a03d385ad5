"""What a run's loaders read of its config, resolved once: :class:`LoaderSpec`.

``pipeline.py`` builds one spec from the validated pretraining config; the builders of every
format (``loaders.py``, ``dali.py``, ``resident.py``) take the spec, never the whole config, so the
recipe is built once per run and each builder's inputs are the fields below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from omegaconf import DictConfig

from .recipe import Recipe


def worker_kwargs(data: Any, performance: Any, gpu: bool) -> dict[str, Any]:
    """DataLoader keyword arguments of the ``data.num_workers`` and ``performance`` keys."""
    workers = int(data.num_workers)
    pin = gpu if performance.pin_memory == "auto" else bool(performance.pin_memory)
    kw: dict[str, Any] = {"num_workers": workers, "pin_memory": pin}
    if workers > 0:
        kw["persistent_workers"] = bool(performance.persistent_workers)
        kw["prefetch_factor"] = int(performance.prefetch_factor)
    return kw


@dataclass(frozen=True)
class LoaderSpec:
    """The inputs of a run's loaders."""

    data: Any  # the validated ``data`` section: paths, format, checks, fraction, device cache
    recipe: Recipe
    batch_size: int
    seed: int
    gpu: bool  # training runs on a GPU
    workers: Mapping[str, Any]  # DataLoader keyword arguments (``worker_kwargs``)
    clean_bank: bool  # the KNN monitor reads a clean bank of the training images
    dali: Any  # the ``dali`` section
    num_nodes: int
    progress: bool  # show progress bars (the device format's one-time decode)
    compile_augmentations: bool
    augment_ahead: bool  # the device format's crops one batch ahead, on a side stream on GPUs

    @classmethod
    def from_config(cls, cfg: DictConfig, gpu: bool) -> LoaderSpec:
        """From a validated pretraining config."""
        return cls(
            data=cfg.data, recipe=Recipe.from_sections(cfg.augmentations, cfg.data),
            batch_size=int(cfg.optimizer.batch_size), seed=int(cfg.seed), gpu=gpu,
            workers=worker_kwargs(cfg.data, cfg.performance, gpu),
            clean_bank=bool(cfg.knn_eval.enabled) and cfg.knn_eval.bank == "clean",
            dali=cfg.dali, num_nodes=int(cfg.num_nodes), progress=bool(cfg.enable_progress_bar),
            compile_augmentations=bool(cfg.performance.compile_augmentations),
            augment_ahead=bool(cfg.performance.augment_ahead))

    @property
    def eval_crop(self) -> int:
        """The unaugmented loaders' image size: the first augmentation entry's crop."""
        return self.recipe.entries[0].size

    @property
    def held_out(self) -> bool:
        """Validation loaders exist: a labelled ``data.val_path``."""
        return bool(self.data.val_path) and not self.data.no_labels
