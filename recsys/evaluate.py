"""Offline measures of how good the stored vectors and the recommendations are."""

from __future__ import annotations

from collections import Counter

import numpy as np

from recsys.errors import RecsysError
from recsys.index import exact_search


def knn_accuracy(vectors: np.ndarray, labels: list[str], k: int = 1) -> dict:
    """Leave-one-out k-NN: how often the majority label of an item's k nearest others is its own.

    The seed's sanity check: if neighbours in embedding space do not share labels, no
    recommender built on these vectors will look sensible. Ties go to the nearer neighbour.
    """
    n = len(labels)
    if n < 2 or len(vectors) != n:
        raise RecsysError(f"knn-accuracy needs at least 2 labelled embeddings, found {n}")
    if k < 1 or k >= n:
        raise RecsysError(f"knn-accuracy: k must be between 1 and {n - 1}, got {k}")
    _, rows = exact_search(vectors, vectors, k + 1)
    labels_arr = np.asarray(labels, dtype=object)
    correct = np.zeros(n, dtype=bool)
    for i in range(n):
        # Drop the item itself by identity, not position: byte-identical duplicates tie with it.
        neighbours = [r for r in rows[i] if r != i and r >= 0][:k]
        votes = Counter(labels_arr[neighbours])
        best = max(votes.values())
        winner = next(labels_arr[r] for r in neighbours if votes[labels_arr[r]] == best)
        correct[i] = winner == labels_arr[i]
    per_label = {str(lab): float(correct[labels_arr == lab].mean()) for lab in sorted(set(labels))}
    return {"k": k, "items": n, "accuracy": float(correct.mean()), "per_label": per_label}
