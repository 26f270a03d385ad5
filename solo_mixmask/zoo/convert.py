"""Converting official MixMask/MoCo and solo-learn checkpoints into this package's format.

The output is a plain torch file, readable with ``torch.load(weights_only=True)``::

    {"state_dict": {"backbone.<key>": tensor, ...},
     "cfg": {"backbone": {"name": ..., "kwargs": {...}}, "data": {"dataset": ...}, "method": ...},
     "converted_from": {"format": ..., "file": ..., "sha256": ..., ...}}

which ``solo_mixmask.eval.checkpoints.load_backbone`` (and so ``knn``, ``linear``, ``semi`` and
``export-detectron2``) reads without being told the architecture. The query encoder of an official
checkpoint (``module.encoder_q.*``) or the online backbone of a solo-learn one (``backbone.*``) is
kept; projection heads, key/momentum encoders, queues and classifiers are dropped. The written file
is loaded back into the backbone strictly before it replaces anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import CheckpointError, ConfigError
from ..eval.checkpoints import infer_resnet, load_backbone, load_checkpoint_file, split_backbone
from .download import sha256_file
from .manifest import Entry

# What solo-learn's fixed-lr hook (SimSiam's predictor) pickles into a Lightning checkpoint's
# scheduler state: a functools.partial of solo.methods.base.static_lr holding the scheduler's
# bound get_lr, hence a copy of the scheduler and its optimizer. Only these names are tolerated,
# each replaced by an inert stand-in that never runs (see read_checkpoint).
SOLO_SCHEDULER_GLOBALS = frozenset({
    "functools.partial", "builtins.getattr", "builtins.dict", "collections.defaultdict",
    "solo.methods.base.static_lr", "solo.utils.lr_scheduler.LinearWarmupCosineAnnealingLR",
    "torch.optim.sgd.SGD", "torch.optim.adamw.AdamW", "torch.optim.adam.Adam",
    "solo.utils.lars.LARS",
})


class _Inert:
    """Stands in for a global named by a checkpoint: accepts anything, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()


def _plain_dict(*args: Any, **kwargs: Any) -> dict:
    return {}


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``load_checkpoint_file`` (weights only; pickled code is refused, never run), except that a
    solo-learn checkpoint whose only extra globals are the fixed-lr scheduler hook is read with
    inert stand-ins for them; its optimizer and scheduler states are then dropped."""
    try:
        return load_checkpoint_file(path)
    except CheckpointError as refusal:
        inspect = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
        if inspect is None or not hasattr(torch.serialization, "safe_globals"):
            raise
        try:
            names = set(inspect(str(path)))
        except Exception:
            raise refusal from None
        if not names or not names <= SOLO_SCHEDULER_GLOBALS or not any(
                n.startswith("solo.") for n in names):
            raise
    stand_ins = {"builtins.dict": dict, "collections.defaultdict": _plain_dict}
    allowed = [(stand_ins.get(n, _Inert), n) for n in sorted(names)]
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a dict of weights")
    obj.pop("lr_schedulers", None)
    obj.pop("optimizer_states", None)
    return obj


def _solo_args(path: Path) -> dict[str, Any]:
    """solo-learn's ``args.json`` written next to its checkpoints, if present."""
    args = path.parent / "args.json"
    if args.is_file():
        try:
            data = json.loads(args.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}
    return {}


def default_output(src: Path) -> Path:
    stem = src.name
    for suffix in (".pth.tar", ".ckpt", ".pth", ".pt", ".tar"):
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
            break
    return src.with_name(f"{stem}.solo_mixmask.pt")


def convert(src: str | os.PathLike, out: Optional[str | os.PathLike] = None, *,
            fmt: str = "auto", dataset: Optional[str] = None, backbone: Optional[str] = None,
            backbone_kwargs: Optional[dict[str, Any]] = None, entry: Optional[Entry] = None,
            ) -> tuple[Path, dict[str, Any]]:
    """Writes the converted checkpoint (default ``<src stem>.solo_mixmask.pt``); returns its path
    and what was stored under ``cfg`` / ``converted_from``."""
    src = Path(src)
    obj = read_checkpoint(src)
    weights, found = split_backbone(obj)
    if fmt == "auto" and entry is not None:
        fmt = entry.format
    if fmt != "auto" and fmt != found:
        raise CheckpointError(f"{src} is a {found} checkpoint, not {fmt}")
    if found in ("solo_mixmask", "torchvision"):
        raise CheckpointError(f"{src} is already readable by this package ({found} layout): "
                              "pass it to knn/linear/semi directly")
    solo_args = _solo_args(src) if found == "solo-learn" else {}
    if backbone is None and entry is not None:
        backbone = entry.backbone
    if backbone is None and solo_args.get("backbone", {}).get("name"):
        backbone = str(solo_args["backbone"]["name"])
    guess = infer_resnet(weights) if "conv1.weight" in weights else None
    if backbone is None:
        if guess is None:
            raise ConfigError(f"cannot tell the backbone of {src}: pass --backbone")
        backbone = guess["name"]
    kwargs = dict(guess["kwargs"]) if guess is not None and guess["name"] == backbone else {}
    kwargs.update(backbone_kwargs or {})
    dataset = (dataset or (entry.dataset if entry else None)
               or solo_args.get("data", {}).get("dataset")
               or ("imagenet" if found == "official" else None))
    if dataset is None:
        raise ConfigError(f"cannot tell which dataset {src} was trained on: pass --dataset")
    method = (entry.method if entry else None) or solo_args.get("method") or (
        "mocov2plus" if found == "official" else None)
    origin: dict[str, Any] = {"format": found, "file": src.name, "sha256": sha256_file(src)}
    for key in ("epoch", "arch", "global_step"):
        if isinstance(obj.get(key), (int, str)):
            origin[key] = obj[key]
    if entry is not None:
        origin.update({"zoo": entry.name, "url": entry.url, "variant": entry.variant})
    if found == "solo-learn" and kwargs.get("cifar_stem"):
        origin["note"] = ("solo-learn's CIFAR stem pads its 3x3 conv by 2, this package's by 1: "
                          "features differ slightly from solo-learn's")
    cfg: dict[str, Any] = {"backbone": {"name": backbone, "kwargs": kwargs},
                           "data": {"dataset": str(dataset)}}
    if method:
        cfg["method"] = str(method)
    converted = {"state_dict": {f"backbone.{k}": v.detach().clone().contiguous()
                                for k, v in weights.items()},
                 "cfg": cfg, "converted_from": origin}
    out = Path(out) if out is not None else default_output(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    torch.save(converted, part)
    try:
        load_backbone(part)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, out)
    return out, {"cfg": cfg, "converted_from": origin}
