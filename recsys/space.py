"""The retrieval space: unit vectors of one model (or one trained tower) with a faiss index, and the
steps every ranking shares: exclusions, label filters, MMR and "because you viewed".

Low in the house: strategies and serving both stand on it; it imports neither. The ranking that
puts these steps together is ``recsys.serving.ranking``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from recsys import ids as id_lookup
from recsys.index import ItemIndex, exact_search


def center_and_normalise(vectors: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Subtract the catalogue mean, then rescale to unit length.

    Pooled CNN features are all non-negative and share one large common direction; without it,
    the mean of a few views points at what they have in common instead of at "generic photo".
    Measured on flowers5: 5 random tulip views -> >= 9 tulips in the top 10 for 96% of draws,
    against 85% on the raw vectors.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    # one new array, rescaled in place: at 100,000 x 1280 the temporaries of the plain expression
    # took 1.1 s of the server's start (now 0.24 s)
    out = np.subtract(vectors, center, dtype=np.float32)
    norms = np.sqrt(np.einsum("...i,...i->...", out, out))[..., None]
    np.divide(out, np.maximum(norms, 1e-6), out=out)
    return np.where(norms > 1e-6, out, vectors) if (norms <= 1e-6).any() else out


class VectorSpace:
    """The retrieval vectors of one model, their item ids (sorted), labels, and a faiss index.

    Args:
        ids: Item ids, ascending.
        matrix: One unit vector per id, already centred (see ``center_and_normalise``).
        labels: The label of each id (None where unlabelled).
        center: The mean that was subtracted; queries from outside go through ``transform``.
    """

    def __init__(
        self,
        ids: np.ndarray,
        matrix: np.ndarray,
        labels: Sequence[str | None],
        center: np.ndarray,
        name: str = "",
    ) -> None:
        self.name = name
        self.ids = np.asarray(ids, dtype=np.int64)
        self.matrix = matrix
        self.labels = np.asarray(labels, dtype=object)
        self.center = np.asarray(center, dtype=np.float32)
        self.index: ItemIndex | None = None

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """A raw model vector (e.g. of an uploaded image) in this space."""
        return center_and_normalise(np.asarray(raw, dtype=np.float32), self.center)

    def rows(self, item_ids: Sequence[int]) -> np.ndarray:
        """Row numbers of the given ids; ids without a vector are dropped."""
        return id_lookup.rows(self.ids, item_ids)

    def search(
        self, query: np.ndarray, k: int, exclude: set[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the ``k`` best items; the index leaves ``exclude`` out (the exact
        search returns them: ``retrieve`` fetches past them)."""
        if self.index is not None:
            return self.index.search(query, k, exclude)
        scores, rows = exact_search(self.matrix, query, k)
        return scores, np.where(rows >= 0, self.ids[np.clip(rows, 0, None)], -1)


def label_filter(labels: Sequence[str] | None, exclude_labels: Sequence[str] | None) -> Callable | None:
    """A predicate on an item's label, or None when there is nothing to filter."""
    keep = set(labels or [])
    drop = set(exclude_labels or [])
    if not keep and not drop:
        return None
    return lambda label: (not keep or label in keep) and label not in drop


def retrieve(
    space: VectorSpace,
    query: np.ndarray,
    k: int,
    exclude: set[int],
    allowed: Callable[[str | None], bool] | None = None,
) -> list[tuple[int, float]]:
    """The ``k`` best (item id, score) for ``query``, skipping ``exclude`` and disallowed labels.

    The index leaves the excluded items out as it searches; the exact search over-fetches by their
    number. Either way the search widens until ``k`` survive the label filter or the catalogue is
    exhausted, so neither exclusions nor labels push the list below ``k``.
    """
    n = len(space.ids)
    fetch = min(n, k + 10 if space.index is not None else k + len(exclude) + 10)
    while True:
        scores, ids = space.search(query, fetch, exclude)
        hits = []
        for score, item_id in zip(scores[0], ids[0], strict=True):
            item_id = int(item_id)
            if item_id < 0 or item_id in exclude:
                continue
            if allowed is not None and not allowed(space.labels[space.rows([item_id])[0]]):
                continue
            hits.append((item_id, float(score)))
            if len(hits) == k:
                return hits
        if fetch >= n:
            return hits
        fetch = min(n, fetch * 4)


def mmr(
    space: VectorSpace, query: np.ndarray, candidates: list[tuple[int, float]], k: int, lam: float
) -> list[tuple[int, float]]:
    """Maximal marginal relevance: trade relevance to the profile against similarity to picks."""
    if not candidates:
        return []
    rows = space.rows([c[0] for c in candidates])
    vecs = space.matrix[rows]
    relevance = np.array([c[1] for c in candidates], dtype=np.float32)
    chosen: list[int] = []
    max_sim = np.full(len(candidates), -np.inf, dtype=np.float32)
    for _ in range(min(k, len(candidates))):
        redundancy = np.where(np.isfinite(max_sim), max_sim, 0.0)
        gain = lam * relevance - (1 - lam) * redundancy
        gain[chosen] = -np.inf
        best = int(np.argmax(gain))
        chosen.append(best)
        max_sim = np.maximum(max_sim, vecs @ vecs[best])
    return [candidates[i] for i in chosen]


def explain(space: VectorSpace, result_ids: Sequence[int], history_ids: set[int]) -> dict[int, int]:
    """For each result, the history item whose vector is nearest to it ("because you viewed")."""
    hist_rows = space.rows(np.array(sorted(history_ids), dtype=np.int64))
    res_rows = space.rows(result_ids)
    if len(hist_rows) == 0 or len(res_rows) == 0:
        return {}
    sims = space.matrix[res_rows] @ space.matrix[hist_rows].T
    nearest = space.ids[hist_rows][np.argmax(sims, axis=1)]
    return {int(space.ids[r]): int(h) for r, h in zip(res_rows, nearest, strict=True)}
