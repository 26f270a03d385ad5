"""The offline KNN evaluation's metric: the one the online monitor logs, from ``utils.knn``, so a
checkpoint's offline score and its training curve come from the same code."""

from __future__ import annotations

from ..utils.knn import VOTES, knn_accuracy, knn_scores

__all__ = ["VOTES", "knn_accuracy", "knn_scores"]
