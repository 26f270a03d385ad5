"""k-nearest-neighbour classification of features: weighted (InstDisc / solo-learn) or majority vote
(the W-MSE code base, github.com/htdt/self-supervised: k = 5, euclidean, unweighted). The online
KNN of a training run (``methods.base``, ``engine.monitors``) and the offline evaluation
(``eval.knn``) both score with this code, so their numbers agree.

Both the test and the train bank are processed in chunks with a running top-k, so memory stays at
``test_chunk x train_chunk`` similarities whatever the bank size (an ImageNet bank fits).

Ties. ``vote="majority"`` ranks classes by vote count, equal counts by the smaller class index (the
rule of W-MSE's ``unique(return_counts=True)`` + ``argmax``), and a class without a vote is never a
top-5 hit (with k = 5 and fewer than five distinct neighbour classes, ``topk`` would otherwise fill
the top five with arbitrary zero-vote classes). Which neighbours are chosen among train features at
exactly the same distance as the k-th is left to ``topk``, as in W-MSE. ``vote="weighted"`` keeps its
original ranking by ``topk`` of the weighted scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DataError

VOTES = ("weighted", "majority")


def _block(feats: torch.Tensor, start: int, size: int, device: torch.device,
           distance: str) -> torch.Tensor:
    """Rows ``start:start+size`` as float32 on ``device``, L2-normalised for cosine. Normalising
    block by block keeps a float16 or CPU-resident bank from being copied whole."""
    block = feats[start:start + size].to(device).float()
    return F.normalize(block, dim=1) if distance == "cosine" else block


@torch.no_grad()
def knn_scores(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
               num_classes: int, k: int = 200, T: float = 0.1, distance: str = "cosine",
               test_chunk: int = 1024, train_chunk: int = 65536,
               vote: str = "weighted") -> torch.Tensor:
    """Class scores ``(n_test, num_classes)`` from the ``k`` most similar train features.

    ``vote="weighted"``: ``cosine`` weighs the similarities of L2-normalised features by
    ``exp(sim / T)``; ``euclidean`` by ``1 / (distance + 1e-5)`` (solo-learn's variant).
    ``vote="majority"``: every neighbour counts 1 and the scores are vote counts (``T`` unused);
    euclidean neighbours are those of the smallest raw distance, as W-MSE selects them.
    """
    if train_feats.numel() == 0 or len(train_feats) == 0:
        raise DataError("KNN: the feature bank is empty (no training features)")
    if len(test_feats) == 0:
        raise DataError("KNN: no test features to classify")
    if distance not in ("cosine", "euclidean"):
        raise ValueError(f"unknown KNN distance {distance!r}")
    if vote not in VOTES:
        raise ValueError(f"unknown KNN vote {vote!r}: choose one of {VOTES}")
    majority = vote == "majority"
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
            elif majority:  # ranks by the distance itself, no reciprocal rounding
                sim = -torch.cdist(test, bank)
            else:
                sim = 1.0 / (torch.cdist(test, bank) + 1e-5)
            s, i = sim.topk(min(k, sim.shape[1]), dim=1)
            i = i + r0
            if best_sim is not None:
                s, j = torch.cat([best_sim, s], 1).topk(k, dim=1)
                i = torch.cat([best_idx, i], 1).gather(1, j)
            best_sim, best_idx = s, i
        if majority:
            weights = torch.ones_like(best_sim)
        else:
            weights = (best_sim / T).exp() if distance == "cosine" else best_sim
        votes = torch.zeros(len(test), num_classes, device=device)
        votes.scatter_add_(1, train_labels[best_idx], weights)
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int | None = None, k: int = 200,
                 T: float = 0.1, distance: str = "cosine", *, vote: str = "weighted",
                 **chunks) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (in %) of the KNN classifier (``vote``: see ``knn_scores``).

    W-MSE's protocol is ``k=5, distance="euclidean", vote="majority"`` on unnormalised features; it
    reports top-1 only (as a fraction).
    """
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max()).item()) + 1
    scores = knn_scores(train_feats, train_labels, test_feats, num_classes, k, T, distance,
                        vote=vote, **chunks)
    labels = test_labels.to(scores.device)
    n_top = min(5, num_classes)
    if vote == "majority":
        # stable sort: equal counts keep class order, so the smaller class index ranks first
        ranked, top = scores.sort(dim=1, descending=True, stable=True)
        hits = (top[:, :n_top] == labels[:, None]) & (ranked[:, :n_top] > 0)
    else:
        top = scores.topk(n_top, dim=1).indices
        hits = top == labels[:, None]
    top1 = hits[:, 0].float().mean().item() * 100
    top5 = hits.any(1).float().mean().item() * 100
    return top1, top5
