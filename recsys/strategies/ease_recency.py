"""EASE whose user rows weigh recent items more: the same item-item weights as ``ease``, read
through a history in which an item ``half_life`` items older than the latest counts half.

The order-aware version of the strongest order-blind peer: on logs where people go through the
catalogue in sessions, what they met last says most about what comes next. The half-life is
tuned on validation events after lambda, "none" (0) included, so it can only match or beat EASE
there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recsys.events import History
from recsys.strategies.base import Dense, choose_params, recency_rows
from recsys.strategies.ease import GRID as LAMBDAS
from recsys.strategies.ease import Ease

#: Half-lives (in items) tried on the validation events; 0: every item alike (plain EASE).
HALF_LIVES = (0.0, 2.0, 5.0, 20.0)


class EaseRecency(Ease):
    name = "ease-recency"

    def fit(self, train: Mapping[str, History]) -> EaseRecency:
        self._check_size()
        if "lambda" not in self.params or "half_life" not in self.params:
            memo: dict = {}  # one lambda's weights, shared by the half-lives tried with it
            best, lambdas = choose_params(
                lambda p: EaseRecency(self.context, {**self.params, **p, "_memo": memo}),
                [{"lambda": v, "half_life": 0.0} for v in LAMBDAS],
                train,
                self.context.log,
            )
            best, half_lives = choose_params(
                lambda p: EaseRecency(self.context, {**self.params, **p, "_memo": memo}),
                [{"lambda": best["lambda"], "half_life": h} for h in HALF_LIVES],
                train,
                self.context.log,
            )
            self.params = {**self.params, **best, "grid": lambdas + half_lives[1:]}
        memo = self.params.pop("_memo", {})
        lam = float(self.params["lambda"])
        if lam not in memo:
            memo.clear()
            memo[lam] = super().fit(train).weights
        self.weights = memo[lam]
        return self

    def score(self, histories: Sequence[History], users: Sequence[str | None]) -> Dense:
        half_life = float(self.params.get("half_life") or 0.0)
        x = recency_rows(histories, self.context.catalogue, half_life)
        return Dense(np.asarray(x @ self.weights), np.diff(x.indptr) > 0)
