"""SplitBatchNorm: BatchNorm statistics over sub-batches, as if each were on its own device.

On a single device MoCo's key encoder would otherwise see the whole batch in one BatchNorm, and the
query can "cheat" through batch statistics shared with its key (MoCo's shuffle-BN argument). Splitting
the batch into ``num_splits`` groups, and shuffling the keys across groups, removes that leak.

Each group is a contiguous run of ``N / num_splits`` samples, like the per-rank batches of DDP, and is
normalised by its own BatchNorm call. A batch slice of a channels-last tensor is itself channels-last,
so every call runs the fast NHWC kernels. (The classic trick, one BatchNorm over the batch reshaped
to ``(N / s, C * s, H, W)``, is free only for NCHW tensors: on channels-last activations the reshape
copies to NCHW and every later convolution falls back to NCHW too.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed per group of ``N / num_splits`` samples.

    The running statistics move by the mean of the groups' updates. In evaluation it is an ordinary
    BatchNorm2d, and its state dict has the same keys, so a trained backbone loads into a plain
    ResNet.
    """

    def __init__(self, num_features: int, num_splits: int = 8, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.num_splits
        if not self.training or s <= 1:
            return super().forward(x)
        n = x.shape[0]
        if n % s:
            raise ValueError(f"SplitBatchNorm2d: batch of {n} is not divisible by {s} splits")
        track = self.track_running_stats and self.running_mean is not None
        if track:
            self.num_batches_tracked.add_(1)
            momentum = (self.momentum if self.momentum is not None
                        else 1.0 / float(self.num_batches_tracked))
            means = self.running_mean.repeat(s, 1)  # one row per group, updated in place
            vars_ = self.running_var.repeat(s, 1)
        out = [F.batch_norm(chunk, means[g] if track else None, vars_[g] if track else None,
                            self.weight, self.bias, True, momentum if track else 0.0, self.eps)
               for g, chunk in enumerate(x.split(n // s))]
        if track:
            with torch.no_grad():
                self.running_mean.copy_(means.mean(0))
                self.running_var.copy_(vars_.mean(0))
        return torch.cat(out)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_splits={self.num_splits}"
