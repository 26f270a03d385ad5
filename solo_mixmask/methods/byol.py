"""BYOL: an online network with a predictor regresses an EMA target network's projections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from ..config.validation import opt
from ..losses.byol import byol_loss_func
from ..utils.momentum import copy_params
from .base import BaseMomentumMethod
from .heads import mlp


@dataclass
class BYOLKwargs:
    proj_output_dim: int = opt(ge=1)
    proj_hidden_dim: int = opt(ge=1)
    pred_hidden_dim: int = opt(ge=1)


class BYOL(BaseMomentumMethod):
    kwargs_schema = BYOLKwargs

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        kw = self.kw
        out, hidden = int(kw.proj_output_dim), int(kw.proj_hidden_dim)
        self.projector = mlp(self.features_dim, hidden, out, bn=True)
        self.momentum_projector = mlp(self.features_dim, hidden, out, bn=True)
        copy_params(self.projector, self.momentum_projector)
        self.predictor = mlp(out, int(kw.pred_hidden_dim), out, bn=True)

    @property
    def momentum_pairs(self):
        return super().momentum_pairs + [(self.projector, self.momentum_projector)]

    def param_groups(self):
        return super().param_groups() + [
            {"name": "projector", "params": list(self.projector.parameters())},
            {"name": "predictor", "params": list(self.predictor.parameters())},
        ]

    def online(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(x)
        return feats, self.predictor(self.projector(feats))

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.momentum_projector(self.momentum_backbone(x))

    def ssl_forward(self, crops: list[torch.Tensor]) -> dict[str, Any]:
        f1, p1 = self.online(crops[0])
        f2, p2 = self.online(crops[1])
        z1, z2 = self.target(crops[0]), self.target(crops[1])
        loss = byol_loss_func(p1, z2) + byol_loss_func(p2, z1)
        return {"loss": loss, "feats": [f1, f2], "targets": [z1, z2]}

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        return self.projector(feats)

    def mix_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.online(x)[1]

    def mix_loss(self, emb: torch.Tensor, out: dict[str, Any], crop: int) -> torch.Tensor:
        return byol_loss_func(emb, out["targets"][1 - crop], reduction="none")
