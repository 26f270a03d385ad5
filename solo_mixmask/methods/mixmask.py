"""MixMask variants of the base methods.

``MixMaskMixin`` plugs the branch runner of ``solo_mixmask.mixmask`` into a method's
``branch_losses`` hook: ``Branches.run`` with the method's ``mix_embed`` and ``mix_loss``, as the
solo-learn adapter (``solo_mixmask.solo.methods``) does. No method-specific mixing code exists
anywhere else.
"""

from __future__ import annotations

from dataclasses import make_dataclass
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from ..config.branches import BranchConfig, BranchKwargs
from ..data.recipe import dataset_stats
from ..mixmask import Branches, parse_branch_cfg
from ..utils.distributed import rank
from .base import BaseMethod
from .byol import BYOL
from .mocov2plus import MoCoV2Plus
from .simclr import SimCLR
from .simsiam import SimSiam


def _symmetric(cls: type, cfg: DictConfig) -> bool:
    if cls is MoCoV2Plus or issubclass(cls, MoCoV2Plus):
        return bool(cfg.method_kwargs.symmetric)
    return True


class MixMaskMixin:
    """Adds the MixMask / Un-Mix / erase branches (``method_kwargs.mixmask``/``unmix``)."""

    @classmethod
    def add_and_assert_specific_cfg(cls, cfg: DictConfig) -> DictConfig:
        cfg = super().add_and_assert_specific_cfg(cfg)  # type: ignore[misc]
        branches = parse_branch_cfg(cfg.method_kwargs, int(cfg.augmentations[0].crop_size),
                                    _symmetric(cls, cfg))
        cfg.method_kwargs = OmegaConf.merge(cfg.method_kwargs, branches.as_method_kwargs())
        return cfg

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)  # type: ignore[call-arg]
        mean, std = dataset_stats(cfg.data, cfg.augmentations)
        self.branches = Branches(BranchConfig.from_method_kwargs(cfg.method_kwargs), mean, std,
                                 seed=int(cfg.seed))

    def branch_losses(self, crops: list[torch.Tensor],
                      out: dict[str, Any]) -> tuple[Optional[torch.Tensor], dict[str, Any]]:
        return self.branches.run(crops, self.mix_embed,
                                 lambda emb, c: self.mix_loss(emb, out, c))

    def setup(self, stage: str) -> None:
        super().setup(stage)  # type: ignore[misc]
        self.branches.fork(rank())  # the process group exists from here on

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        checkpoint["mixmask_branches"] = self.branches.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        if "mixmask_branches" in checkpoint:
            self.branches.load_state_dict(checkpoint["mixmask_branches"])
            self.branches.fork(rank())


def mixmask_variant(base: type[BaseMethod]) -> type[BaseMethod]:
    """``MixMask<Base>``: the base method with the MixMask branches; its ``method_kwargs`` schema
    is the base method's, its ``mix_kwargs_schema`` (keys of its mixed-crop loss) and the
    ``mixmask`` and ``unmix`` sections."""
    extra = (base.mix_kwargs_schema,) if base.mix_kwargs_schema is not None else ()
    schema = make_dataclass(f"MixMask{base.kwargs_schema.__name__}", [],
                            bases=(base.kwargs_schema, *extra, BranchKwargs))
    return type(f"MixMask{base.__name__}", (MixMaskMixin, base),
                {"__doc__": f"{base.__name__} with the MixMask / Un-Mix / erase branches.",
                 "__module__": __name__, "kwargs_schema": schema})


MixMaskMoCoV2Plus = mixmask_variant(MoCoV2Plus)
MixMaskBYOL = mixmask_variant(BYOL)
MixMaskSimCLR = mixmask_variant(SimCLR)
MixMaskSimSiam = mixmask_variant(SimSiam)
