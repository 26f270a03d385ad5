"""Runs a few DDP steps on CPU (2 processes, gloo) and saves what each rank saw: the dataset indexes
of every batch per epoch, SimCLR's embeddings and per-sample losses, the block of MoCo's queue that
the first step enqueued, and a draw of the MixMask branches' generator.

Usage: python ddp_probe.py OUT_DIR CONFIG.yaml [CONFIG.yaml ...]

Each config trains in turn in the same two processes (one launch, one process group); what a rank
saw in config i goes to ``OUT_DIR/<i>/rank<r>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from solo_mixmask.engine.pretrain import pretrain
from solo_mixmask.losses import simclr_loss_func


class Probe(Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.seen: dict = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        epochs = self.seen.setdefault("indexes", {})
        epochs.setdefault(trainer.current_epoch, []).extend(batch[0].tolist())

    def on_train_start(self, trainer, pl_module) -> None:
        forward, after = pl_module.ssl_forward, pl_module.after_ssl_step

        def ssl_forward(crops):
            out = forward(crops)
            if "z" in out and "simclr" not in self.seen:
                z1, z2 = (z.detach() for z in out["z"])
                values = simclr_loss_func(z1, z2, pl_module.temperature, reduction="none")
                self.seen["simclr"] = {"z1": z1, "z2": z2, "values": values}
            return out

        def after_ssl_step(out):
            after(out)
            if "keys" in out and "moco" not in self.seen:
                n = len(out["keys"][1]) * trainer.world_size
                ptr = int(pl_module.queue_ptr)
                start = (ptr - n) % pl_module.queue.shape[-1]
                block = pl_module.queue[pl_module.queue_of(1), :, start:start + n].clone()
                self.seen["moco"] = {"keys": out["keys"][1].clone(), "block": block}

        pl_module.ssl_forward = ssl_forward
        pl_module.after_ssl_step = after_ssl_step

    def on_train_end(self, trainer, pl_module) -> None:
        if hasattr(pl_module, "branches"):
            self.seen["draw"] = float(pl_module.branches.rng.random())
        self.seen["rank"] = trainer.global_rank
        self.seen["world"] = trainer.world_size
        torch.save(self.seen, self.out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for i, path in enumerate(sys.argv[2:]):
        out = root / str(i)
        out.mkdir(parents=True, exist_ok=True)
        pretrain(OmegaConf.load(path), callbacks=[Probe(out)], trainer_kwargs={"logger": False})
