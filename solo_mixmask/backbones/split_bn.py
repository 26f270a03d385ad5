"""SplitBatchNorm: BatchNorm statistics over sub-batches, as if each were on its own device.

On a single device MoCo's key encoder would otherwise see the whole batch in one BatchNorm, and the
query can "cheat" through batch statistics shared with its key (MoCo's shuffle-BN argument). Splitting
the batch into ``num_splits`` groups, and shuffling the keys across groups, removes that leak.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed per group of ``N / num_splits`` samples.

    In evaluation it is an ordinary BatchNorm2d, and its state dict has the same keys, so a trained
    backbone loads into a plain ResNet.
    """

    def __init__(self, num_features: int, num_splits: int = 8, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.num_splits
        if not self.training or s <= 1:
            return super().forward(x)
        if n % s:
            raise ValueError(f"SplitBatchNorm2d: batch of {n} is not divisible by {s} splits")
        mean_split = self.running_mean.repeat(s)
        var_split = self.running_var.repeat(s)
        out = F.batch_norm(
            x.reshape(n // s, c * s, h, w), mean_split, var_split,
            self.weight.repeat(s), self.bias.repeat(s), True, self.momentum, self.eps,
        ).reshape(n, c, h, w)
        with torch.no_grad():
            self.running_mean.copy_(mean_split.view(s, c).mean(0))
            self.running_var.copy_(var_split.view(s, c).mean(0))
            self.num_batches_tracked += 1
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_splits={self.num_splits}"
