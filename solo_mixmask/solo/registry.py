"""Adding the MixMask variants to ``solo.methods.METHODS``, and the one error for a missing
solo-learn. Its own module so that the package's ``__init__`` and the Hydra callback both import
it at the top, neither importing the other."""

from __future__ import annotations

import importlib.util

from ..errors import SoloMixMaskError

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

    # imported here: solo_mixmask.solo.methods subclasses solo-learn's classes, an optional
    # dependency that require_solo has just found
    from .methods import VARIANTS

    METHODS.update(VARIANTS)
    return dict(VARIANTS)
