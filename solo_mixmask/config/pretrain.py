"""Defaults and checks for pretraining configs (solo-learn's schema).

Every check runs before anything is built or written, and fails with a ``ConfigError`` whose message
names the offending key.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..data.info import DATASETS, canonical_dataset
from ..errors import ConfigError
from .loading import select

OPTIMIZERS = ("sgd", "lars", "adam", "adamw")
SCHEDULERS = ("warmup_cosine", "cosine", "step", "none")
MAX_CROP_SIZE = 1024
MIN_CROP_SIZE = 8


def _default(cfg: DictConfig, key: str, value: Any) -> None:
    OmegaConf.update(cfg, key, select(cfg, key, value), force_add=True)


def require(cfg: DictConfig, key: str, where: str = "config") -> Any:
    """The value at ``key``, or a ConfigError naming it."""
    value = select(cfg, key)
    if value is None:
        raise ConfigError(f"{where}: missing required key '{key}'")
    return value


def num_devices(devices: Any) -> int:
    """Devices given as an int, a list of ids or a string ('0,1' or '2'); -1/'auto' means 1 here."""
    if isinstance(devices, (list, tuple, ListConfig)):
        return max(1, len(devices))
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1", ""):
            return 1
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        return max(1, int(text))
    return max(1, int(devices))


def world_size(cfg: DictConfig) -> int:
    return num_devices(cfg.devices) * int(select(cfg, "num_nodes", 1))


def _check_augmentations(cfg: DictConfig) -> None:
    augs = select(cfg, "augmentations")
    if not isinstance(augs, ListConfig) or len(augs) == 0:
        raise ConfigError("config: 'augmentations' must be a non-empty list of crop recipes")
    for i, aug in enumerate(augs):
        size = select(aug, "crop_size")
        if size is None:
            raise ConfigError(f"augmentations[{i}]: missing required key 'crop_size'")
        if not MIN_CROP_SIZE <= int(size) <= MAX_CROP_SIZE:
            raise ConfigError(
                f"augmentations[{i}].crop_size={size} is outside the supported range "
                f"[{MIN_CROP_SIZE}, {MAX_CROP_SIZE}]"
            )
        if int(select(aug, "num_crops", 1)) < 1:
            raise ConfigError(f"augmentations[{i}].num_crops must be at least 1")
    big = int(augs[0].crop_size)
    large = sum(int(select(a, "num_crops", 1)) for a in augs if int(a.crop_size) == big)
    small = sum(int(select(a, "num_crops", 1)) for a in augs if int(a.crop_size) != big)
    cfg.data.num_large_crops = large
    cfg.data.num_small_crops = small


def check_optimizer(cfg: DictConfig, min_batch: int = 1) -> None:
    """A known optimizer name (normalised to lower case) and a usable batch size."""
    name = str(require(cfg, "optimizer.name")).lower()
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}: choose one of {list(OPTIMIZERS)}")
    cfg.optimizer.name = name
    batch_size = int(require(cfg, "optimizer.batch_size"))
    if batch_size < min_batch:
        raise ConfigError(f"optimizer.batch_size={batch_size} must be at least {min_batch}")


def parse_pretrain_cfg(cfg: DictConfig) -> DictConfig:
    """Fills solo-learn's defaults, scales the learning rates and validates the config."""
    from ..methods import METHODS

    cfg = copy.deepcopy(cfg)  # never mutate the caller's config
    OmegaConf.set_struct(cfg, False)
    method = require(cfg, "method")
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}: choose one of {sorted(METHODS)}")

    # backbone
    require(cfg, "backbone.name")
    _default(cfg, "backbone.kwargs", {})

    # data
    dataset = canonical_dataset(require(cfg, "data.dataset"))
    if dataset not in DATASETS:
        raise ConfigError(
            f"unknown dataset {cfg.data.dataset!r}: choose one of {sorted(DATASETS)}"
        )
    cfg.data.dataset = dataset
    require(cfg, "data.train_path")
    _default(cfg, "data.val_path", None)
    _default(cfg, "data.format", "image_folder")
    if cfg.data.format not in ("image_folder", "dali"):
        raise ConfigError(f"data.format={cfg.data.format!r}: use 'image_folder' or 'dali'")
    _default(cfg, "data.num_workers", 4)
    _default(cfg, "data.no_labels", False)
    _default(cfg, "data.fraction", -1)
    _default(cfg, "data.download", False)
    _default(cfg, "data.skip_corrupt", False)
    _default(cfg, "data.verify", False)
    fraction = float(cfg.data.fraction)
    if fraction != -1 and not 0 < fraction <= 1:
        raise ConfigError(f"data.fraction={fraction} must be in (0, 1] or -1 for all data")
    info = DATASETS[dataset]
    if info.num_classes is not None:
        cfg.data.num_classes = info.num_classes
    _check_augmentations(cfg)

    # optimisation
    check_optimizer(cfg, min_batch=2)
    name, batch_size = cfg.optimizer.name, int(cfg.optimizer.batch_size)
    require(cfg, "optimizer.lr")
    _default(cfg, "optimizer.classifier_lr", 0.1)
    _default(cfg, "optimizer.weight_decay", 0.0)
    _default(cfg, "optimizer.kwargs", {})
    _default(cfg, "optimizer.exclude_bias_n_norm_wd", False)
    if name in ("sgd", "lars"):
        _default(cfg, "optimizer.kwargs.momentum", 0.9)
    if name == "lars":
        _default(cfg, "optimizer.kwargs.eta", 1e-3)
        _default(cfg, "optimizer.kwargs.clip_lr", False)
        _default(cfg, "optimizer.kwargs.exclude_bias_n_norm", False)
    _default(cfg, "scheduler.name", "warmup_cosine")
    if cfg.scheduler.name not in SCHEDULERS:
        raise ConfigError(
            f"unknown scheduler {cfg.scheduler.name!r}: choose one of {list(SCHEDULERS)}"
        )
    _default(cfg, "scheduler.warmup_epochs", 10)
    _default(cfg, "scheduler.warmup_start_lr", 3e-5)
    _default(cfg, "scheduler.min_lr", 0.0)
    _default(cfg, "scheduler.lr_decay_steps", None)
    _default(cfg, "scheduler.gamma", 0.1)
    _default(cfg, "scheduler.interval", "step")
    if cfg.scheduler.name == "step" and not cfg.scheduler.lr_decay_steps:
        raise ConfigError("scheduler 'step' needs scheduler.lr_decay_steps (a list of epochs)")

    # Lightning
    _default(cfg, "max_epochs", 100)
    _default(cfg, "devices", 1)
    _default(cfg, "num_nodes", 1)
    _default(cfg, "accelerator", "auto")
    _default(cfg, "strategy", "auto")
    _default(cfg, "precision", 32)
    _default(cfg, "sync_batchnorm", False)
    _default(cfg, "accumulate_grad_batches", 1)
    _default(cfg, "seed", 5)
    _default(cfg, "resume_from_checkpoint", None)
    _default(cfg, "name", f"{method}-{dataset}")

    # momentum (EMA) schedule
    _default(cfg, "momentum.base_tau", 0.99)
    _default(cfg, "momentum.final_tau", 1.0)
    _default(cfg, "momentum.classifier", False)

    # monitoring, checkpoints, logging
    _default(cfg, "knn_eval.enabled", False)
    _default(cfg, "knn_eval.k", 20)
    _default(cfg, "knn_eval.T", 0.07)
    _default(cfg, "knn_eval.distance_func", "euclidean")
    _default(cfg, "knn_eval.bank", "crops")
    _default(cfg, "knn_eval.frequency", 1)
    if cfg.knn_eval.distance_func not in ("euclidean", "cosine"):
        raise ConfigError("knn_eval.distance_func must be 'euclidean' or 'cosine'")
    if cfg.knn_eval.bank not in ("crops", "clean"):
        raise ConfigError("knn_eval.bank must be 'crops' (solo-learn) or 'clean'")
    _default(cfg, "checkpoint.enabled", True)
    _default(cfg, "checkpoint.dir", "trained_models")
    _default(cfg, "checkpoint.frequency", 1)
    _default(cfg, "checkpoint.keep_prev", False)
    _default(cfg, "auto_resume.enabled", False)
    _default(cfg, "auto_resume.max_hours", 36)
    _default(cfg, "wandb.enabled", False)
    _default(cfg, "wandb.project", "solo-mixmask")
    _default(cfg, "wandb.entity", None)
    _default(cfg, "wandb.offline", False)
    _default(cfg, "tensorboard.enabled", False)
    _default(cfg, "performance.channels_last", "auto")
    if cfg.performance.channels_last == "auto":
        # channels_last wins on GPUs and, measured, on the CPU too (docs/speed.md)
        cfg.performance.channels_last = True
    _default(cfg, "performance.compile", False)
    _default(cfg, "performance.pin_memory", "auto")
    _default(cfg, "performance.persistent_workers", True)
    _default(cfg, "performance.prefetch_factor", 2)
    _default(cfg, "performance.disable_channel_last", False)
    _default(cfg, "dali.device", "auto")
    _default(cfg, "dali.threads", None)

    # linear lr scaling by the total batch size (solo-learn's convention); a parsed config (such
    # as a run's args.json) records its scale and is not scaled twice
    if select(cfg, "optimizer.lr_scale") is None:
        scale = batch_size * world_size(cfg) / 256
        cfg.optimizer.lr = float(cfg.optimizer.lr) * scale
        cfg.optimizer.classifier_lr = float(cfg.optimizer.classifier_lr) * scale
        cfg.optimizer.lr_scale = scale

    _default(cfg, "method_kwargs", {})
    METHODS[method].add_and_assert_specific_cfg(cfg)
    for key in ("optimizer.lr", "optimizer.classifier_lr"):
        if not math.isfinite(float(select(cfg, key))) or float(select(cfg, key)) < 0:
            raise ConfigError(f"{key} must be a non-negative number")
    return cfg
