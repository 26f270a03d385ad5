"""ResNet-50 backbones as Detectron2 weights (detection and segmentation transfer).

Detectron2 names a ResNet differently from torchvision: the stem is ``stem.conv1`` with its norm
inside (``stem.conv1.norm``), stages are ``res2``..``res5``, each convolution carries its norm
(``conv2.norm``) and the projection shortcut is ``shortcut`` / ``shortcut.norm``. The renamed weights
are written as the pickle Detectron2's checkpointer reads: ``{"model": {name: numpy array},
"__author__": ..., "matching_heuristics": True}``. Training: ``scripts/detection/`` and
``docs/evaluation.md``.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from .checkpoints import load_checkpoint_file, split_backbone

#: blocks per stage of a ResNet-50 (res2..res5)
R50_BLOCKS = (3, 4, 6, 3)
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")
_DROPPED = re.compile(r"(^fc\.|num_batches_tracked$)")


def rename_key(key: str) -> str:
    """torchvision name -> Detectron2 name of one ResNet parameter or buffer."""
    m = re.match(r"layer(\d)\.(.*)$", key)
    if m:
        key = f"res{int(m.group(1)) + 1}.{m.group(2)}"
    else:
        key = f"stem.{key}"
    key = re.sub(r"\bbn(\d)\.", r"conv\1.norm.", key)
    key = key.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
    return key


def to_detectron2(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Renames a torchvision-layout ResNet state dict; the classifier (``fc``) and BatchNorm's
    ``num_batches_tracked`` counters have no Detectron2 counterpart and are left out."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if _DROPPED.search(key):
            continue
        new = rename_key(key)
        if new in out:
            raise CheckpointError(f"two weights map to the Detectron2 name {new}")
        out[new] = value.detach().cpu().float().numpy() if value.is_floating_point() \
            else value.detach().cpu().numpy()
    return out


def expected_r50_keys() -> set[str]:
    """Every weight name of Detectron2's ResNet-50 backbone (BatchNorm-style norms)."""
    keys = {"stem.conv1.weight"} | {f"stem.conv1.norm.{f}" for f in _BN_FIELDS}
    for stage, blocks in enumerate(R50_BLOCKS, start=2):
        for b in range(blocks):
            prefix = f"res{stage}.{b}"
            convs = ["conv1", "conv2", "conv3"] + (["shortcut"] if b == 0 else [])
            for conv in convs:
                keys.add(f"{prefix}.{conv}.weight")
                keys |= {f"{prefix}.{conv}.norm.{f}" for f in _BN_FIELDS}
    return keys


def check_r50(model: dict[str, np.ndarray]) -> None:
    """The renamed weights must be exactly a ResNet-50 with 64 stem channels and an ImageNet stem
    (7x7): anything else would load into Detectron2 with silently missing or skipped layers."""
    expected = expected_r50_keys()
    missing, extra = sorted(expected - set(model)), sorted(set(model) - expected)
    if missing or extra:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise CheckpointError(f"not a ResNet-50 backbone ({len(missing)} missing, {len(extra)} "
                              f"unexpected Detectron2 keys: {detail})")
    stem = model["stem.conv1.weight"].shape
    if tuple(stem) != (64, 3, 7, 7):
        raise CheckpointError(f"the stem convolution is {tuple(stem)}, Detectron2's ResNet-50 "
                              "needs (64, 3, 7, 7) (full width, ImageNet stem)")


def export_detectron2(checkpoint: str | os.PathLike, output: str | os.PathLike,
                      author: str = "solo-mixmask") -> dict[str, Any]:
    """Converts the backbone of any supported checkpoint and writes the Detectron2 pickle."""
    weights, fmt = split_backbone(load_checkpoint_file(checkpoint))
    model = to_detectron2(weights)
    check_r50(model)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump({"model": model, "__author__": author, "matching_heuristics": True}, f)
    os.replace(tmp, output)
    return {"output": str(output), "format": fmt, "keys": len(model),
            "dropped": sorted(k for k in weights if _DROPPED.search(k))}
