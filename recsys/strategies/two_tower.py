"""Two-tower retrieval (TensorFlow Recommenders; the model is ``recsys.twotower``).

Items are scored in the item tower's own space, searched through its own faiss index; a history
becomes a query through the user tower. Items added after training borrow the vectors of the known
items they look most like, so they are ranked without retraining. Serving loads a version that
`recsys train` saved; ``fit`` trains one on the events it is given (minutes, not seconds: the
evaluation scores the version trained for its split instead).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np

from recsys import store, twotower
from recsys.events import History
from recsys.space import VectorSpace
from recsys.splits import TrainedOn
from recsys.strategies.base import Queries, Strategy


class TwoTower(Strategy):
    name = twotower.KIND
    needs_model = True
    files = twotower.FILES
    fits_in_evaluation = False  # minutes of training: evaluated on a version trained for the split
    needs_interactions = False

    server = None
    space: VectorSpace | None = None

    def fit_serving(self) -> TwoTower:
        from recsys.twotower.train import load

        model, vocab, row = load(self.context.workspace, self.params.get("version"))
        self.params = {**(row.params or {}), "version": row.version}
        return self._serve(model, vocab, f"{self.name}-v{row.version}", row.base_model)

    def fit(self, train: Mapping[str, History]) -> TwoTower:
        """Train a model on ``train`` (hyper-parameters from ``params``), kept in memory; items
        nobody in ``train`` picked get no id row, so they borrow from look-alikes as new ones do."""
        from recsys.twotower.train import fit

        known = {f.name for f in fields(twotower.TwoTowerConfig)}
        config = twotower.TwoTowerConfig(**{k: v for k, v in self.params.items() if k in known})
        base_model = self.context.workspace.settings.model
        ids, raw = self._vectors(base_model)
        picked = {e[0] for events in train.values() for e in events}
        left_out = frozenset(int(i) for i in ids if int(i) not in picked)  # no id row: they borrow
        model, vocab, _ = fit(
            ids, raw, train, config, left_out=left_out, log=self.context.log or (lambda _: None)
        )
        return self._serve(model, vocab, f"{self.name}-fitted", base_model)

    @classmethod
    def trained_on(cls, params: Mapping) -> TrainedOn:
        return twotower.trained_on(params)

    def write(self, folder: Path) -> None:
        from recsys.twotower.train import write_files

        write_files(folder, self.server.model, self.server.vocab)

    def read(self, folder: Path) -> None:
        """A model saved by ``write`` (inside another model's folder), served over today's items."""
        from recsys.twotower.train import read_files

        base_model = self.context.workspace.settings.model
        ids, raw = self._vectors(base_model)
        self._serve(*read_files(folder, ids, raw), f"{self.name}-{folder.parent.name}", base_model)

    def item_matrix(self, as_new: np.ndarray | None = None) -> np.ndarray:
        """The item vectors (rows of ``space``), those of the ids in ``as_new`` borrowed from
        their look-alikes among the others, as an item added after training gets them: for
        learning how a new item's scores look without its interactions showing through."""
        matrix = self.space.matrix
        if as_new is None or not len(as_new):
            return matrix
        from recsys.twotower.serve import borrowed_vectors

        server, config = self.server, self.server.model.config
        hide = np.isin(self.space.ids, as_new)
        known = (server.vocab.item_rows(self.space.ids) != 0) & ~hide
        if not hide.any() or not known.any():
            return matrix
        out = matrix.copy()
        out[hide] = borrowed_vectors(
            server.raw[hide],
            server.raw[known],
            matrix[known],
            config.new_item_neighbours,
            config.new_item_temperature,
        )
        return out

    def _vectors(self, base_model: str) -> tuple[np.ndarray, np.ndarray]:
        with self.context.workspace.session() as session:
            return store.load_embeddings(session, base_model)

    def _serve(self, model, vocab, name: str, base_model: str) -> TwoTower:
        from recsys.twotower.serve import TowerServer

        self.server = TowerServer(model, vocab, name)
        ids, raw = self._vectors(base_model)
        vectors = self.server.item_vectors(ids, raw)
        catalogue, rows = self.context.catalogue, self.context.catalogue.rows(ids)
        labels = np.where(rows >= 0, catalogue.labels[rows] if len(catalogue) else None, None)
        self.space = VectorSpace(ids, vectors, labels, np.zeros(vectors.shape[1], np.float32), name)
        if self.context.attach_index is not None and len(ids):
            self.context.attach_index(self.space)
        return self

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
