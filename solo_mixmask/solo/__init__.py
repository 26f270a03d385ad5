"""MixMask inside upstream solo-learn: variants of solo-learn's own method classes.

``register()`` adds ``mixmask_mocov2plus``, ``mixmask_byol``, ``mixmask_simclr`` and
``mixmask_simsiam`` to ``solo.methods.METHODS``; ``MixMaskCallback`` does the same from a Hydra
callback, so solo-learn's own ``main_pretrain.py`` runs them with
``+hydra.callbacks.mixmask._target_=solo_mixmask.solo.MixMaskCallback``. The variants add their
branches through ``solo_mixmask.mixmask.Branches``, the same core as this package's engine.

solo-learn is optional: this module imports without it, and ``register()`` raises
``SoloLearnMissing`` (an ImportError the CLI prints as one line) when it is absent.
"""

from __future__ import annotations

from .callback import MixMaskCallback
from .compat import adapt_cfg
from .registry import NAMES, SoloLearnMissing, register, require_solo, solo_available

__all__ = ["NAMES", "MixMaskCallback", "SoloLearnMissing", "adapt_cfg", "register",
           "require_solo", "solo_available"]
