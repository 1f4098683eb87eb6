"""The one lookup of ids in a sorted id array (item ids, vocabularies, catalogues).

Every table recsys keeps by item keeps its ids ascending, so a lookup is a binary search. Callers
differ only in what a missing id becomes, so this answers the two facts they all need: where each
id would stand, and whether it is there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def find(sorted_ids: np.ndarray, wanted: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of each of ``wanted`` in ``sorted_ids``, whether it is there).

    A missing id gets a valid position (of a neighbour) and False, so callers can index with the
    positions at once and mask with the flags: ``pos[found]``, ``np.where(found, pos, -1)``.
    """
    wanted = np.asarray(wanted, dtype=np.int64)
    if len(sorted_ids) == 0:
        return np.zeros(wanted.shape, np.int64), np.zeros(wanted.shape, bool)
    pos = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
    return pos, sorted_ids[pos] == wanted


def rows(sorted_ids: np.ndarray, wanted: Sequence[int] | np.ndarray) -> np.ndarray:
    """Positions of the ``wanted`` ids that are present (missing ones dropped, order kept)."""
    pos, found = find(sorted_ids, wanted)
    return pos[found]


def positions(sorted_ids: np.ndarray, wanted: Sequence[int] | np.ndarray) -> np.ndarray:
    """Position of each ``wanted`` id, -1 where it is missing."""
    pos, found = find(sorted_ids, wanted)
    return np.where(found, pos, -1)
