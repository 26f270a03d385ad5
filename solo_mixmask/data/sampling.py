"""The training sampler that makes a resumed run replay the uninterrupted one exactly.

Every random choice of the data path depends only on ``(seed, epoch, index)``: the epoch's order is a
permutation drawn from a generator seeded by ``(seed, epoch)``, sharded over ranks as
``DistributedSampler`` does, and each sample's crops are drawn from a generator of its own seeded by
``(seed, epoch, index)``. Nothing depends on the number of workers, on which worker loads a sample, or
on what ran before in the process, so resuming at an epoch boundary (or mid-epoch, at a batch
boundary) reproduces the crops and their order bit for bit.

The sampler yields ``(sample_seed, index)`` keys; the datasets of ``datasets.py`` accept them and pass
a ``torch.Generator`` seeded with ``sample_seed`` to the crop recipe. Its position (epoch, batches
consumed) is part of Lightning checkpoints through ``ResumableLoader.state_dict``.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

MASK64 = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from integers (splitmix64 over the parts)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & MASK64)) * 0xBF58476D1CE4E5B9 & MASK64
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & MASK64
        x ^= x >> 31
    return x >> 1


def sample_generator(key: Any) -> tuple[int, Optional[torch.Generator]]:
    """``(index, generator)`` of a dataset key: ``(sample_seed, index)`` or a plain index."""
    if isinstance(key, (tuple, list)):
        seed, index = key
        g = torch.Generator()
        g.manual_seed(int(seed))
        return int(index), g
    return int(key), None


class EpochSampler(DistributedSampler):
    """``DistributedSampler``'s order and sharding (so Lightning leaves it in place under DDP),
    over ``indices`` of the dataset, yielding ``(sample_seed, index)`` keys.

    The rank and world size are read when iteration starts (the process group may not exist when
    the loader is built), unless given. ``load_state_dict`` sets the epoch and how many batches of
    it are already done; the first iteration after it skips those batches.
    """

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int = 0,
                 rank: Optional[int] = None, world_size: Optional[int] = None) -> None:
        # the base class's attributes are filled from the process group in ``_shard``
        self.dataset = indices  # type: ignore[assignment]
        self.indices = list(int(i) for i in indices)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = True
        self.drop_last = False
        self.epoch = 0
        self.start_batch = 0
        #: (epoch, batches consumed) as reported by the training loop, for checkpoints
        self.position = (0, 0)
        self._fixed = (rank, world_size) if world_size is not None else None
        self._shard()

    def _shard(self) -> None:
        if self._fixed is not None:
            self.rank, self.num_replicas = int(self._fixed[0] or 0), int(self._fixed[1])
        else:
            ready = dist.is_available() and dist.is_initialized()
            self.num_replicas = dist.get_world_size() if ready else 1
            self.rank = dist.get_rank() if ready else 0
        n = len(self.indices)
        self.num_samples = -(-n // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def order(self, epoch: int) -> list[int]:
        """This rank's positions into ``indices`` for ``epoch`` (DistributedSampler's, padded by
        repeating the start of the permutation when the ranks do not divide the data)."""
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        perm = torch.randperm(len(self.indices), generator=g).tolist()
        perm += perm[:self.total_size - len(perm)]
        return perm[self.rank:self.total_size:self.num_replicas]

    def take_epoch(self) -> tuple[int, list[int], int]:
        """The epoch, this rank's positions from the first batch not yet done, and that batch's
        number in the epoch (a resumed epoch skips what its checkpoint had consumed, once)."""
        self._shard()
        positions = self.order(self.epoch)
        first = self.start_batch
        self.start_batch = 0
        return self.epoch, positions[first * self.batch_size:], first

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch, positions, _ = self.take_epoch()
        for pos in positions:
            index = self.indices[pos]
            yield mix_seed(self.seed, epoch, index), index

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.start_batch = 0
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, int]:
        epoch, batch = self.position
        return {"epoch": int(epoch), "batch": int(batch)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state.get("epoch", 0))
        self.start_batch = int(state.get("batch", 0))
        self.position = (self.epoch, self.start_batch)


class ResumableLoader(DataLoader):
    """A DataLoader over an ``EpochSampler`` whose position Lightning stores in checkpoints."""

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()  # type: ignore[union-attr]

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)  # type: ignore[union-attr]
