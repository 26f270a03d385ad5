"""SimCLR: NT-Xent between two crops, with the negatives of every rank."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from ..config.validation import opt
from ..losses.simclr import mixture_nce, simclr_loss_func
from ..utils import distributed as dist
from .base import BaseMethod
from .heads import mlp


@dataclass
class SimCLRKwargs:
    proj_output_dim: int = opt(ge=1)
    proj_hidden_dim: int = opt(ge=1)
    temperature: float = opt(gt=0)
    # W-MSE's SimCLR (the paper's CIFAR-100 / Tiny-ImageNet code base): BatchNorm in the
    # projector's hidden layer, and a BatchNorm1d on the embedding itself
    proj_bn: bool = False
    embedding_bn: bool = False


@dataclass
class SimCLRMixKwargs:
    """The MixMask variant's extra keys, how the mixture term attaches to SimCLR.

    ``mix_candidates``: what a mixed embedding is scored among. ``crop``: the target crop's
    embeddings of the batch (the MoCo form, where the keys are one crop's); ``batch``: both clean
    crops' embeddings, as NT-Xent's 2N candidates (the positive in the target crop; the other
    crop's embeddings of the same sources are negatives there).
    ``mix_stop_gradient``: the clean embeddings the mixture is scored against get no gradient from
    that term, as MoCo's keys and BYOL's and SimSiam's targets get none; false (the default) lets
    the term pull them too, as NT-Xent trains both of its sides."""

    mix_candidates: str = opt("crop", choices=("crop", "batch"))
    mix_stop_gradient: bool = False


class SimCLR(BaseMethod):
    kwargs_schema = SimCLRKwargs
    mix_kwargs_schema = SimCLRMixKwargs

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.temperature = float(self.kw.temperature)
        out = int(self.kw.proj_output_dim)
        self.projector = mlp(self.features_dim, int(self.kw.proj_hidden_dim), out,
                             bn=bool(self.kw.proj_bn), last_bn=bool(self.kw.embedding_bn))

    def param_groups(self):
        return super().param_groups() + [{"name": "projector",
                                          "params": list(self.projector.parameters())}]

    def ssl_forward(self, crops: list[torch.Tensor]) -> dict[str, Any]:
        f1, f2 = self.backbone(crops[0]), self.backbone(crops[1])
        # both views through the head at once: its BatchNorms (if any) see the 2N batch, as in W-MSE
        z1, z2 = self.projector(torch.cat([f1, f2])).chunk(2)
        loss = simclr_loss_func(z1, z2, self.temperature)
        return {"loss": loss, "feats": [f1, f2], "z": [z1, z2]}

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        return self.projector(feats)

    def mix_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))

    def mix_loss(self, emb: torch.Tensor, out: dict[str, Any], crop: int) -> torch.Tensor:
        """InfoNCE of each mixed embedding against the other crop's embeddings of the gathered
        batch (``mix_candidates: batch``: and the mixed crop's), positive at the same index;
        ``mix_stop_gradient``: against their detached values."""
        gathered = out.setdefault("z_gathered", {})

        def batch_of(c: int) -> torch.Tensor:  # each crop gathered once a step, when first needed
            if c not in gathered:
                gathered[c] = dist.gather(out["z"][c])
            return gathered[c]

        keys = batch_of(1 - crop)
        if self.kw.mix_candidates == "batch":
            keys = torch.cat([keys, batch_of(crop)])
        if self.kw.mix_stop_gradient:
            keys = keys.detach()
        return mixture_nce(emb, keys, dist.rank() * len(emb), self.temperature)
