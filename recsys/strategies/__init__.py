"""Recommendation strategies as parts: one module each, one contract (``base.Strategy``).

Adding a strategy is its module and one line in ``REGISTRY``; ``Recommender`` does not change.
"""

from __future__ import annotations

from recsys.errors import RecsysError
from recsys.strategies.als import Als
from recsys.strategies.average import Average
from recsys.strategies.base import Catalogue, Context, Dense, Queries, Strategy
from recsys.strategies.ease import Ease
from recsys.strategies.ease_recency import EaseRecency
from recsys.strategies.hybrid import Hybrid
from recsys.strategies.popular import Popular
from recsys.strategies.random import Random
from recsys.strategies.sasrec import Sasrec
from recsys.strategies.transitions import Transitions
from recsys.strategies.two_tower import TwoTower

REGISTRY: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (Average, Popular, Random, Ease, EaseRecency, Als, Transitions, Sasrec, TwoTower, Hybrid)
}

__all__ = ["REGISTRY", "Catalogue", "Context", "Dense", "Queries", "Strategy", "get"]


def get(name: str) -> type[Strategy]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise RecsysError(f"unknown strategy {name!r}; use one of {', '.join(REGISTRY)} or auto") from None
