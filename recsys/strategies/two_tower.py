"""Two-tower retrieval (TensorFlow Recommenders), trained by `recsys train` (see ``recsys.twotower``).

Items are scored in the item tower's own space, searched through its own faiss index; a history
becomes a query through the user tower. Items added after training get a vector from their
pixels alone (the out-of-vocabulary id row), so they are ranked without retraining.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys.space import VectorSpace
from recsys.strategies.base import History, Queries, Strategy


class TwoTower(Strategy):
    name = "two-tower"
    needs_model = True
    fits_in_evaluation = False  # minutes of training: evaluated on a version trained for the split
    needs_interactions = False

    server = None
    space: VectorSpace | None = None

    def fit_serving(self) -> TwoTower:
        from sqlalchemy import select

        from recsys import store
        from recsys.twotower import TowerServer

        ws = self.context.workspace
        self.server = TowerServer(ws, self.params.get("version"))
        self.params = {**(self.server.row.params or {}), "version": self.server.row.version}
        with ws.session() as session:
            ids, raw = store.load_embeddings(session, self.server.base_model)
            labels = dict(session.execute(select(store.Item.id, store.Item.label)).all())
        vectors = self.server.item_vectors(ids, raw)
        self.space = VectorSpace(
            ids,
            vectors,
            [labels.get(int(i)) for i in ids],
            np.zeros(vectors.shape[1], np.float32),
            self.server.name,
        )
        if self.context.attach_index is not None and len(ids):
            self.context.attach_index(self.space)
        return self

    def fit(self, train) -> TwoTower:  # evaluation: the version trained on this split
        return self.fit_serving()

    def score(self, histories: Sequence[History], users: Sequence[str | None]) -> Queries:
        space = self.space
        vectors = np.zeros((len(histories), space.matrix.shape[1]), np.float32)
        valid = np.zeros(len(histories), dtype=bool)
        known = []
        for row, history in enumerate(histories):
            ordered = sorted(history, key=lambda e: (e[3], e[0]))  # oldest first; the last views count
            ids = np.array(list(dict.fromkeys(e[0] for e in ordered)), dtype=np.int64)
            rows = space.rows(ids)
            if len(rows):
                known.append((row, ids[np.isin(ids, space.ids)]))
        if known:
            at = [row for row, _ in known]
            vectors[at] = self.server.user_vectors([ids for _, ids in known], [users[r] for r in at])
            valid[at] = True
        return Queries(space, vectors, valid)
