"""Runs ``solo-mixmask pretrain`` and sends this process a signal after a given training step.

    python signal_at_step.py SIGNAL STEP pretrain --config-path DIR --config-name NAME [...]

A deterministic stand-in for a user's Ctrl-C (SIGINT) or a machine failure (SIGKILL) at a known
point of a run; the command line, its handling and its exit code are the real ones.
"""

from __future__ import annotations

import os
import signal
import sys

from lightning.pytorch.callbacks import Callback

import solo_mixmask.engine.pretrain as engine
from solo_mixmask.cli import main


class SignalAt(Callback):
    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step, self.sent = signum, step, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


if __name__ == "__main__":
    signum = getattr(signal, sys.argv[1])
    step = int(sys.argv[2])
    plain = engine.pretrain

    def pretrain(cfg, callbacks=(), trainer_kwargs=None):
        return plain(cfg, [SignalAt(signum, step), *callbacks], trainer_kwargs)

    engine.pretrain = pretrain
    sys.exit(main(sys.argv[3:]))
