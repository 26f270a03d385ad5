"""Weighted k-nearest-neighbour classification of features (InstDisc / solo-learn style).

Both the test and the train bank are processed in chunks with a running top-k, so memory stays at
``test_chunk x train_chunk`` similarities whatever the bank size (an ImageNet bank fits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DataError


def _block(feats: torch.Tensor, start: int, size: int, device: torch.device,
           distance: str) -> torch.Tensor:
    """Rows ``start:start+size`` as float32 on ``device``, L2-normalised for cosine. Normalising
    block by block keeps a float16 or CPU-resident bank from being copied whole."""
    block = feats[start:start + size].to(device).float()
    return F.normalize(block, dim=1) if distance == "cosine" else block


@torch.no_grad()
def knn_scores(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
               num_classes: int, k: int = 200, T: float = 0.1, distance: str = "cosine",
               test_chunk: int = 1024, train_chunk: int = 65536) -> torch.Tensor:
    """Class scores ``(n_test, num_classes)`` from the ``k`` most similar train features.

    ``cosine``: similarities of L2-normalised features, weighted by ``exp(sim / T)``.
    ``euclidean``: weighted by ``1 / (distance + 1e-5)`` (solo-learn's variant).
    """
    if train_feats.numel() == 0 or len(train_feats) == 0:
        raise DataError("KNN: the feature bank is empty (no training features)")
    if len(test_feats) == 0:
        raise DataError("KNN: no test features to classify")
    if distance not in ("cosine", "euclidean"):
        raise ValueError(f"unknown KNN distance {distance!r}")
    k = min(k, len(train_feats))
    device = test_feats.device
    train_labels = train_labels.to(device)
    scores = []
    for t0 in range(0, len(test_feats), test_chunk):
        test = _block(test_feats, t0, test_chunk, device, distance)
        best_sim = best_idx = None
        for r0 in range(0, len(train_feats), train_chunk):
            bank = _block(train_feats, r0, train_chunk, device, distance)
            if distance == "cosine":
                sim = test @ bank.T
            else:
                sim = 1.0 / (torch.cdist(test, bank) + 1e-5)
            s, i = sim.topk(min(k, sim.shape[1]), dim=1)
            i = i + r0
            if best_sim is not None:
                s, j = torch.cat([best_sim, s], 1).topk(k, dim=1)
                i = torch.cat([best_idx, i], 1).gather(1, j)
            best_sim, best_idx = s, i
        weights = (best_sim / T).exp() if distance == "cosine" else best_sim
        votes = torch.zeros(len(test), num_classes, device=device)
        votes.scatter_add_(1, train_labels[best_idx], weights)
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int | None = None, k: int = 200,
                 T: float = 0.1, distance: str = "cosine", **chunks) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (in %) of the weighted KNN classifier."""
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max()).item()) + 1
    scores = knn_scores(train_feats, train_labels, test_feats, num_classes, k, T, distance,
                        **chunks)
    labels = test_labels.to(scores.device)
    top = scores.topk(min(5, num_classes), dim=1).indices
    top1 = (top[:, 0] == labels).float().mean().item() * 100
    top5 = (top == labels[:, None]).any(1).float().mean().item() * 100
    return top1, top5
