"""Ctrl-C that keeps the work done, and the data position that checkpoints carry.

The first Ctrl-C only raises a flag: the step in flight finishes, the state is written atomically as
``<name>-<version>-ep=<E>-step=<S>.ckpt`` before the next step starts, and training stops with
``Interrupted`` (exit code 130 in the CLI, with the line that resumes it). A flag raised during the
last step of an epoch is honoured after the epoch's own checkpoint. A second Ctrl-C interrupts at
once, keeping the last checkpoint on disk. ``DataPosition`` tells the training sampler how far the
loop has consumed it, so that a checkpoint written at any batch boundary resumes with the next
batch of the same epoch.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from ..errors import Interrupted
from .checkpoint import Checkpointer


class DataPosition(Callback):
    """Keeps ``sampler.position`` = (epoch, batches consumed) up to date for its state_dict."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self.sampler.position = (trainer.current_epoch, batch_idx + 1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.sampler.position = (trainer.current_epoch + 1, 0)


class GracefulInterrupt(Callback):
    """See the module docstring. Needs the run's ``Checkpointer`` (None: nothing to save)."""

    def __init__(self, checkpointer: Optional[Checkpointer]) -> None:
        self.checkpointer = checkpointer
        self.requested = False
        self.stopped_at_once = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
        print("\ninterrupt: finishing this step, then saving a checkpoint (Ctrl-C again to stop "
              "at once)", file=sys.stderr, flush=True)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def _restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        # Lightning answers a KeyboardInterrupt (a second Ctrl-C) with sys.exit(1) after this hook
        self.stopped_at_once = isinstance(exception, KeyboardInterrupt)
        self._restore()

    def _agreed(self, trainer: pl.Trainer) -> bool:
        """Whether any rank was interrupted (every rank must stop at the same step)."""
        if trainer.world_size == 1:
            return self.requested
        flag = torch.tensor(float(self.requested), device=trainer.strategy.root_device)
        return bool(trainer.strategy.reduce(flag, reduce_op="max") > 0)

    def _stop(self, trainer: pl.Trainer, interrupted: bool) -> None:
        path = self.checkpointer.save(trainer, interrupted=interrupted) \
            if self.checkpointer is not None else None
        raise Interrupted(path, trainer.current_epoch, trainer.global_step, saved_now=True)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        # before the next batch, every hook of the previous step has run (the EMA update too)
        if batch_idx > 0 and self._agreed(trainer):
            self._stop(trainer, interrupted=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # runs after the Checkpointer: a complete epoch's checkpoint is the interrupted state
        if self._agreed(trainer):
            ckpt = self.checkpointer
            if ckpt is not None and ckpt.last != ckpt.path_for(trainer.current_epoch):
                ckpt.save(trainer)  # not a checkpoint epoch (checkpoint.frequency > 1)
            raise Interrupted(ckpt.last if ckpt is not None else None, trainer.current_epoch + 1,
                              trainer.global_step, saved_now=ckpt is not None)
