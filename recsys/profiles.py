"""User profiles: the weighted mean of the unit vectors of the items in a user's history.

Computed from the history at request time, so a new event shows in the very next recommendation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from recsys.interactions import EVENT_WEIGHTS


def history_weights(
    history: Sequence[tuple[int, str, float | None, datetime]],
    half_life_days: float | None = None,
    max_weight: float = 100.0,
) -> dict[int, float]:
    """Total weight of each item in a history of (item id, event, weight, ts).

    Each event counts its explicit weight, else its type's default. With a half-life, an event
    ``half_life_days`` older than the user's newest event counts half (the anchor is the newest
    event, not the clock, so an old log is not decayed to nothing). Stored weights are clipped to
    [0, ``max_weight``]: rows written before that bound existed cannot overflow a profile.
    """
    if not history:
        return {}
    newest = max(ts for *_, ts in history)
    totals: dict[int, float] = {}
    for item_id, event, weight, ts in history:
        w = EVENT_WEIGHTS.get(event, 1.0) if weight is None else min(max(float(weight), 0.0), max_weight)
        if half_life_days:
            age_days = (newest - ts).total_seconds() / 86400.0
            w *= 0.5 ** (age_days / half_life_days)
        totals[item_id] = totals.get(item_id, 0.0) + w
    return totals


def profile_vector(rows: np.ndarray, weights: np.ndarray, matrix: np.ndarray) -> np.ndarray | None:
    """Re-normalised weighted mean of ``matrix[rows]``; None when nothing carries weight."""
    if len(rows) == 0 or float(np.sum(weights)) <= 0:
        return None
    mean = np.asarray(weights, dtype=np.float32) @ matrix[rows]
    norm = float(np.linalg.norm(mean))
    if norm == 0.0:
        return None
    return (mean / norm).astype(np.float32)
