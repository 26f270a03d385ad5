"""Trains a trivial module for a few epochs through Lightning DDP (2 CPU processes, gloo) on a
ResidentLoader and saves the indexes each rank saw per epoch.

The loader is built without rank/world_size, before Lightning starts the process group, as the
engine does: it must read them from torch.distributed when it is iterated.

Usage: python resident_probe.py IMAGES.npy OUT_DIR EPOCHS BATCH_SIZE
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from solo_mixmask.data.resident import DeviceImages, ResidentLoader


def flip_crops(x: torch.Tensor, g: torch.Generator) -> list[torch.Tensor]:
    flip = torch.rand(len(x), generator=g, device=x.device) < 0.5
    y = x.float() / 255
    return [torch.where(flip[:, None, None, None], y.flip(-1), y)]


class Recorder(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[torch.Tensor]] = {}

    def training_step(self, batch, batch_idx):
        idx, crops, targets = batch
        self.seen.setdefault(self.current_epoch, []).append(idx.cpu())
        return (self.w * crops[0].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


if __name__ == "__main__":
    images = np.load(sys.argv[1])
    out, epochs, batch = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    out.mkdir(parents=True, exist_ok=True)
    loader = ResidentLoader(DeviceImages(images, np.arange(len(images)) % 10, "cpu"), batch,
                            flip_crops, seed=7)
    model = Recorder()
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=epochs,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, loader)
    rank, world = loader.sampler.rank, loader.sampler.num_replicas
    torch.save({"rank": rank, "world": world, "len": len(loader),
                "seen": {e: torch.cat(v).tolist() for e, v in model.seen.items()}},
               out / f"rank{trainer.global_rank}.pt")
    if torch.distributed.is_initialized():  # a clean gloo shutdown before the interpreter's
        torch.distributed.destroy_process_group()
