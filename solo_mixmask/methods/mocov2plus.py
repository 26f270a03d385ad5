"""MoCo v2 / v2+ (and v1 by config): a momentum key encoder and a queue of negatives.

``symmetric: true`` is solo-learn's MoCo v2+ (both crops are queries, one queue per crop);
``symmetric: false`` is the paper's MoCo v2 (query from crop 1, key from crop 2). ``proj_hidden_dim: 0``
gives MoCo v1's linear projection. On one process, SplitBatchNorm (``bn_splits``) in the key encoder,
with keys shuffled across the splits, stops BatchNorm from leaking batch information into the keys;
across processes the keys are computed on a batch shuffled over all ranks (shuffle-BN).

The query encoder keeps whole-batch BatchNorm on one process: the leak needs a query and its
positive key to share batch statistics that other samples lack, and shuffled key groups already
break that. Splitting the queries too (``split_query_bn: true``) copies the per-GPU query statistics
of a multi-GPU run exactly, at about 1.5x the step time of ResNet-50 on one GPU (docs/speed.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from ..config.validation import check_auto_or_int, opt
from ..data.sampling import mix_seed
from ..errors import ConfigError
from ..losses.mocov2plus import mocov2plus_loss_func
from ..utils import distributed as dist
from ..utils.momentum import copy_params
from ..utils.transfer import host_to_device
from .base import BaseMomentumMethod
from .heads import mlp


@dataclass
class MoCoKwargs:
    proj_output_dim: int = opt(ge=1)
    queue_size: int = opt(ge=1)
    temperature: float = opt(gt=0)
    proj_hidden_dim: int = opt(2048, ge=0)  # 0: MoCo v1's linear head
    symmetric: bool = True
    bn_splits: Any = opt("auto", check=check_auto_or_int(1))
    split_query_bn: bool = False
    shuffle_bn: bool = True
    # the symmetric loss: the mean of the two directions (solo-learn's v2+) or their sum (the
    # MoCo CIFAR demo and Un-Mix's unmix_c100.py)
    symmetric_loss: str = opt("mean", choices=("mean", "sum"))
    # one queue that receives both crops' keys (2 x batch per step, as unmix_c100.py) instead
    # of one queue per crop
    shared_queue: bool = False


class MoCoV2Plus(BaseMomentumMethod):
    kwargs_schema = MoCoKwargs

    @classmethod
    def add_and_assert_specific_cfg(cls, cfg: DictConfig) -> DictConfig:
        cfg = super().add_and_assert_specific_cfg(cfg)
        kw = cfg.method_kwargs
        world = dist.configured_world_size(cfg)
        batch = int(cfg.optimizer.batch_size)
        if kw.bn_splits == "auto":
            kw.bn_splits = 8 if world == 1 and batch % 8 == 0 else 1
        kw.bn_splits = int(kw.bn_splits)
        if kw.bn_splits < 1 or batch % kw.bn_splits:
            raise ConfigError(f"method_kwargs.bn_splits={kw.bn_splits} must divide "
                              f"optimizer.batch_size={batch}")
        per_step = 2 if kw.shared_queue and kw.symmetric else 1
        queue, total = int(kw.queue_size), batch * world * per_step
        if queue <= 0 or queue % total:
            crops = " x 2 crops" if per_step == 2 else ""
            raise ConfigError(
                f"method_kwargs.queue_size={queue} must be a positive multiple of the keys "
                f"enqueued per step, {total} (batch_size {batch} x {world} processes{crops})"
            )
        if kw.shared_queue and not kw.symmetric:
            raise ConfigError("method_kwargs.shared_queue=true needs symmetric=true (an "
                              "asymmetric loss has one queue already)")
        return cfg

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        kw = self.kw
        self.symmetric = bool(kw.symmetric)
        self.temperature = float(kw.temperature)
        self.projector = mlp(self.features_dim, int(kw.proj_hidden_dim), int(kw.proj_output_dim),
                             bn=False)
        self.momentum_projector = mlp(self.features_dim, int(kw.proj_hidden_dim),
                                      int(kw.proj_output_dim), bn=False)
        copy_params(self.projector, self.momentum_projector)
        self.shared_queue = bool(kw.shared_queue)
        num_queues = 2 if self.symmetric and not self.shared_queue else 1
        queue = F.normalize(torch.randn(num_queues, int(kw.proj_output_dim), int(kw.queue_size)),
                            dim=1)
        self.register_buffer("queue", queue)
        # the pointer lives on the host (``queue_position``); the buffer mirrors it for checkpoints
        # and solo-learn's layout, and is written each step but never read back while training
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self._queue_position = 0
        self._shuffle_gen = torch.Generator()
        self._shuffle_step = -1

    @property
    def queue_position(self) -> int:
        """Where the next keys go in the queue: the host copy of the ``queue_ptr`` buffer (reading
        the buffer would make the host wait for the device every step)."""
        return self._queue_position

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any, **kwargs: Any) -> None:
        """Takes the host pointer from the loaded buffer (one read, when a checkpoint loads)."""
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if not self.queue_ptr.is_meta:
            self._queue_position = int(self.queue_ptr)

    @property
    def bn_splits(self) -> int:
        return int(self.kw.bn_splits)

    @property
    def query_bn_splits(self) -> int:
        return self.bn_splits if self.kw.split_query_bn else 1

    @property
    def momentum_pairs(self):
        return super().momentum_pairs + [(self.projector, self.momentum_projector)]

    def param_groups(self):
        return super().param_groups() + [{"name": "projector",
                                          "params": list(self.projector.parameters())}]

    # ------------------------------------------------------------------ pieces
    def query(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(x)
        return feats, F.normalize(self.projector(feats), dim=-1)

    def shuffle_order(self, n: int, device: torch.device) -> torch.Tensor:
        """A permutation for the key shuffle, drawn from a stream seeded by (seed, step): the same
        on every rank without a broadcast, and the same again when a run is resumed."""
        step = int(self.global_step)
        if self._shuffle_step != step:
            self._shuffle_gen.manual_seed(mix_seed(int(self.cfg.seed), step))
            self._shuffle_step = step
        return host_to_device(torch.randperm(n, generator=self._shuffle_gen), device)

    @torch.no_grad()
    def key(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised momentum keys, computed on a batch shuffled across BN groups or ranks."""
        if not bool(self.kw.shuffle_bn):
            return F.normalize(self.momentum_projector(self.momentum_backbone(x)), dim=-1)
        if dist.is_dist():
            n = len(x)
            x_all = dist.gather_nograd(x)
            perm = self.shuffle_order(len(x_all), x.device)
            mine = perm.view(dist.world_size(), n)[dist.rank()]
            k = F.normalize(self.momentum_projector(self.momentum_backbone(x_all[mine])), dim=-1)
            k_all = dist.gather_nograd(k)
            inv = torch.argsort(perm)
            return k_all[inv].view(dist.world_size(), n, -1)[dist.rank()]
        perm = self.shuffle_order(len(x), x.device)
        k = F.normalize(self.momentum_projector(self.momentum_backbone(x[perm])), dim=-1)
        return k[torch.argsort(perm)]

    def queue_of(self, key_crop: int) -> int:
        """Which queue holds the past keys of crop ``key_crop``."""
        return key_crop if len(self.queue) == 2 else 0

    # --------------------------------------------------------------- SSL step
    def ssl_forward(self, crops: list[torch.Tensor]) -> dict[str, Any]:
        queue = self.queue.clone().detach()  # one snapshot for every term of this step
        f1, q1 = self.query(crops[0])
        k2 = self.key(crops[1])
        if self.symmetric:
            f2, q2 = self.query(crops[1])
            k1 = self.key(crops[0])
            loss = (mocov2plus_loss_func(q1, k2, queue[self.queue_of(1)], self.temperature)
                    + mocov2plus_loss_func(q2, k1, queue[self.queue_of(0)], self.temperature))
            if self.kw.symmetric_loss == "mean":
                loss = loss / 2
            keys = [k1, k2]
        else:
            f2 = None
            loss = mocov2plus_loss_func(q1, k2, queue[0], self.temperature)
            keys = [None, k2]
        return {"loss": loss, "feats": [f1, f2], "keys": keys, "queue": queue}

    def mix_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.query(x)[1]

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(feats), dim=-1)

    def mix_loss(self, emb: torch.Tensor, out: dict[str, Any], crop: int) -> torch.Tensor:
        other = 1 - crop
        return mocov2plus_loss_func(emb, out["keys"][other], out["queue"][self.queue_of(other)],
                                    self.temperature, reduction="none")

    @torch.no_grad()
    def after_ssl_step(self, out: dict[str, Any]) -> None:
        """Enqueues this step's keys (from every rank), once all loss terms are computed."""
        ptr = self._queue_position
        keys = [dist.gather_nograd(k) for k in out["keys"] if k is not None]
        if self.shared_queue:  # crop 1's keys, then crop 2's, into the one queue
            keys = [torch.cat(keys)]
        n = len(keys[-1])
        for q, k in zip(range(len(self.queue)) if len(keys) > 1 else [0], keys):
            self.queue[q, :, ptr:ptr + n] = k.T
        self._queue_position = (ptr + n) % self.queue.shape[-1]
        self.queue_ptr.fill_(self._queue_position)
