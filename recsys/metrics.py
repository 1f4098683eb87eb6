"""Metrics of ranked lists, the pure definitions and their batched twin, with bootstrap intervals.

The functions are the definitions (tested against hand-computed values and a brute-force
implementation); ``ListMetrics`` computes them for a batch of lists in array operations, and a test
holds the two equal. ``mean_recall`` is the one recall@k the trainers stop on.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from recsys import ids as id_lookup
from recsys.errors import RecsysError


def knn_accuracy(vectors: np.ndarray, labels: list[str], k: int = 1) -> dict:
    """Leave-one-out k-NN: how often the majority label of an item's k nearest others is its own.

    The seed's sanity check: if neighbours in embedding space do not share labels, no
    recommender built on these vectors will look sensible. Ties go to the nearer neighbour.
    """
    from recsys.index import exact_search

    n = len(labels)
    if n < 2 or len(vectors) != n:
        raise RecsysError(f"knn-accuracy needs at least 2 labelled embeddings, found {n}")
    if k < 1 or k >= n:
        raise RecsysError(f"knn-accuracy: k must be between 1 and {n - 1}, got {k}")
    labels_arr = np.asarray(labels, dtype=object)
    correct = np.zeros(n, dtype=bool)
    for start in range(0, n, 2048):
        _, rows = exact_search(vectors, vectors[start : start + 2048], k + 1)
        for offset, row in enumerate(rows):
            i = start + offset
            # Drop the item itself by identity, not position: byte-identical duplicates tie with it.
            neighbours = [r for r in row if r != i and r >= 0][:k]
            votes = Counter(labels_arr[neighbours])
            best = max(votes.values())
            winner = next(labels_arr[r] for r in neighbours if votes[labels_arr[r]] == best)
            correct[i] = winner == labels_arr[i]
    per_label = {str(lab): float(correct[labels_arr == lab].mean()) for lab in sorted(set(labels))}
    return {"k": k, "items": n, "accuracy": float(correct.mean()), "per_label": per_label}


def ranking_metrics(ranked: Sequence[int], relevant: set[int], k: int) -> dict[str, float]:
    """recall, precision, NDCG, AP and hit rate at ``k`` of one ranked list (binary relevance).

    AP@k is normalised by min(|relevant|, k), so a perfect list scores 1 even when more items
    are relevant than fit in k. An empty list scores 0 everywhere; no relevant items is an error.
    """
    if not relevant:
        raise ValueError("a user without held-out items cannot be scored")
    top = list(ranked[:k])
    hits = [1.0 if item in relevant else 0.0 for item in top]
    n_hits = sum(hits)
    dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    precisions = [sum(hits[: i + 1]) / (i + 1) for i, h in enumerate(hits) if h]
    return {
        "recall": n_hits / len(relevant),
        "precision": n_hits / k,
        "ndcg": dcg / ideal,
        "map": sum(precisions) / min(len(relevant), k),
        "hit_rate": 1.0 if n_hits else 0.0,
    }


def reciprocal_rank(ranked: Sequence[int], relevant: set[int]) -> float:
    for position, item in enumerate(ranked, start=1):
        if item in relevant:
            return 1.0 / position
    return 0.0


def intra_list_diversity(ranked: Sequence[int], vectors: dict[int, np.ndarray]) -> float:
    """Mean pairwise cosine distance between the (unit) vectors of a list; 0 for < 2 items."""
    rows = [vectors[i] for i in ranked if i in vectors]
    if len(rows) < 2:
        return 0.0
    m = np.stack(rows)
    sims = m @ m.T
    n = len(rows)
    return float((n * (n - 1) - (sims.sum() - np.trace(sims))) / (n * (n - 1)))


def novelty(ranked: Sequence[int], item_users: dict[int, int], n_users: int) -> float:
    """Mean self-information -log2 p(i), p(i) = (training users of i + 1) / (users + 1)."""
    if not ranked:
        return 0.0
    return float(np.mean([-math.log2((item_users.get(i, 0) + 1) / (n_users + 1)) for i in ranked]))


class ListMetrics:
    """The metrics above for a batch of lists at once (array operations over users, not one
    Python call per user, metric and cut-off); the functions above are the definitions, and a test
    holds the two equal.

    Args:
        ks: Cut-offs.
        ids: Item ids of ``matrix``'s rows, ascending (diversity: items without a row are skipped).
        matrix: Unit vectors the diversity is measured in.
        item_users: Training users per item (novelty).
        n_users: Training users.
    """

    def __init__(
        self, ks: Sequence[int], ids: np.ndarray, matrix: np.ndarray, item_users: dict[int, int], n_users: int
    ) -> None:
        self.ks = tuple(sorted(set(ks)))
        self.ids, self.matrix = np.asarray(ids, dtype=np.int64), matrix
        keys = np.array(sorted(item_users), dtype=np.int64)
        self._novelty_keys = keys
        self._novelty_values = -np.log2(
            (np.array([item_users[k] for k in keys.tolist()]) + 1) / (n_users + 1)
        )
        self._unseen_novelty = -math.log2(1 / (n_users + 1))

    def score(self, lists: Sequence[Sequence[int]], relevant: Sequence[set[int]]) -> dict[str, np.ndarray]:
        """Per-user values of every metric (keys like "recall@10", "mrr"), aligned with ``lists``."""
        n, width = len(lists), max(max((len(x) for x in lists), default=0), 1)
        ranked = np.full((n, width), -1, dtype=np.int64)
        for row, items in enumerate(lists):
            ranked[row, : len(items)] = items
        present = ranked >= 0
        if any(not r for r in relevant):
            raise ValueError("a user without held-out items cannot be scored")
        n_relevant = np.array([len(r) for r in relevant], dtype=np.float64)
        wanted = np.concatenate([np.fromiter(r, np.int64, len(r)) for r in relevant])
        owner = np.repeat(np.arange(n, dtype=np.int64), n_relevant.astype(np.int64))
        span = int(max(ranked.max(initial=0), wanted.max(initial=0))) + 1
        hits = np.isin(np.arange(n)[:, None] * span + ranked, owner * span + wanted) & present
        discount = 1.0 / np.log2(np.arange(2, max(width, max(self.ks)) + 2))
        ideal = np.cumsum(discount)
        found_at = np.cumsum(hits, axis=1)
        rows, valid = id_lookup.find(self.ids, ranked)
        valid &= present
        info_pos, known = id_lookup.find(self._novelty_keys, ranked)
        information = np.where(
            known, self._novelty_values[info_pos] if len(info_pos) else 0, self._unseen_novelty
        )
        information = np.where(present, information, 0.0)
        out: dict[str, np.ndarray] = {}
        sums = np.zeros((n, self.matrix.shape[1]), np.float64)
        norms = np.zeros(n)
        done = 0
        for k in self.ks:
            top = min(k, width)
            h = hits[:, :top]
            n_hits = h.sum(axis=1).astype(np.float64)
            out[f"recall@{k}"] = n_hits / n_relevant
            out[f"precision@{k}"] = n_hits / k
            out[f"ndcg@{k}"] = (h * discount[:top]).sum(axis=1) / ideal[
                np.minimum(n_relevant, k).astype(int) - 1
            ]
            precision_at = found_at[:, :top] / np.arange(1, top + 1)
            out[f"map@{k}"] = (precision_at * h).sum(axis=1) / np.minimum(n_relevant, k)
            out[f"hit_rate@{k}"] = (n_hits > 0).astype(np.float64)
            for j in range(done, top):  # running sums of the vectors: pairwise cosines without pairs
                at = valid[:, j]
                v = self.matrix[rows[at, j]].astype(np.float64)
                sums[at] += v
                norms[at] += (v * v).sum(axis=1)
            done = max(done, top)
            count = valid[:, :top].sum(axis=1).astype(np.float64)
            pairs = count * (count - 1)
            similar = (sums * sums).sum(axis=1) - norms
            out[f"diversity@{k}"] = np.where(pairs > 0, (pairs - similar) / np.maximum(pairs, 1), 0.0)
            listed = present[:, :top].sum(axis=1)
            out[f"novelty@{k}"] = information[:, :top].sum(axis=1) / np.maximum(listed, 1)
        first = np.argmax(hits, axis=1)
        out["mrr"] = np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)
        return out


def bootstrap_ci(values: Sequence[float], *, samples: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap interval of the mean over users."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return (float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))


def paired_comparison(a: Sequence[float], b: Sequence[float], *, samples: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap over users of mean(a - b): the difference, its 95% interval, a p-value."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    p = 2 * min(np.mean(means <= 0), np.mean(means >= 0))
    return {
        "mean_difference": float(diff.mean()),
        "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
        "p_value": float(min(1.0, p)),
        "users_better": int(np.sum(diff > 0)),
        "users_worse": int(np.sum(diff < 0)),
    }


def mean_recall(tops: Sequence[Sequence[int]], relevant: Sequence[set[int]]) -> float:
    """Mean recall of top-k lists (any order) against each user's relevant items: the figure
    training stops on and hyper-parameters are chosen by (NaN for no users)."""
    if not relevant:
        return float("nan")
    return sum(len(set(top) & rel) / len(rel) for top, rel in zip(tops, relevant, strict=True)) / len(
        relevant
    )
