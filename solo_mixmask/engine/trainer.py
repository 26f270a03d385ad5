"""Lightning Trainer settings from a config's Trainer section, shared by every command.

The section is ``config.schema.trainer_section(cfg)``: solo-learn's top-level Trainer keys as one
typed ``LightningKeys`` object, so nothing here reads the whole config.

A run prints its progress, its metrics and real warnings, not Lightning's tips that do not apply
here: the logging interval is fitted to the epoch, the model summary table is off unless
``enable_model_summary: true``, and the remaining messages, which no Trainer argument turns off,
are filtered one by one (``quiet_lightning``).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Iterator

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from ..config.schema import TRAINER_PASSTHROUGH, LightningKeys
from ..utils.distributed import num_devices


def uses_gpu(keys: LightningKeys) -> bool:
    acc = str(keys.accelerator)
    return acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available())


def trainer_devices(keys: LightningKeys) -> Any:
    """Lightning's ``devices``: CPU takes a count, GPUs a count or an id list."""
    devices = keys.devices
    if str(keys.accelerator) == "cpu" or not uses_gpu(keys):
        return num_devices(devices)
    return devices


def trainer_strategy(keys: LightningKeys) -> Any:
    strategy = keys.strategy
    if strategy in (None, "none"):
        return "auto"
    if strategy == "ddp":
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


@contextlib.contextmanager
def frozen_modules_in_eval_mode() -> Iterator[None]:
    """Fitting a model whose frozen part is in eval mode on purpose (a linear probe's backbone keeps
    its BatchNorm statistics): Lightning's "Found N module(s) in eval mode" warning is silenced
    here only, so a pretraining run that leaves a module in eval mode still warns."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode",
                                category=PossibleUserWarning)
        yield


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


def trainer_kwargs(keys: LightningKeys, run_dir: Path, callbacks: list, logger: Any
                   ) -> dict[str, Any]:
    """Keyword arguments of ``pl.Trainer`` for a run living in ``run_dir``."""
    quiet_lightning()
    acc = str(keys.accelerator)
    kwargs: dict[str, Any] = {
        "max_epochs": int(keys.max_epochs),
        "accelerator": "gpu" if uses_gpu(keys) and acc == "auto" else acc,
        "devices": trainer_devices(keys),
        "num_nodes": int(keys.num_nodes),
        "precision": keys.precision,
        "strategy": trainer_strategy(keys),
        "sync_batchnorm": bool(keys.sync_batchnorm),
        "accumulate_grad_batches": int(keys.accumulate_grad_batches),
        "callbacks": callbacks,
        "logger": logger,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "default_root_dir": str(run_dir),
    }
    valid = inspect.signature(pl.Trainer.__init__).parameters
    for key in TRAINER_PASSTHROUGH:
        value = getattr(keys, key)
        if value is not None and key in valid:
            kwargs[key] = value
    if "log_every_n_steps" not in kwargs:  # the config's own interval is kept as it is
        kwargs["callbacks"] = [*callbacks, FitLogInterval()]
    return kwargs
