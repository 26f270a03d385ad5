"""Translating this package's config vocabulary to solo-learn 1.0.6's, in place.

The config files under ``scripts/pretrain`` are written for both engines; they differ only in
names solo-learn lacks. Each translation keeps the meaning:

- ``scheduler.name: cosine`` (no warm-up) is solo-learn's ``warmup_cosine`` with 0 warm-up epochs;
- a dataset solo-learn does not list (e.g. ``tiny-imagenet``) is its ``custom`` ImageFolder dataset,
  with the dataset's normalisation written into each augmentation pipeline (``mean``/``std``, which
  solo-learn reads for ``custom`` data) unless the config sets it;
- an integer ``devices`` becomes what solo-learn's learning-rate scaling (``len(devices)``) and
  Lightning both read correctly: a string on CPU, a list of indices on accelerators.

Nothing else is touched: keys solo-learn does not read (``knn_eval.bank``, ``method_kwargs.mixmask``)
are simply ignored by it.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ..config.datasets import DATASETS, canonical_dataset

SOLO_DATASETS = ("cifar10", "cifar100", "stl10", "imagenet", "imagenet100", "custom")


def adapt_cfg(cfg: DictConfig) -> list[str]:
    """Applies the translations above to an unlocked config; returns one note per change."""
    notes: list[str] = []
    sched = OmegaConf.select(cfg, "scheduler.name")
    if sched == "cosine":
        cfg.scheduler.name = "warmup_cosine"
        cfg.scheduler.warmup_epochs = 0
        notes.append("scheduler.name=cosine -> warmup_cosine with scheduler.warmup_epochs=0")
    dataset = OmegaConf.select(cfg, "data.dataset")
    if isinstance(dataset, str) and dataset not in SOLO_DATASETS:
        known = canonical_dataset(dataset)
        if known in SOLO_DATASETS:
            cfg.data.dataset = known
            notes.append(f"data.dataset={dataset} -> {known}")
        else:
            cfg.data.dataset = "custom"
            note = f"data.dataset={dataset} -> custom (ImageFolder at data.train_path)"
            info = DATASETS.get(known)
            if info is not None and "augmentations" in cfg:
                for aug in cfg.augmentations:
                    if aug.get("mean") is None and aug.get("std") is None:
                        aug.mean, aug.std = list(info.mean), list(info.std)
                note += f" with {known}'s mean/std"
            notes.append(note)
    devices = OmegaConf.select(cfg, "devices")
    if isinstance(devices, int) and not isinstance(devices, bool):
        on_cpu = str(OmegaConf.select(cfg, "accelerator") or "auto") == "cpu"
        cfg.devices = str(devices) if on_cpu else list(range(devices))
        notes.append(f"devices={devices} -> {cfg.devices!r} (solo-learn scales the lr by "
                     "len(devices))")
    return notes

