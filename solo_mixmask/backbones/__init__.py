"""Backbone registry: ``create_backbone(name, **kwargs)`` in the timm manner.

Our ResNets take ``width``, ``cifar_stem``, ``maxpool`` and ``zero_init_residual``; ``bn_splits``
> 1 swaps BatchNorm for SplitBatchNorm. Any other name is looked up in timm (``timm:<name>`` forces
timm), built without a classifier, so ``model(x)`` always returns pooled features and
``model.num_features`` their size.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from ..errors import ConfigError
from .resnet import ResNet, resnet18, resnet34, resnet50
from .split_bn import SplitBatchNorm2d

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
}

_RESNET_KWARGS = {"width", "cifar_stem", "zero_init_residual", "bn_splits", "maxpool"}


def is_known_backbone(name: str) -> bool:
    if name in BACKBONES:
        return True
    import timm

    return bool(timm.list_models(name.removeprefix("timm:")))


def create_backbone(name: str, *, cifar_stem: bool = False, bn_splits: int = 1,
                    **kwargs) -> nn.Module:
    """Builds a feature extractor by name; ``num_features`` gives its output size."""
    if name in BACKBONES:
        unknown = set(kwargs) - _RESNET_KWARGS
        if unknown:
            raise ConfigError(f"backbone {name!r} got unknown kwargs: {sorted(unknown)}")
        norm = partial(SplitBatchNorm2d, num_splits=bn_splits) if bn_splits > 1 else None
        return BACKBONES[name](cifar_stem=cifar_stem, norm_layer=norm, **kwargs)
    import timm

    timm_name = name.removeprefix("timm:")
    if not timm.list_models(timm_name):
        raise ConfigError(
            f"unknown backbone {name!r}: use one of {sorted(BACKBONES)} or a timm model name"
        )
    if bn_splits > 1:
        raise ConfigError("bn_splits applies to the built-in ResNets only")
    try:
        return timm.create_model(timm_name, pretrained=False, num_classes=0, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"backbone {name!r}: {exc}") from None


__all__ = ["BACKBONES", "ResNet", "SplitBatchNorm2d", "create_backbone", "is_known_backbone"]
