"""SimSiam: a predictor matches the stop-gradient projection of the other crop.

The predictor keeps a fixed learning rate (no schedule), as the SimSiam paper recommends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from ..config.validation import opt
from ..losses.simsiam import simsiam_loss_func
from .base import BaseMethod
from .heads import mlp


@dataclass
class SimSiamKwargs:
    proj_output_dim: int = opt(ge=1)
    proj_hidden_dim: int = opt(ge=1)
    pred_hidden_dim: int = opt(ge=1)
    # 3 (SimSiam's ImageNet projector) or 2 linear layers (its CIFAR variant, PatrickHua/SimSiam)
    proj_layers: int = opt(3, choices=(2, 3))
    proj_last_bn_affine: bool = False  # the CIFAR code keeps the last BatchNorm's affine terms
    temperature: Optional[float] = opt(None, ignored="SimSiam has no temperature; solo-learn's "
                                       "configs carry one")


class SimSiam(BaseMethod):
    kwargs_schema = SimSiamKwargs

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        kw = self.kw
        out = int(kw.proj_output_dim)
        self.projector = mlp(self.features_dim, int(kw.proj_hidden_dim), out,
                             num_layers=int(kw.proj_layers), bn=True, last_bn=True,
                             last_bn_affine=bool(kw.proj_last_bn_affine))
        self.predictor = mlp(out, int(kw.pred_hidden_dim), out, bn=True)

    def param_groups(self):
        return super().param_groups() + [
            {"name": "projector", "params": list(self.projector.parameters())},
            {"name": "predictor", "params": list(self.predictor.parameters()), "fix_lr": True},
        ]

    def ssl_forward(self, crops: list[torch.Tensor]) -> dict[str, Any]:
        f1, f2 = self.backbone(crops[0]), self.backbone(crops[1])
        z1, z2 = self.projector(f1), self.projector(f2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = (simsiam_loss_func(p1, z2) + simsiam_loss_func(p2, z1)) / 2
        return {"loss": loss, "feats": [f1, f2], "targets": [z1.detach(), z2.detach()]}

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        return self.projector(feats)

    def mix_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(self.backbone(x)))

    def mix_loss(self, emb: torch.Tensor, out: dict[str, Any], crop: int) -> torch.Tensor:
        return simsiam_loss_func(emb, out["targets"][1 - crop], reduction="none")
