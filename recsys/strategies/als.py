"""ALS, implicit-feedback matrix factorisation from the ``implicit`` library (not written here).

Users and items get ``factors``-d vectors; a history is scored by recomputing its user vector from
the items it holds (so anyone, new users too, is scored by the same fitted item factors).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from recsys import ids as id_lookup
from recsys.events import History
from recsys.strategies.base import Dense, Strategy, choose_params, history_matrix, interaction_matrix

#: Hyper-parameters tried on the validation events.
GRID = [
    {"factors": f, "regularization": r, "alpha": a}
    for f, r, a in itertools.product((32, 64, 128), (0.01, 0.1), (0.5, 4.0))
]
ITERATIONS = 15


def _model(params: dict, seed: int = 0):
    from implicit.cpu.als import AlternatingLeastSquares

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # implicit's advice about BLAS threads: heeded in fit
        return AlternatingLeastSquares(
            factors=int(params["factors"]),
            regularization=float(params["regularization"]),
            alpha=float(params["alpha"]),
            iterations=ITERATIONS,
            random_state=seed,
        )


class Als(Strategy):
    name = "als"
    needs_model = True
    files = ("als.npz", "item_ids.npy")

    model = None

    def fit(self, train: Mapping[str, History]) -> Als:
        from threadpoolctl import threadpool_limits

        if "factors" not in self.params:
            best, table = choose_params(
                lambda p: Als(self.context, {**self.params, **p}), GRID, train, self.context.log
            )
            self.params = {**self.params, **best, "grid": table}
        matrix, _ = interaction_matrix(train, self.context.catalogue, self.context.max_weight)
        self.model = _model(self.params, int(self.params.get("seed", 0)))
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # implicit's advice about BLAS threads
            self.model.fit(matrix.tocsr(), show_progress=False)
        return self

    def score(self, histories: Sequence[History], users: Sequence[str | None]) -> Dense:
        from threadpoolctl import threadpool_limits

        x = history_matrix(histories, self.context.catalogue, self.context.max_weight).tocsr()
        valid = np.diff(x.indptr) > 0
        with threadpool_limits(1, "blas"):
            factors = self.model.recalculate_user(np.arange(len(histories)), x)
        factors = np.atleast_2d(factors)
        return Dense(factors @ self.model.item_factors.T, valid)

    # -- the model registry ------------------------------------------------------------------

    def write(self, folder: Path) -> None:
        self.model.save(str(folder / "als.npz"))
        np.save(folder / "item_ids.npy", self.context.catalogue.ids)

    def read(self, folder: Path) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        model = AlternatingLeastSquares.load(str(folder / "als.npz"))
        trained = np.load(folder / "item_ids.npy")
        ids = self.context.catalogue.ids
        if not np.array_equal(trained, ids):  # items added since: no factors of their own (zeros)
            factors = np.zeros((len(ids), model.item_factors.shape[1]), dtype=model.item_factors.dtype)
            pos, known = id_lookup.find(trained, ids)
            factors[known] = model.item_factors[pos[known]]
            model.item_factors = factors
        self.model = model
