"""Nearest-neighbour search over item vectors (inner product = cosine on unit vectors)."""

from __future__ import annotations

import numpy as np


def exact_search(matrix: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row numbers) of the ``k`` best rows of ``matrix`` per query; -1 pads short lists."""
    import faiss

    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if len(matrix) == 0 or k <= 0:
        n = len(queries)
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    index = faiss.IndexFlatIP(matrix.shape[1])
    index.add(np.ascontiguousarray(matrix, dtype=np.float32))
    return index.search(queries, min(k, len(matrix)))
