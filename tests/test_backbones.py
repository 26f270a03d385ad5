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


@pytest.mark.parametrize("channels_last", [False, True])
def test_split_batchnorm_normalises_each_group_on_its_own(channels_last):
    torch.manual_seed(0)
    x = torch.randn(8, 4, 5, 5) * 3 + 1
    split = SplitBatchNorm2d(4, num_splits=2).train()
    xin = x.to(memory_format=torch.channels_last) if channels_last else x
    out = split(xin)
    # each group is a contiguous run of samples, as a rank's share of a DDP batch
    for g in range(2):
        xs = x[4 * g:4 * (g + 1)]
        ref = (xs - xs.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
            xs.var((0, 2, 3), unbiased=False, keepdim=True) + split.eps)
        assert torch.allclose(out[4 * g:4 * (g + 1)], ref, atol=1e-5)
    # the layout survives, so the next convolution keeps its fast kernels
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    group_means = torch.stack([x[:4].mean((0, 2, 3)), x[4:].mean((0, 2, 3))])
    assert torch.allclose(split.running_mean, 0.1 * group_means.mean(0), atol=1e-6)
    plain = torch.nn.BatchNorm2d(4).train()
    plain(x)
    assert not torch.allclose(split.running_var, plain.running_var)  # per-group statistics
    split.eval()
    plain.load_state_dict(split.state_dict())
    plain.eval()
    assert torch.allclose(split(x), plain(x))  # identical at evaluation, same state-dict keys


def test_split_batchnorm_gradients_match_per_group_batchnorm():
    torch.manual_seed(0)
    x = (torch.randn(8, 3, 4, 4) * 2).to(memory_format=torch.channels_last).requires_grad_()
    split = SplitBatchNorm2d(3, num_splits=4).train()
    ref_bn = torch.nn.BatchNorm2d(3).train()
    ref_bn.load_state_dict(split.state_dict(), strict=False)
    w = torch.randn(8, 3, 4, 4)
    (split(x) * w).sum().backward()
    g_split = x.grad.clone(), split.weight.grad.clone()
    x.grad = None
    (torch.cat([ref_bn(c) for c in x.split(2)]) * w).sum().backward()
    assert torch.allclose(g_split[0], x.grad, atol=1e-5)
    assert torch.allclose(g_split[1], ref_bn.weight.grad, atol=1e-5)


def test_split_batchnorm_cumulative_momentum():
    x = torch.randn(4, 2, 3, 3)
    split = SplitBatchNorm2d(2, num_splits=2, momentum=None).train()
    split(x)  # momentum None: a cumulative average, so the first batch sets the statistics
    assert torch.allclose(split.running_mean, (x[:2].mean((0, 2, 3)) + x[2:].mean((0, 2, 3))) / 2,
                          atol=1e-6)
    assert int(split.num_batches_tracked) == 1


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
