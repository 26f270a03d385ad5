"""Parsing pretraining configs: the schema check, then what depends on several keys.

``parse_common_cfg`` runs before anything is built or written; every problem is a ``ConfigError``
naming the key. Types, ranges, choices and defaults come from ``schema.PretrainConfig``; this module
adds the checks that involve more than one key, the machine (accelerator, precision) and the
solo-learn conventions (learning rates scaled by the total batch size / 256). The method's own
checks (``method_kwargs``) belong to the method classes, above this layer: the engine's
``parse_pretrain_cfg`` runs them after these.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from typing import Any, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..utils.distributed import configured_world_size
from .datasets import DATASETS, canonical_dataset
from .loading import select
from .schema import OPTIMIZER_KWARGS, PretrainConfig
from .solo_keys import report_ignored
from .validation import closest, validate


def require(cfg: DictConfig, key: str, where: str = "config") -> Any:
    """The value at ``key``, or a ConfigError naming it."""
    value = select(cfg, key)
    if value is None:
        raise ConfigError(f"{where}: missing required key '{key}'")
    return value


def resolve_hardware(cfg: DictConfig) -> None:
    """``accelerator``, ``precision`` and ``devices`` as they will run on this machine.

    ``auto`` picks the GPU when CUDA sees one, else the CPU; precision ``auto`` is bf16-mixed on a
    GPU that supports it, 16-mixed on an older one and 32 on the CPU; devices ``auto`` is one
    device (list the devices for DDP). A GPU asked for explicitly on a machine without one, or
    float16 autocast on the CPU, is an error that says what to pass instead.
    """
    acc = str(cfg.accelerator)
    has_gpu = torch.cuda.is_available()
    if acc in ("gpu", "cuda") and not has_gpu:
        raise ConfigError(f"accelerator={acc} but no CUDA GPU is visible on this machine: pass "
                          "accelerator=auto (the GPU when there is one, else the CPU) or "
                          "accelerator=cpu")
    gpu = acc in ("gpu", "cuda") or (acc == "auto" and has_gpu)
    cfg.accelerator = "gpu" if gpu else "cpu"
    precision = str(cfg.precision)
    if precision == "auto":
        precision = ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed") if gpu \
            else "32-true"
    if not gpu and precision in ("16", "16-mixed", "16-true"):
        raise ConfigError(f"precision={cfg.precision} needs a GPU (float16 autocast); on the CPU "
                          "use precision=auto, 32 or bf16-mixed")
    cfg.precision = precision
    if cfg.devices in ("auto", -1, "-1"):
        cfg.devices = 1


def scale_lrs(cfg: DictConfig, keys: Sequence[str]) -> None:
    """The linear lr scaling by the total batch size (``lr_scale``) of the optimizer's ``keys``,
    for pretraining and evaluation alike; a parsed config (such as a run's args.json) records its
    scale and is not scaled twice."""
    if cfg.optimizer.lr_scale is None:
        scale = lr_scale(cfg)
        for key in keys:
            cfg.optimizer[key] = float(cfg.optimizer[key]) * scale
        cfg.optimizer.lr_scale = scale


def lr_scale(cfg: DictConfig) -> float:
    """solo-learn's convention: lrs are per 256 images, times the total batch / 256
    (``optimizer.scale_lr: false`` takes them as given, as W-MSE's Adam recipes state them)."""
    if not bool(cfg.optimizer.scale_lr):
        return 1.0
    return int(cfg.optimizer.batch_size) * configured_world_size(cfg) / 256


def normalise_verify(data: DictConfig) -> None:
    """``data.verify: true/false`` (solo-mixmask 0.x's spelling) as ``full``/``none``."""
    if isinstance(data.verify, bool):
        data.verify = "full" if data.verify else "none"


def check_decay_steps(cfg: DictConfig) -> None:
    """``scheduler.lr_decay_steps``: epochs (negative ones count from the end of the run; in a
    run shorter than that they never come, as in W-MSE's MultiStepLR)."""
    if cfg.scheduler.name == "step" and not cfg.scheduler.lr_decay_steps:
        raise ConfigError("scheduler 'step' needs scheduler.lr_decay_steps (a list of epochs)")


def _check_augmentations(cfg: DictConfig) -> None:
    augs = cfg.augmentations
    if len(augs) == 0:
        raise ConfigError("config: 'augmentations' must be a non-empty list of crop recipes")
    for i, aug in enumerate(augs):
        if aug.rrc.crop_min_scale > aug.rrc.crop_max_scale:
            raise ConfigError(f"augmentations[{i}].rrc: crop_min_scale={aug.rrc.crop_min_scale} "
                              f"is above crop_max_scale={aug.rrc.crop_max_scale}")
        blur = aug.gaussian_blur
        if blur.sigma_min > blur.sigma_max:
            raise ConfigError(f"augmentations[{i}].gaussian_blur: sigma_min={blur.sigma_min} is "
                              f"above sigma_max={blur.sigma_max}")
    big = int(augs[0].crop_size)
    cfg.data.num_large_crops = sum(int(a.num_crops) for a in augs if int(a.crop_size) == big)
    cfg.data.num_small_crops = sum(int(a.num_crops) for a in augs if int(a.crop_size) != big)


def check_dataset(cfg: DictConfig) -> str:
    """The canonical dataset name (aliases such as ``imagenet-100`` accepted)."""
    dataset = canonical_dataset(cfg.data.dataset)
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.data.dataset!r}: choose one of "
                          f"{sorted(DATASETS)}" + closest(str(cfg.data.dataset), list(DATASETS)))
    cfg.data.dataset = dataset
    return dataset


def check_optimizer_kwargs(cfg: DictConfig) -> None:
    """``optimizer.kwargs`` validated against the optimizer's schema, its defaults filled, so a
    misspelt key is reported now rather than after the run folder exists."""
    name = str(cfg.optimizer.name)
    schema = OPTIMIZER_KWARGS[name]
    try:
        kwargs = validate(cfg.optimizer.kwargs, schema, "optimizer.kwargs")
    except ConfigError as exc:
        if not str(exc).startswith("unknown key"):
            raise
        known = ", ".join(f.name for f in fields(schema))
        raise ConfigError(f"{exc}; optimizer {name} takes {known}") from None
    cfg.optimizer.kwargs = OmegaConf.to_container(kwargs)  # the section's type is a plain mapping


def parse_common_cfg(cfg: DictConfig) -> DictConfig:
    """The validated, completed config with scaled learning rates (the caller's is not changed):
    every check but the method's own, which needs the method classes."""
    given = copy.deepcopy(cfg)
    method = select(cfg, "method")
    cfg = validate(cfg, PretrainConfig)
    report_ignored(cfg, given)

    dataset = check_dataset(cfg)
    fraction = float(cfg.data.fraction)
    if fraction != -1 and not 0 < fraction <= 1:
        raise ConfigError(f"data.fraction={fraction} must be in (0, 1] or -1 for all data")
    normalise_verify(cfg.data)
    info = DATASETS[dataset]
    if info.num_classes is not None:
        cfg.data.num_classes = info.num_classes
    _check_augmentations(cfg)

    cfg.optimizer.name = str(cfg.optimizer.name).lower()
    if int(cfg.optimizer.batch_size) < 2:
        raise ConfigError(f"optimizer.batch_size={cfg.optimizer.batch_size} must be at least 2")
    check_optimizer_kwargs(cfg)
    check_decay_steps(cfg)

    resolve_hardware(cfg)
    if cfg.name is None:
        cfg.name = f"{method}-{dataset}"
    if cfg.performance.channels_last == "auto":
        # channels_last wins on GPUs and, measured, on the CPU too (docs/speed.md)
        cfg.performance.channels_last = True
    if bool(cfg.knn_eval.enabled) and cfg.knn_eval.bank == "clean" and (
            cfg.data.val_path is None or cfg.data.no_labels):
        raise ConfigError("knn_eval.bank='clean' needs data.val_path with labels")

    scale_lrs(cfg, ("lr", "classifier_lr"))
    return cfg
