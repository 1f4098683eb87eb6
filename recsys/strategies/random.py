"""Random order: the floor every other strategy must clear (seeded per user when asked)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from recsys.events import History
from recsys.strategies.base import Dense, Strategy


class Random(Strategy):
    name = "random"
    explains = False
    needs_interactions = False

    def score(self, histories: Sequence[History], users: Sequence[str | None]) -> Dense:
        n = len(self.context.catalogue)
        seed = self.params.get("seed")
        scores = np.empty((len(histories), n))
        for row, user in enumerate(users):
            key = None if seed is None else [seed, zlib.crc32(str(user).encode())]
            scores[row] = np.random.default_rng(key).random(n)
        return Dense(scores, np.ones(len(histories), dtype=bool))
