"""What users did, as the models read it: ``Event`` and histories, their weights, and the loader.

An ``Event`` is one entry of a known user's history, by item id (recording one, by keys, is
``recsys.interactions.NewEvent``). Strategies, splits and trainers all read histories of these,
oldest first; ``FrozenEvents`` and ``FrozenHistories`` mark the ones read again and again, so what
is derived from them (interaction matrices) is built once.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

import numpy as np

#: Default weight of each event type in a profile (an explicit weight on the event wins).
EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "click": 1.5, "like": 3.0, "purchase": 5.0}


class Event(NamedTuple):
    """One event of a user's history.

    Attributes:
        item: The item's id.
        kind: view, click, like or purchase (``EVENT_WEIGHTS``).
        weight: Its own weight, or None for its kind's.
        ts: When it happened (UTC).
    """

    item: int
    kind: str
    weight: float | None
    ts: datetime


History = Sequence[Event]


def event_weight(kind: str, weight: float | None, max_weight: float = 100.0) -> float:
    """What one event counts for: its own weight (clipped to [0, max_weight]), else its kind's."""
    if weight is None:
        return EVENT_WEIGHTS.get(kind, 1.0)
    return min(max(float(weight), 0.0), max_weight) if math.isfinite(weight) else 0.0


def weighted_items(history: History, max_weight: float = 100.0) -> dict[int, float]:
    """Total weight of each item in a history."""
    totals: dict[int, float] = {}
    for item_id, kind, weight, _ in history:
        totals[item_id] = totals.get(item_id, 0.0) + event_weight(kind, weight, max_weight)
    return totals


def strongest_events(history: History) -> dict[int, str]:
    """What the user did with each item of a history, the event of the largest weight winning
    (a like over a view): "because you liked X"."""
    out: dict[int, str] = {}
    for item_id, kind, _, _ in history:
        if EVENT_WEIGHTS.get(kind, 1.0) > EVENT_WEIGHTS.get(out.get(item_id, ""), 0.0):
            out[item_id] = kind
    return out


def history_weights(history: History, half_life_days: float | None = None, max_weight: float = 100.0):
    """Total weight of each item of a history, decayed by age relative to its newest event: with a
    half-life (days), an event that much older than the user's newest counts half."""
    if not history:
        return {}
    newest = max(ts for *_, ts in history)
    totals: dict[int, float] = {}
    for item_id, kind, weight, ts in history:
        w = event_weight(kind, weight, max_weight)
        if half_life_days:
            w *= 0.5 ** ((newest - ts).total_seconds() / 86400.0 / half_life_days)
        totals[item_id] = totals.get(item_id, 0.0) + w
    return totals


def interactions(history: History) -> list[list[Event]]:
    """A history's events grouped by item, in the order of each item's first event (ties in time
    by id): the unit the temporal split cuts by (a like stays with its view)."""
    groups: dict[int, list[Event]] = {}
    for event in sorted(history, key=lambda e: (e[3], e[0])):
        groups.setdefault(event[0], []).append(event)
    return list(groups.values())


def item_sequence(history: History) -> list[int]:
    """A history's distinct items in the order of their first event, oldest first: the order
    order-aware models read."""
    return list(dict.fromkeys(e[0] for e in sorted(history, key=lambda e: (e[3], e[0]))))


def recency_weights(n: int, half_life: float) -> np.ndarray:
    """Weights of a sequence's ``n`` items, oldest first: the latest 1, an item ``half_life``
    items older 0.5 (0: all alike)."""
    ages = np.arange(n)[::-1]
    return 0.5 ** (ages / half_life) if half_life > 0 else np.ones(n)


class FrozenEvents(dict):
    """Training events (user -> events), read only, so what is derived from them is built once:
    an evaluation fits every strategy, and a grid search every grid point, on the same events (at
    100,000 users the interaction matrix took seconds each time)."""

    def __init__(self, events: Mapping[str, list[Event]]) -> None:
        super().__init__(events)
        self.derived: dict = {}

    def _read_only(self, *args, **kwargs):
        raise TypeError("frozen training events cannot change")

    __setitem__ = __delitem__ = __ior__ = update = pop = popitem = clear = setdefault = _read_only


class FrozenHistories(tuple):
    """A batch of histories scored again and again (one validation batch, every grid point); what
    is derived from it is built once, as for ``FrozenEvents``."""

    derived: dict

    def __new__(cls, histories: Sequence[History]) -> FrozenHistories:
        self = super().__new__(cls, histories)
        self.derived = {}
        return self


def load_history(workspace) -> dict[str, list[Event]]:
    """Every user's events, oldest first (ties in time by the order they were stored)."""
    from sqlalchemy import select

    from recsys import store

    with workspace.session() as session:
        rows = session.execute(
            select(
                store.User.key,
                store.Interaction.item_id,
                store.Interaction.event,
                store.Interaction.weight,
                store.Interaction.ts,
            )
            .join(store.User, store.User.id == store.Interaction.user_id)
            .order_by(store.Interaction.ts, store.Interaction.id)
        ).all()
    history: dict[str, list[Event]] = defaultdict(list)
    for user, item, kind, weight, ts in rows:
        history[user].append(Event(item, kind, weight, store.as_utc(ts)))
    return dict(history)
