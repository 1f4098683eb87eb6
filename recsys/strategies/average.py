"""Average of what you viewed: the weighted mean of the image vectors of a history.

The vectors live in a centred space (the catalogue mean subtracted), so the mean of a few views
points at what they have in common rather than at "a photo". With a half-life (days), an event that
much older than the user's newest counts half.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys.events import History, history_weights
from recsys.strategies.base import Queries, Strategy


def profile(space, weights: dict[int, float]) -> np.ndarray | None:
    """Unit weighted mean of the items' vectors in ``space``; None when nothing carries weight."""
    if not weights:
        return None
    rows = space.rows(np.fromiter(weights, dtype=np.int64))
    if len(rows) == 0:
        return None
    w = np.array([weights[int(space.ids[r])] for r in rows], dtype=np.float32)
    if float(w.sum()) <= 0:
        return None
    mean = w @ space.matrix[rows]
    norm = float(np.linalg.norm(mean))
    return None if norm == 0.0 else (mean / norm).astype(np.float32)


class Average(Strategy):
    name = "average"
    needs_interactions = False

    def score(self, histories: Sequence[History], users: Sequence[str | None]) -> Queries:
        space = self.context.image_space()
        half_life = self.params.get("half_life_days", self.context.workspace.settings.half_life_days)
        vectors = np.zeros((len(histories), space.matrix.shape[1] if len(space.ids) else 0), np.float32)
        valid = np.zeros(len(histories), dtype=bool)
        for row, history in enumerate(histories):
            query = profile(space, history_weights(history, half_life, self.context.max_weight))
            if query is not None:
                vectors[row], valid[row] = query, True
        return Queries(space, vectors, valid)
