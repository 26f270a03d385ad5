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

import importlib.util

from ..errors import SoloMixMaskError
from .callback import MixMaskCallback
from .compat import adapt_cfg

NAMES = ("mixmask_mocov2plus", "mixmask_byol", "mixmask_simclr", "mixmask_simsiam")

INSTALL_HINT = ("install it with `pip install \"solo-mixmask[solo]\"` or from a checkout (see "
                "docs/solo-learn.md)")


class SoloLearnMissing(SoloMixMaskError, ImportError):
    """solo-learn (the ``solo`` package) cannot be imported."""


def solo_available() -> bool:
    return importlib.util.find_spec("solo") is not None


def require_solo() -> None:
    """Imports ``solo`` or raises one clear error (instead of a deep ModuleNotFoundError)."""
    if not solo_available():
        raise SoloLearnMissing(f"solo-learn is not installed: {INSTALL_HINT}")
    try:
        import solo.methods  # noqa: F401
    except ModuleNotFoundError as exc:
        raise SoloLearnMissing(f"solo-learn cannot be imported (missing module {exc.name!r}): "
                               f"{INSTALL_HINT}") from None


def register() -> dict[str, type]:
    """Adds the MixMask variants to ``solo.methods.METHODS`` (idempotent); returns them by name."""
    require_solo()
    from solo.methods import METHODS

    from .methods import VARIANTS

    METHODS.update(VARIANTS)
    return dict(VARIANTS)


__all__ = ["NAMES", "MixMaskCallback", "SoloLearnMissing", "adapt_cfg", "register",
           "require_solo", "solo_available"]
