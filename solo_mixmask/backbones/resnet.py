"""ResNet-18/50 with a width multiplier and the CIFAR stem.

Parameter names match torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layerN.0.downsample.{0,1}``), so checkpoints of solo-learn, MoCo and the official MixMask code load
without renaming and the Detectron2 converter sees the layout it expects. torchvision's own class
cannot change the width (its 64 base channels are hard-coded), hence this small reimplementation.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

NormLayer = Callable[[int], nn.Module]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, downsample: Optional[nn.Module],
                 norm: NormLayer) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, downsample: Optional[nn.Module],
                 norm: NormLayer) -> None:
        super().__init__()
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = norm(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = norm(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet trunk returning pooled features (no classification layer).

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage.
        width: multiplier of every stage's channels (0.25 gives 16-32-64-128 for ResNet-18).
        cifar_stem: 3x3 stride-1 first convolution and no max-pool, for inputs of 64 px and less.
        maxpool: keep the 3x3 stride-2 max-pool after the stem (None: only with the ImageNet
            stem). W-MSE's Tiny-ImageNet ResNet-18 is the CIFAR stem with the max-pool.
        norm_layer: normalisation constructor (BatchNorm2d, or SplitBatchNorm for single-device MoCo).
        zero_init_residual: start each residual branch at zero (last BN weight 0).
    """

    def __init__(self, block: type[nn.Module], layers: list[int], width: float = 1.0,
                 cifar_stem: bool = False, norm_layer: Optional[NormLayer] = None,
                 zero_init_residual: bool = False, maxpool: Optional[bool] = None) -> None:
        super().__init__()
        norm = norm_layer or nn.BatchNorm2d
        base = max(1, int(round(64 * width)))
        self.inplanes = base
        if cifar_stem:
            self.conv1 = nn.Conv2d(3, base, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, base, 7, stride=2, padding=3, bias=False)
        pool = (not cifar_stem) if maxpool is None else bool(maxpool)
        self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1) if pool else nn.Identity()
        self.bn1 = norm(base)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(block, base, layers[0], 1, norm)
        self.layer2 = self._stage(block, base * 2, layers[1], 2, norm)
        self.layer3 = self._stage(block, base * 4, layers[2], 2, norm)
        self.layer4 = self._stage(block, base * 8, layers[3], 2, norm)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = base * 8 * block.expansion

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                last = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else (
                    getattr(m, "bn2", None) if isinstance(m, BasicBlock) else None)
                if last is not None:
                    nn.init.zeros_(last.weight)

    def _stage(self, block: type[nn.Module], planes: int, blocks: int, stride: int,
               norm: NormLayer) -> nn.Sequential:
        downsample = None
        out = planes * block.expansion
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(_conv1x1(self.inplanes, out, stride), norm(out))
        layers = [block(self.inplanes, planes, stride, downsample, norm)]
        self.inplanes = out
        layers += [block(out, planes, 1, None, norm) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling (for dense downstream use)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.forward_features(x)), 1)


def resnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)
