"""Linear probe on precomputed features with the protocol of the W-MSE code base.

github.com/htdt/self-supervised (``eval/sgd.py``), whose CIFAR-100 / Tiny-ImageNet SimCLR and BYOL
numbers the MixMask paper compares with, trains one ``nn.Linear`` on the backbone features of
unaugmented training images (no feature normalisation, no BatchNorm) with Adam (lr 1e-2, coupled L2
weight decay 5e-6), cross-entropy, batches of 1000 reshuffled every epoch, 500 epochs, and an
exponential decay applied once per epoch: epoch ``e`` (0-based) trains at
``lr * (lr_end / lr) ** (e / epochs)``, lr_end = 1e-6, so the last epoch runs at ``lr_end / gamma``
(about 1.02e-6) and the schedule reaches ``lr_end`` when training ends. It scores top-1 and top-5 of
the test features.

Reproduced here: all of the above, with the layer drawn from PyTorch's default ``nn.Linear``
distribution, U(-1/sqrt(d), 1/sqrt(d)) for weights and bias. Differences: the shuffling and the
initialisation come from this function's own ``torch.Generator`` (W-MSE uses the global RNG,
unseeded), so a seed reproduces a run; a final partial batch is trained (W-MSE's
``randperm(n).view(-1, 1000)`` needs n to be a multiple of 1000, as CIFAR's 50,000 and
Tiny-ImageNet's 100,000 are); accuracies are in %, not fractions.

Plain torch rather than Lightning: 500 epochs of 50-100 tiny steps are dominated by per-step overhead,
so the features stay one tensor on the device and batches are index selections.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError


def wmse_lr(epoch: int, epochs: int, lr: float = 1e-2, lr_end: float = 1e-6) -> float:
    """Learning rate of 0-based ``epoch``: W-MSE's ``ExponentialLR`` with
    ``gamma = (lr_end / lr) ** (1 / epochs)``, stepped once per epoch, in closed form (no drift).
    ``wmse_lr(epochs, epochs) == lr_end`` (the value after the last epoch)."""
    return lr * (lr_end / lr) ** (epoch / epochs)


def _check(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
           test_labels: torch.Tensor, num_classes: int) -> None:
    if train_feats.ndim != 2 or len(train_feats) == 0:
        raise DataError("feature probe: no training features (expected a non-empty (n, d) tensor)")
    if test_feats.ndim != 2 or len(test_feats) == 0:
        raise DataError("feature probe: no test features (expected a non-empty (n, d) tensor)")
    if test_feats.shape[1] != train_feats.shape[1]:
        raise DataError(f"feature probe: train features are {train_feats.shape[1]}-d, test "
                        f"features {test_feats.shape[1]}-d")
    for name, feats, labels in (("train", train_feats, train_labels),
                                ("test", test_feats, test_labels)):
        if labels.shape != (len(feats),):
            raise DataError(f"feature probe: {len(feats)} {name} features but labels of shape "
                            f"{tuple(labels.shape)}")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise DataError(f"feature probe: {name} labels outside 0..{num_classes - 1}")


@torch.no_grad()
def _evaluate(clf: nn.Linear, feats: torch.Tensor, labels: torch.Tensor,
              chunk: int = 8192) -> tuple[float, float]:
    """Top-1 and top-5 in %, in chunks so an ImageNet-sized test set with 1000 classes fits."""
    n_top = min(5, clf.out_features)
    hit1 = hit5 = 0
    for s in range(0, len(feats), chunk):
        top = clf(feats[s:s + chunk]).topk(n_top, dim=1).indices
        hits = top == labels[s:s + chunk, None]
        hit1 += int(hits[:, 0].sum())
        hit5 += int(hits.any(1).sum())
    return 100.0 * hit1 / len(feats), 100.0 * hit5 / len(feats)


def train_feature_probe(train_feats: torch.Tensor, train_labels: torch.Tensor,
                        test_feats: torch.Tensor, test_labels: torch.Tensor,
                        num_classes: Optional[int] = None, epochs: int = 500, lr: float = 1e-2,
                        lr_end: float = 1e-6, weight_decay: float = 5e-6, batch_size: int = 1000,
                        seed: int = 0, device: torch.device | str | None = None,
                        eval_every: Optional[int] = None) -> dict[str, Any]:
    """Trains a linear classifier on precomputed features with W-MSE's protocol (module docstring).

    ``num_classes`` defaults to ``train_labels.max() + 1`` (W-MSE's rule); ``device`` to that of
    ``train_feats``. With ``eval_every`` the test set is scored every that many epochs as well.
    Returns ``acc1`` and ``acc5`` (in %) on the test features after the last epoch, ``loss`` (mean
    cross-entropy of the last epoch), ``history`` (``{"epoch", "lr", "loss", "acc1", "acc5"}`` per
    evaluation; empty without ``eval_every``) and ``classifier`` (the trained ``nn.Linear``, on CPU).
    The same inputs and ``seed`` give the same result on the same device.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError("feature probe: epochs and batch_size must be at least 1")
    if lr <= 0 or lr_end <= 0:
        raise ValueError("feature probe: lr and lr_end must be positive (exponential schedule)")
    if eval_every is not None and eval_every < 1:
        raise ValueError("feature probe: eval_every must be at least 1")
    if num_classes is None and train_labels.numel():
        num_classes = int(train_labels.max()) + 1
    _check(train_feats, train_labels, test_feats, test_labels, num_classes or 0)
    assert num_classes is not None
    device = torch.device(device) if device is not None else train_feats.device
    x_train = train_feats.to(device, torch.float32).contiguous()
    y_train = train_labels.to(device, torch.long)
    x_test = test_feats.to(device, torch.float32).contiguous()
    y_test = test_labels.to(device, torch.long)

    gen = torch.Generator().manual_seed(seed)
    dim = x_train.shape[1]
    clf = nn.Linear(dim, num_classes)
    bound = 1.0 / math.sqrt(dim)
    with torch.no_grad():
        clf.weight.uniform_(-bound, bound, generator=gen)
        clf.bias.uniform_(-bound, bound, generator=gen)
    clf.to(device)
    optimizer = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)

    n = len(x_train)
    history: list[dict[str, float]] = []
    epoch_loss = float("nan")
    for epoch in range(epochs):
        lr_now = wmse_lr(epoch, epochs, lr, lr_end)
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        perm = torch.randperm(n, generator=gen).to(device)
        total = torch.zeros((), device=device)
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            loss = F.cross_entropy(clf(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        if eval_every is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            epoch_loss = total.item() / n
            acc1, acc5 = _evaluate(clf, x_test, y_test)
            history.append({"epoch": epoch + 1, "lr": lr_now, "loss": epoch_loss,
                            "acc1": acc1, "acc5": acc5})
    epoch_loss = total.item() / n
    acc1, acc5 = _evaluate(clf, x_test, y_test)
    return {"acc1": acc1, "acc5": acc5, "loss": epoch_loss, "history": history,
            "classifier": clf.cpu()}
