"""Method registry: ``METHODS[name](cfg)`` builds a LightningModule."""

from .base import BaseMethod, BaseMomentumMethod
from .byol import BYOL
from .mixmask import (
    MixMaskBYOL,
    MixMaskMixin,
    MixMaskMoCoV2Plus,
    MixMaskSimCLR,
    MixMaskSimSiam,
    mixmask_variant,
)
from .mocov2plus import MoCoV2Plus
from .simclr import SimCLR
from .simsiam import SimSiam

METHODS: dict[str, type[BaseMethod]] = {
    "mocov2plus": MoCoV2Plus,
    "byol": BYOL,
    "simclr": SimCLR,
    "simsiam": SimSiam,
    "mixmask_mocov2plus": MixMaskMoCoV2Plus,
    "mixmask_byol": MixMaskBYOL,
    "mixmask_simclr": MixMaskSimCLR,
    "mixmask_simsiam": MixMaskSimSiam,
}

__all__ = ["BYOL", "METHODS", "BaseMethod", "BaseMomentumMethod", "MixMaskBYOL", "MixMaskMixin",
           "MixMaskMoCoV2Plus", "MixMaskSimCLR", "MixMaskSimSiam", "MoCoV2Plus", "SimCLR",
           "SimSiam", "mixmask_variant"]
