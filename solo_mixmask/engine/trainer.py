"""Lightning Trainer settings from solo-learn's top-level config keys, shared by every command."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from ..config.loading import select
from ..config.pretrain import num_devices
from ..config.schema import TRAINER_PASSTHROUGH


def uses_gpu(cfg: DictConfig) -> bool:
    acc = str(select(cfg, "accelerator", "auto"))
    return acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available())


def trainer_devices(cfg: DictConfig) -> Any:
    """Lightning's ``devices``: CPU takes a count, GPUs a count or an id list."""
    devices = select(cfg, "devices", 1)
    if str(select(cfg, "accelerator", "auto")) == "cpu" or not uses_gpu(cfg):
        return num_devices(devices)
    if isinstance(devices, str) and devices.strip() not in ("auto", "-1"):
        return devices
    return OmegaConf.to_container(devices) if OmegaConf.is_list(devices) else devices


def trainer_strategy(cfg: DictConfig) -> Any:
    strategy = select(cfg, "strategy", "auto")
    if strategy in (None, "none"):
        return "auto"
    if strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=False)
    return strategy


def trainer_kwargs(cfg: DictConfig, run_dir: Path, callbacks: list, logger: Any) -> dict[str, Any]:
    """Keyword arguments of ``pl.Trainer`` for a run living in ``run_dir``."""
    acc = str(select(cfg, "accelerator", "auto"))
    kwargs: dict[str, Any] = {
        "max_epochs": int(cfg.max_epochs),
        "accelerator": "gpu" if uses_gpu(cfg) and acc == "auto" else acc,
        "devices": trainer_devices(cfg),
        "num_nodes": int(select(cfg, "num_nodes", 1)),
        "precision": select(cfg, "precision", 32),
        "strategy": trainer_strategy(cfg),
        "sync_batchnorm": bool(select(cfg, "sync_batchnorm", False)),
        "accumulate_grad_batches": int(select(cfg, "accumulate_grad_batches", 1)),
        "callbacks": callbacks,
        "logger": logger,
        "enable_checkpointing": False,
        "default_root_dir": str(run_dir),
    }
    valid = inspect.signature(pl.Trainer.__init__).parameters
    for key in TRAINER_PASSTHROUGH:
        if select(cfg, key) is not None and key in valid:
            kwargs[key] = cfg[key]
    return kwargs
