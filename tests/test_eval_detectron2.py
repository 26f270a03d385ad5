"""``export-detectron2`` on a real ResNet-50 state dict: every weight must arrive under its
Detectron2 name with its values, and nothing may be left over."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
import torchvision

from conftest import REPO
from solo_mixmask.backbones import create_backbone
from solo_mixmask.cli import main
from solo_mixmask.errors import CheckpointError
from solo_mixmask.eval.detectron2 import export_detectron2, rename_key

# Detectron2's R-50 (MODEL.RESNETS.DEPTH 50): 3, 4, 6, 3 bottleneck blocks in res2..res5, each
# convolution with its own norm, a projection shortcut in the first block of every stage.
STAGES = {"res2": 3, "res3": 4, "res4": 6, "res5": 3}
NORM = ("weight", "bias", "running_mean", "running_var")


def detectron2_r50_names() -> set[str]:
    names = {"stem.conv1.weight", *(f"stem.conv1.norm.{f}" for f in NORM)}
    for stage, blocks in STAGES.items():
        for block in range(blocks):
            for conv in ("conv1", "conv2", "conv3") + (("shortcut",) if block == 0 else ()):
                names.add(f"{stage}.{block}.{conv}.weight")
                names.update(f"{stage}.{block}.{conv}.norm.{f}" for f in NORM)
    return names


@pytest.fixture(scope="module")
def r50_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = create_backbone("resnet50").state_dict()
    # distinct BatchNorm statistics, so a swapped running_mean/var cannot pass unnoticed
    return {k: torch.rand_like(v) if k.endswith(("running_mean", "running_var")) else v
            for k, v in state.items()}


def load_like_detectron2(path) -> dict:
    """What Detectron2's checkpointer does with a .pkl: a latin1 pickle holding numpy arrays
    under "model", recognised as converted weights by "__author__"."""
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")
    assert "model" in data and "__author__" in data
    return data


def test_every_torchvision_key_maps_and_none_is_left_over(r50_state, tmp_path):
    ckpt = tmp_path / "checkpoint_0199.pth.tar"
    head = {"module.encoder_q.fc.0.weight": torch.randn(2048, 2048),
            "module.encoder_q.fc.2.weight": torch.randn(128, 2048)}
    torch.save({"epoch": 200, "state_dict": {**{f"module.encoder_q.{k}": v
                                                for k, v in r50_state.items()}, **head}}, ckpt)
    out = tmp_path / "r50.pkl"
    assert main(["export-detectron2", str(ckpt), str(out)]) == 0
    data = load_like_detectron2(out)
    assert data["matching_heuristics"] is True and data["__author__"] == "solo-mixmask"
    model = data["model"]
    assert set(model) == detectron2_r50_names()
    kept = {k: v for k, v in r50_state.items() if not k.endswith("num_batches_tracked")}
    assert len(kept) == len(model) == 265
    for key, value in kept.items():
        new = rename_key(key)
        assert isinstance(model[new], np.ndarray), new
        assert np.array_equal(model[new], value.numpy()), (key, new)


@pytest.mark.parametrize("key,expected", [
    ("conv1.weight", "stem.conv1.weight"),
    ("bn1.running_var", "stem.conv1.norm.running_var"),
    ("layer1.0.conv1.weight", "res2.0.conv1.weight"),
    ("layer1.0.bn2.bias", "res2.0.conv2.norm.bias"),
    ("layer1.0.downsample.0.weight", "res2.0.shortcut.weight"),
    ("layer2.0.downsample.1.running_mean", "res3.0.shortcut.norm.running_mean"),
    ("layer3.5.bn3.weight", "res4.5.conv3.norm.weight"),
    ("layer4.2.conv3.weight", "res5.2.conv3.weight"),
])
def test_moco_renaming_rules(key, expected):
    assert rename_key(key) == expected


def test_torchvision_resnet50_converts_too(tmp_path):
    """torchvision's own ResNet-50 (with its ImageNet classifier) as the input."""
    state = torchvision.models.resnet50().state_dict()
    ckpt = tmp_path / "tv.pth"
    torch.save(state, ckpt)
    info = export_detectron2(ckpt, tmp_path / "tv.pkl")
    model = load_like_detectron2(tmp_path / "tv.pkl")["model"]
    assert info["format"] == "torchvision" and set(model) == detectron2_r50_names()
    assert not any(re.search(r"fc|num_batches", k) for k in model)


def test_only_full_resnet50_is_exported(tmp_path):
    small = tmp_path / "r18.pth"
    torch.save(create_backbone("resnet18").state_dict(), small)
    with pytest.raises(CheckpointError, match="not a ResNet-50"):
        export_detectron2(small, tmp_path / "x.pkl")
    cifar = tmp_path / "r50_cifar.pth"
    torch.save(create_backbone("resnet50", cifar_stem=True).state_dict(), cifar)
    with pytest.raises(CheckpointError, match=r"needs \(64, 3, 7, 7\)"):
        export_detectron2(cifar, tmp_path / "y.pkl")
    assert not (tmp_path / "x.pkl").exists() and not (tmp_path / "y.pkl").exists()


def test_detectron2_configs_point_at_the_paper_settings():
    """The configs are plain YAML for Detectron2 (not installable here): check what matters."""
    import yaml

    folder = REPO / "scripts/detection"
    base = yaml.safe_load((folder / "Base-RCNN-C4-SyncBN.yaml").read_text())
    assert base["MODEL"]["RESNETS"]["NORM"] == "SyncBN"
    assert base["MODEL"]["RESNETS"]["STRIDE_IN_1X1"] is False  # torchvision-style bottlenecks
    assert base["INPUT"]["FORMAT"] == "RGB"
    voc = yaml.safe_load((folder / "voc0712_faster_rcnn_R_50_C4_24k.yaml").read_text())
    assert voc["SOLVER"]["MAX_ITER"] == 24000 and voc["MODEL"]["MASK_ON"] is False
    assert voc["DATASETS"]["TRAIN"] == "('voc_2007_trainval', 'voc_2012_trainval')"
    coco = yaml.safe_load((folder / "coco_mask_rcnn_R_50_C4_1x.yaml").read_text())
    assert coco["SOLVER"]["MAX_ITER"] == 90000 and coco["MODEL"]["MASK_ON"] is True
    for cfg in (voc, coco):
        assert cfg["_BASE_"] == "Base-RCNN-C4-SyncBN.yaml"
