"""Most popular: how many people picked each item, newest first among equals. The cold-start list too.

An item's popularity is the sum over people of what each of them did with it, each person's part
capped at one purchase (``PERSON_CAP``): sixty likes from one visitor count as one keen person, so
no one can buy a place on the list. Page visitors of one origin (one network: a visitor can make
new ones at will) count as one person; users of the API, named by the site, each count.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from recsys.events import EVENT_WEIGHTS, History
from recsys.strategies.base import Dense, Strategy, interaction_matrix

#: Seconds a served popularity count is reused: a GROUP BY over every event is too dear per request.
TTL_SECONDS = 30.0
#: Newness is worth less than the smallest difference in weight (weights are multiples of 0.5).
_TIE_BREAK = 1e-3
#: The most one person's events on one item add to its popularity: one purchase's worth.
PERSON_CAP = max(EVENT_WEIGHTS.values())


class Popular(Strategy):
    name = "popular"
    explains = False

    _vector: np.ndarray | None = None
    _fitted_at: float = 0.0
    _serving: bool = False

    def fit(self, train: Mapping[str, History]) -> Popular:
        matrix, _ = interaction_matrix(train, self.context.catalogue, self.context.max_weight)
        matrix.data = np.minimum(matrix.data, PERSON_CAP)  # one person, one capped part
        self._set(np.asarray(matrix.sum(axis=0)).ravel())
        return self

    def fit_serving(self) -> Popular:
        """Counts over every stored event, straight from the database (refreshed every 30 s)."""
        from sqlalchemy import String, case, cast, func, select

        from recsys import store

        max_weight = self.context.max_weight
        own = store.Interaction.weight
        clipped = case((own > max_weight, max_weight), (own < 0, 0.0), else_=own)
        by_type = case(*((store.Interaction.event == n, w) for n, w in EVENT_WEIGHTS.items()), else_=1.0)
        # a person: a user, or every page visitor of one origin (one network) together
        person = func.coalesce(store.User.origin, cast(store.Interaction.user_id, String))
        per_person = (
            select(store.Interaction.item_id, func.sum(func.coalesce(clipped, by_type)).label("part"))
            .join(store.User, store.User.id == store.Interaction.user_id)
            .group_by(store.Interaction.item_id, person)
            .subquery()
        )
        capped = case((per_person.c.part > PERSON_CAP, PERSON_CAP), else_=per_person.c.part)
        query = select(per_person.c.item_id, func.sum(capped)).group_by(per_person.c.item_id)
        with self.context.workspace.engine.connect() as conn:
            rows = conn.execute(query).all()
        counts = np.zeros(len(self.context.catalogue))
        if rows:
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            positions = self.context.catalogue.rows(ids)
            keep = positions >= 0
            counts[positions[keep]] = np.array([float(r[1]) for r in rows])[keep]
        self._set(counts)
        self._serving = True
        return self

    def _set(self, counts: np.ndarray) -> None:
        self.counts = counts.astype(np.float64)
        self._vector = self.counts + _TIE_BREAK * self.context.catalogue.newness
        self._fitted_at = time.monotonic()

    def score(self, histories: Sequence[History], users: Sequence[str | None]) -> Dense:
        if self._serving and time.monotonic() - self._fitted_at > TTL_SECONDS:
            self.fit_serving()
        if self._vector is None:
            raise RuntimeError("Popular.score before fit")
        return Dense(self._vector[None, :], np.ones(len(histories), dtype=bool))
