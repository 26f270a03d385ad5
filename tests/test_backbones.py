"""Backbones: torchvision-compatible keys, width multiplier, CIFAR stem, SplitBatchNorm, timm."""

from __future__ import annotations

import pytest
import torch
import torchvision

from solo_mixmask.backbones import SplitBatchNorm2d, create_backbone
from solo_mixmask.errors import ConfigError


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_keys_and_shapes_match_torchvision(name):
    ours = create_backbone(name)
    theirs = getattr(torchvision.models, name)().state_dict()
    theirs = {k: v for k, v in theirs.items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.items()}
    ours.load_state_dict(theirs)  # strict


def test_width_multiplier_and_cifar_stem():
    net = create_backbone("resnet18", width=0.25, cifar_stem=True)
    assert net.num_features == 128
    assert [net.layer1[0].conv1.out_channels, net.layer4[0].conv1.out_channels] == [16, 128]
    assert net.forward_features(torch.zeros(2, 3, 32, 32)).shape[-1] == 4
    assert isinstance(net.maxpool, torch.nn.Identity) and net.conv1.kernel_size == (3, 3)
    big = create_backbone("resnet50", width=0.5)
    assert big.num_features == 1024
    assert big.forward_features(torch.zeros(1, 3, 224, 224)).shape[-1] == 7


def test_split_batchnorm_normalises_each_group_on_its_own():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 5, 5) * 3 + 1
    split = SplitBatchNorm2d(4, num_splits=2).train()
    out = split(x)
    # groups interleave samples: i % 2
    for g in range(2):
        xs = x[g::2]
        ref = (xs - xs.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
            xs.var((0, 2, 3), unbiased=False, keepdim=True) + split.eps)
        assert torch.allclose(out[g::2], ref, atol=1e-5)
    plain = torch.nn.BatchNorm2d(4).train()
    plain(x)
    assert not torch.allclose(split.running_var, plain.running_var)  # per-group statistics
    split.eval()
    plain.load_state_dict(split.state_dict())
    plain.eval()
    assert torch.allclose(split(x), plain(x))  # identical at evaluation, same state-dict keys


def test_split_batchnorm_needs_divisible_batch():
    with pytest.raises(ValueError, match="not divisible"):
        SplitBatchNorm2d(4, num_splits=3).train()(torch.randn(8, 4, 2, 2))


def test_timm_backbone_by_name():
    net = create_backbone("timm:resnet10t")
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, net.num_features)


def test_unknown_backbone_and_kwargs():
    with pytest.raises(ConfigError, match="unknown backbone"):
        create_backbone("resnet1000")
    with pytest.raises(ConfigError, match="unknown kwargs"):
        create_backbone("resnet18", depth=3)
