"""Reading backbones out of checkpoints of this package, solo-learn and the official MoCo/MixMask.

Files are read with ``torch.load(weights_only=True)``: a checkpoint carrying pickled code is refused,
never executed. Recognised layouts of the (possibly nested ``state_dict``) weights:

- ``backbone.*``: this package and solo-learn (Lightning checkpoints);
- ``module.encoder_q.*`` / ``encoder_q.*``: official MoCo v2 and MixMask; the projection head
  (``fc.*``) is dropped;
- bare ResNet keys (``conv1.weight``, ``layer1.0...``): torchvision-style weights.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..backbones import ResNet, create_backbone
from ..config.schema import PretrainConfig
from ..config.validation import complete
from ..errors import CheckpointError, ConfigError, first_line

FORMATS = ("solo_mixmask", "solo-learn", "official", "torchvision")


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(..., weights_only=True)`` with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is empty")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint "
                                  f"({first_line(exc, 80)})") from None
        raise CheckpointError(f"refusing {path}: it holds pickled objects beyond tensors and "
                              "plain containers (torch.load weights_only=True)") from None
    except Exception as exc:  # noqa: BLE001 - torch.load fails in many ways on a bad file
        detail = first_line(exc, 300).split(". ")[0]
        raise CheckpointError(f"cannot read checkpoint {path}: not a complete PyTorch checkpoint "
                              f"({type(exc).__name__}: {detail[:100]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a dict of weights")
    return obj


def _weights(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "module"):
        inner = obj.get(key)
        if isinstance(inner, dict) and any(torch.is_tensor(v) for v in inner.values()):
            return inner
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}


def split_backbone(obj: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """The backbone's weights (without any classification/projection ``fc``) and the format."""
    weights = _weights(obj)
    for prefix, fmt in (("backbone.", "solo"), ("module.encoder_q.", "official"),
                        ("encoder_q.", "official")):
        sub = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        if sub:
            if fmt == "solo":
                fmt = "solo_mixmask" if "cfg" in obj or "converted_from" in obj else "solo-learn"
            return {k: v for k, v in sub.items() if not k.startswith("fc.")}, fmt
    if any(k.startswith(("conv1.", "layer1.")) for k in weights):
        return {k: v for k, v in weights.items() if not k.startswith("fc.")}, "torchvision"
    raise CheckpointError("checkpoint has no backbone weights (no 'backbone.*', "
                          "'module.encoder_q.*' or ResNet keys)")


def stored_backbone_cfg(obj: dict[str, Any]) -> Optional[dict[str, Any]]:
    cfg = obj.get("cfg")
    if isinstance(cfg, dict) and isinstance(cfg.get("backbone"), dict):
        return cfg
    return None


def infer_resnet(weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Backbone name and kwargs implied by ResNet weights (depth, width, CIFAR stem)."""
    if "conv1.weight" not in weights:
        raise CheckpointError("cannot infer the backbone: no 'conv1.weight' in the checkpoint")
    conv1 = weights["conv1.weight"]
    bottleneck = any(".conv3." in k for k in weights)
    blocks = {int(k.split(".")[1]) for k in weights if k.startswith("layer3.")}
    depth = len(blocks)
    name = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50"}.get(
        (bottleneck, depth))
    if name is None:
        raise CheckpointError(f"unsupported ResNet layout ({depth} blocks in layer3)")
    return {"name": name, "kwargs": {"width": conv1.shape[0] / 64,
                                     "cifar_stem": conv1.shape[-1] == 3}}


_RESNETS = ("resnet18", "resnet34", "resnet50")
#: ResNet kwargs that shape the network (not only its initialisation), with the constructor's
#: own defaults
_RESNET_ARCH = {k: p.default for k, p in inspect.signature(ResNet.__init__).parameters.items()
                if k in ("width", "cifar_stem", "maxpool")}


def _value(v: Any) -> str:
    """A kwarg's value as the config and ``--backbone-kwargs`` spell it."""
    return json.dumps(v) if isinstance(v, (bool, int, float, type(None))) else repr(v)


def _resnet_arch(kwargs: dict[str, Any]) -> dict[str, Any]:
    arch = {k: kwargs.get(k, d) for k, d in _RESNET_ARCH.items()}
    if arch["maxpool"] is None:  # the ResNets' own rule: the pool goes with the ImageNet stem
        arch["maxpool"] = not bool(arch["cifar_stem"])
    return arch


def _check_recorded(path: Path, kwargs: dict[str, Any], recorded: dict[str, Any]) -> None:
    """The ResNet that ``kwargs`` describe is the one the checkpoint's config recorded."""
    asked, trained = _resnet_arch(kwargs), _resnet_arch(recorded)
    if not isinstance(asked["width"], (int, float)) or isinstance(asked["width"], bool):
        raise ConfigError(f"backbone width={asked['width']!r}: expected a number")
    for key in _RESNET_ARCH:
        same = (float(asked[key]) == float(trained[key]) if key == "width"
                else bool(asked[key]) == bool(trained[key]))
        if not same:
            raise CheckpointError(f"backbone {key}={_value(kwargs.get(key, asked[key]))} does not "
                                  f"match the checkpoint: {path} was trained with "
                                  f"{key}={_value(recorded.get(key, trained[key]))}")


def _shape_mismatch(path: Path, name: str, kwargs: dict[str, Any],
                    weights: dict[str, torch.Tensor], own: dict[str, torch.Tensor]
                    ) -> Optional[CheckpointError]:
    """The first weight whose shape differs from the backbone's, as one line naming the kwarg
    behind it when the weights tell (a ResNet's width or stem)."""
    key = next((k for k, v in weights.items() if k in own and tuple(own[k].shape) != tuple(v.shape)),
               None)
    if key is None:
        return None
    sizes = (f"size mismatch for {key}: {list(weights[key].shape)} in the checkpoint, "
             f"{list(own[key].shape)} in the backbone")
    conv1, mine = weights.get("conv1.weight"), own.get("conv1.weight")
    if name in _RESNETS and conv1 is not None and mine is not None:
        try:
            found = infer_resnet(weights)["kwargs"]
        except CheckpointError:
            found = None
        arch = _resnet_arch(kwargs)
        if found is not None and conv1.shape[0] != mine.shape[0]:
            what = "width"
        elif found is not None and conv1.shape[-1] != mine.shape[-1]:
            what = "cifar_stem"
        else:
            what = None
        if what is not None:
            return CheckpointError(
                f"backbone {what}={_value(kwargs.get(what, arch[what]))} does not match the "
                f"checkpoint: the weights in {path} have {what}={_value(found[what])} ({sizes})")
    return CheckpointError(f"backbone {name} {kwargs} does not match the checkpoint {path}: "
                           f"{sizes}")


def load_backbone(path: str | os.PathLike, name: Optional[str] = None,
                  kwargs: Optional[dict[str, Any]] = None) -> tuple[nn.Module, dict[str, Any]]:
    """Builds the backbone stored in ``path`` and loads its weights strictly.

    The architecture comes from ``name`` when given, else from the checkpoint's own config, else
    it is inferred from ResNet weights; ``kwargs`` complete it (without ``name``: on top of what
    the checkpoint records). Kwargs that disagree with what the checkpoint recorded, or weights
    that do not fit the backbone built (a key or shape mismatch), are a CheckpointError naming the
    kwarg, or the weight, and both values.
    """
    path = Path(path)
    obj = load_checkpoint_file(path)
    weights, fmt = split_backbone(obj)
    info: dict[str, Any] = {"format": fmt}
    stored = stored_backbone_cfg(obj)
    recorded: Optional[dict[str, Any]] = None
    if stored is not None:
        recorded = dict(stored["backbone"].get("kwargs") or {})
    if name is None:
        if stored is not None:
            name = str(stored["backbone"]["name"])
            base = dict(recorded or {})
        else:
            guess = infer_resnet(weights)
            name, base = guess["name"], dict(guess["kwargs"])
        kwargs = {**base, **(kwargs or {})}
    kwargs = dict(kwargs or {})
    if name.startswith("resnet") and "conv1.weight" in weights:
        stem = weights["conv1.weight"].shape[-1] == 3
        kwargs.setdefault("cifar_stem", stem)
        if recorded is not None:
            recorded.setdefault("cifar_stem", stem)
    if name in _RESNETS and recorded is not None and str(stored["backbone"]["name"]) == name:
        _check_recorded(path, kwargs, recorded)
    backbone = create_backbone(name, **kwargs)
    error = _shape_mismatch(path, name, kwargs, weights, backbone.state_dict())
    if error is not None:
        raise error
    try:
        backbone.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"backbone {name} {kwargs} does not match the checkpoint: "
                              f"{detail}") from None
    info.update({"name": name, "kwargs": kwargs})
    return backbone, info


def resolve_backbone_spec(obj: dict[str, Any], name: Optional[str] = None,
                          kwargs: Optional[dict[str, Any]] = None
                          ) -> tuple[Optional[str], Optional[dict[str, Any]]]:
    """The architecture to build for ``obj``: the one asked for, completed by what the checkpoint
    stores (its config, else its ResNet weights), so an evaluation config may just say
    ``backbone.name: resnet18`` for a half-width CIFAR model. Asking for another architecture than
    the stored one is a CheckpointError rather than a confusing shape dump."""
    if name is None:  # load_backbone takes the checkpoint's architecture, completed by kwargs
        return None, (dict(kwargs) if kwargs else None)
    kwargs = dict(kwargs or {})
    stored = stored_backbone_cfg(obj)
    if stored is not None:
        stored_name = str(stored["backbone"]["name"])
        if stored_name != name:
            raise CheckpointError(f"backbone mismatch: asked for {name} but the checkpoint holds a "
                                  f"{stored_name}")
        return name, {**dict(stored["backbone"].get("kwargs") or {}), **kwargs}
    if name.startswith("resnet"):
        weights, _ = split_backbone(obj)
        try:
            guess = infer_resnet(weights)
        except CheckpointError:
            return name, kwargs
        if guess["name"] != name:
            raise CheckpointError(f"backbone mismatch: asked for {name} but the checkpoint holds "
                                  f"{guess['name']} weights")
        return name, {**guess["kwargs"], **kwargs}
    return name, kwargs


def load_method(path: str | os.PathLike) -> nn.Module:
    """The whole pretraining module (backbone and heads) of a checkpoint of this package, built
    from the config it stores, in eval mode: for features taken after the projection head."""
    from ..methods import METHODS

    obj = load_checkpoint_file(path)
    cfg, weights = obj.get("cfg"), obj.get("state_dict")
    if not isinstance(cfg, dict) or not isinstance(weights, dict) or cfg.get("method") not in METHODS:
        raise CheckpointError(f"{path}: the projection head needs a pretraining checkpoint of this "
                              "package (its config names the head); use --feature backbone")
    method = METHODS[cfg["method"]]
    full = complete(cfg, PretrainConfig)  # a checkpoint of an older release lacks newer keys
    full.method_kwargs = complete(full.method_kwargs, method.kwargs_schema)
    model = method(full)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: {first_line(exc)}") from None
    return model.eval()
