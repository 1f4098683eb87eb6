"""What came next: the items that followed a user's latest items in other people's sequences.

An order-aware peer, and a strong one where people go through a catalogue in sessions: counting
which item followed which needs no images and no training beyond the counts. In each person's
sequence of distinct items, every item counts the ``window`` items after it (each step further
``decay`` times less); each row is then a distribution over what came next. A history is scored by
its latest items' rows, the latest weighing most (``half_life`` in items; 0: all alike).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from recsys import ids as id_lookup
from recsys.events import History, item_sequence
from recsys.strategies.base import Catalogue, Dense, Strategy, choose_params, recency_rows

#: Hyper-parameters tried on the validation events.
GRID = [
    {"window": w, "decay": d, "half_life": h}
    for w, d, h in itertools.product((1, 3, 10, 30), (0.5, 0.8, 0.95), (1.0, 3.0, 0.0))
]
#: Most recent distinct items of a history that score it.
RECENT = 50


def transition_matrix(histories: Sequence[History], catalogue: Catalogue, window: int, decay: float):
    """items x items sparse matrix (scipy CSR): row i, how often each item came within ``window``
    steps after item i, a step further counting ``decay`` times less; rows sum to 1 (or 0)."""
    from scipy.sparse import csr_matrix

    sequences = [p[p >= 0] for p in (catalogue.rows(item_sequence(h)) for h in histories)]
    items = np.concatenate(sequences) if sequences else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    rows, cols, vals = [], [], []
    for step in range(1, window + 1):
        same = owner[:-step] == owner[step:]  # pairs inside one person's sequence
        rows.append(items[:-step][same])
        cols.append(items[step:][same])
        vals.append(np.full(int(same.sum()), decay ** (step - 1), np.float32))
    n = len(catalogue)
    counts = csr_matrix(
        (
            np.concatenate(vals or [np.zeros(0, np.float32)]),
            (
                np.concatenate(rows or [np.zeros(0, np.int64)]),
                np.concatenate(cols or [np.zeros(0, np.int64)]),
            ),
        ),
        shape=(n, n),
    )
    counts.sum_duplicates()
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
    return csr_matrix(counts.multiply(scale[:, None]), dtype=np.float32)


class Transitions(Strategy):
    name = "transitions"
    needs_model = True
    files = ("transitions.npz", "item_ids.npy")

    matrix = None

    def fit(self, train: Mapping[str, History]) -> Transitions:
        if "window" not in self.params:
            best, table = choose_params(
                lambda p: Transitions(self.context, {**self.params, **p}), GRID, train, self.context.log
            )
            self.params = {**self.params, **best, "grid": table}
        self.matrix = transition_matrix(
            list(train.values()),
            self.context.catalogue,
            int(self.params["window"]),
            float(self.params["decay"]),
        )
        return self

    def score(self, histories: Sequence[History], users: Sequence[str | None]) -> Dense:
        half_life = float(self.params.get("half_life") or 0.0)
        x = recency_rows(histories, self.context.catalogue, half_life, last=RECENT)
        return Dense((x @ self.matrix).toarray(), np.diff(x.indptr) > 0)

    # -- the model registry ------------------------------------------------------------------

    def write(self, folder: Path) -> None:
        from scipy.sparse import save_npz

        save_npz(folder / "transitions.npz", self.matrix)
        np.save(folder / "item_ids.npy", self.context.catalogue.ids)

    def read(self, folder: Path) -> None:
        """Load the counts, laid onto today's catalogue (items added since have no row or column)."""
        from scipy.sparse import csr_matrix, load_npz

        matrix, trained = load_npz(folder / "transitions.npz").tocsr(), np.load(folder / "item_ids.npy")
        ids = self.context.catalogue.ids
        if not np.array_equal(trained, ids):
            pos, known = id_lookup.find(trained, ids)  # today's row i is the saved row pos[i]
            move = csr_matrix(
                (np.ones(int(known.sum()), np.float32), (np.nonzero(known)[0], pos[known])),
                shape=(len(ids), len(trained)),
            )
            matrix = move @ matrix @ move.T
        self.matrix = csr_matrix(matrix, dtype=np.float32)
