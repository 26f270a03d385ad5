"""Plain loss functions. Each returns per-sample values with ``reduction="none"``, which the MixMask
objective weights sample by sample."""

from .byol import byol_loss_func
from .mocov2plus import mocov2plus_loss_func
from .simclr import info_nce, mixture_nce, simclr_loss_func
from .simsiam import simsiam_loss_func

__all__ = ["byol_loss_func", "info_nce", "mixture_nce", "mocov2plus_loss_func", "simclr_loss_func",
           "simsiam_loss_func"]
