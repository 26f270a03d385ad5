"""Lightning Trainer settings from solo-learn's top-level config keys, shared by every command.

A run prints its progress, its metrics and real warnings, not Lightning's tips that do not apply
here: the logging interval is fitted to the epoch, the model summary table is off unless
``enable_model_summary: true``, and the remaining messages, which no Trainer argument turns off,
are filtered one by one (``quiet_lightning``).
"""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from omegaconf import DictConfig, OmegaConf

from ..config.schema import TRAINER_PASSTHROUGH
from ..utils.distributed import num_devices


def uses_gpu(cfg: DictConfig) -> bool:
    acc = str(cfg.accelerator)
    return acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available())


def trainer_devices(cfg: DictConfig) -> Any:
    """Lightning's ``devices``: CPU takes a count, GPUs a count or an id list."""
    devices = cfg.devices
    if str(cfg.accelerator) == "cpu" or not uses_gpu(cfg):
        return num_devices(devices)
    if isinstance(devices, str) and devices.strip() not in ("auto", "-1"):
        return devices
    return OmegaConf.to_container(devices) if OmegaConf.is_list(devices) else devices


def trainer_strategy(cfg: DictConfig) -> Any:
    strategy = cfg.strategy
    if strategy in (None, "none"):
        return "auto"
    if strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=False)
    return strategy


class _LightningTips(logging.Filter):
    """Drops Lightning's info lines that advertise other products, name absent hardware or narrate
    its internals."""

    DROP = ("\N{ELECTRIC LIGHT BULB} Tip:", "TPU available: False",
            "Loading `train_dataloader` to estimate number of stepping batches")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.DROP)


def quiet_lightning() -> None:
    """Silences the Lightning messages that never apply to this package's runs (idempotent):

    - "You defined a `validation_step` but have no `val_dataloader`": every method defines the
      hook for runs with a validation loader; a run without ``data.val_path``, or whose KNN
      monitor evaluates instead, passes no loader on purpose;
    - the ``LeafSpec`` deprecation that Lightning's own ``_pytree`` triggers inside PyTorch;
    - the "💡 Tip:" advertisements (LitLogger, litmodels), "TPU available: False" and "Loading
      `train_dataloader` to estimate number of stepping batches".
    """
    warnings.filterwarnings("ignore", message=r"You defined a `validation_step` but have no "
                            r"`val_dataloader`", category=PossibleUserWarning)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _LightningTips) for f in log.filters):
        log.addFilter(_LightningTips())


class FitLogInterval(Callback):
    """Logs training steps every ``interval`` optimizer steps, or once per epoch when an epoch is
    shorter (Lightning would log none of a short epoch's steps, and warn).

    The epoch's length is known once Lightning has set up the training data, after it checks the
    interval: until then the interval is 1, then it becomes ``min(interval, steps per epoch)``.
    """

    def __init__(self, interval: int = 50) -> None:
        self.interval = interval  # Lightning's default
        self.fitting = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # an interval given to the Trainer directly is left as it is
        self.fitting = stage == "fit" and trainer.log_every_n_steps == self.interval
        if self.fitting:
            trainer.log_every_n_steps = 1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.fitting:
            return
        batches = trainer.num_training_batches
        if not math.isfinite(batches) or batches < 1:
            trainer.log_every_n_steps = self.interval
            return
        steps = math.ceil(batches / max(1, int(trainer.accumulate_grad_batches)))
        trainer.log_every_n_steps = max(1, min(self.interval, steps))


def trainer_kwargs(cfg: DictConfig, run_dir: Path, callbacks: list, logger: Any) -> dict[str, Any]:
    """Keyword arguments of ``pl.Trainer`` for a run living in ``run_dir``."""
    quiet_lightning()
    acc = str(cfg.accelerator)
    kwargs: dict[str, Any] = {
        "max_epochs": int(cfg.max_epochs),
        "accelerator": "gpu" if uses_gpu(cfg) and acc == "auto" else acc,
        "devices": trainer_devices(cfg),
        "num_nodes": int(cfg.num_nodes),
        "precision": cfg.precision,
        "strategy": trainer_strategy(cfg),
        "sync_batchnorm": bool(cfg.sync_batchnorm),
        "accumulate_grad_batches": int(cfg.accumulate_grad_batches),
        "callbacks": callbacks,
        "logger": logger,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "default_root_dir": str(run_dir),
    }
    valid = inspect.signature(pl.Trainer.__init__).parameters
    for key in TRAINER_PASSTHROUGH:
        if cfg[key] is not None and key in valid:
            kwargs[key] = cfg[key]
    if "log_every_n_steps" not in kwargs:  # the config's own interval is kept as it is
        kwargs["callbacks"] = [*callbacks, FitLogInterval()]
    return kwargs
