"""Splits of the logs into training events and held-out items, and the one rule for leaks.

A ``Split`` records the parameters that made it, so anything trained apart (a two-tower version,
vectors fine-tuned on the logs) can be checked against it with ``leak``: was it trained on this
split's test events? Trainers take their own held-out events with the same functions, which is
what makes the check sound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

from recsys.events import Event, FrozenEvents, interactions

#: The tolerance shares are compared with (they travel through JSON).
_SAME = 1e-9


@dataclass
class Split:
    """Per user: training events (what a recommender may see) and held-out item ids.

    Attributes:
        train: user -> events, oldest first (frozen: derived matrices are built once).
        test: user -> held-out item ids (users without any are not evaluated).
        kind: "temporal", "global-time", "random" or "cold-items".
        candidates: The only items a list may hold (the cold-item split's new items), else None.
        params: What made the split (``leak`` reads them), as the evaluation reports them.
    """

    train: Mapping[str, list[Event]]
    test: dict[str, set[int]]
    kind: str = "temporal"
    candidates: np.ndarray | None = None
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.train, FrozenEvents):
            self.train = FrozenEvents(self.train)

    @property
    def users(self) -> list[str]:
        return sorted(self.test)


#: How the temporal split counts: by interactions (all of a user's events on one item go to one
#: side), so a view and the like that follows it are never split apart. Versions trained apart
#: record it: one trained under the older rule (by events) is refused.
CUT = "interactions"


def temporal_split(
    history: Mapping[str, list[Event]],
    *,
    fraction: float = 0.2,
    last_n: int | None = None,
    min_events: int = 3,
) -> Split:
    """Hold out each user's latest interactions (the last ``last_n``, else the last ``fraction``).

    An interaction is every event of the user on one item, placed at its first: a like stays with
    its view. Users with fewer than ``min_events`` interactions stay in training only (they still
    count for popularity). Held-out items are never in the user's training events.
    """
    train, test = {}, {}
    for user, events in history.items():
        groups = interactions(events)
        if len(groups) < min_events:
            train[user] = sorted(events, key=lambda e: (e[3], e[0]))
            continue
        n_test = last_n if last_n else max(1, int(round(len(groups) * fraction)))
        n_test = min(n_test, len(groups) - 1)
        train[user] = sorted((e for g in groups[:-n_test] for e in g), key=lambda e: (e[3], e[0]))
        test[user] = {g[0][0] for g in groups[-n_test:]}
    params = {"holdout": fraction, "last_n": last_n, "min_events": min_events}
    return Split(train, test, "temporal", params=params)


def global_time_split(history: Mapping[str, list[Event]], *, fraction: float = 0.2) -> Split:
    """Everything from one moment on is the future: the latest ``fraction`` of all events is test.

    The cut-off is the time of the first test event; events at that very time are test too, so a
    view and a like recorded together stay together. Users seen before the cut-off are evaluated on
    the items they first met after it; users first seen after it are not (nothing to go on).
    """
    times = sorted(e[3] for events in history.values() for e in events)
    if not times:
        return Split({}, {}, "global-time", params={"holdout": fraction, "cutoff": None})
    cutoff = times[min(len(times) - 1, int(len(times) * (1 - fraction)))]
    train, test = {}, {}
    for user, events in history.items():
        before = sorted((e for e in events if e[3] < cutoff), key=lambda e: (e[3], e[0]))
        if not before:
            continue
        train[user] = before
        items = {e[0] for e in events if e[3] >= cutoff} - {e[0] for e in before}
        if items:
            test[user] = items
    return Split(train, test, "global-time", params={"holdout": fraction, "cutoff": cutoff.isoformat()})


def for_training(
    history: Mapping[str, list[Event]], holdout: float, split: str = "temporal", min_events: int = 3
) -> tuple[Mapping[str, list[Event]], dict]:
    """The events a model trained apart may learn from, to be evaluated later on ``split``
    ("temporal" or "global-time") with this ``holdout``, and the parameters that record it
    (``TrainedOn.from_params`` reads them back)."""
    params = {"holdout": holdout, "split": split, "min_events": min_events, "cut": CUT}
    if holdout <= 0:
        return history, params
    if split == "global-time":
        made = global_time_split(history, fraction=holdout)
        return made.train, {**params, "before": made.params["cutoff"]}
    if split != "temporal":
        raise ValueError(f"a holdout is for the temporal or global-time split, not {split!r}")
    return temporal_split(history, fraction=holdout, min_events=min_events).train, params


def random_split(
    history: Mapping[str, list[Event]], *, fraction: float = 0.2, seed: int = 0, min_events: int = 3
) -> Split:
    """Hold out a random ``fraction`` of each user's events (deterministic with ``seed``)."""
    rng = np.random.default_rng(seed)
    train, test = {}, {}
    for user in sorted(history):
        events = sorted(history[user], key=lambda e: (e[3], e[0]))
        if len(events) < min_events:
            train[user] = events
            continue
        n_test = min(len(events) - 1, max(1, int(round(len(events) * fraction))))
        held_rows = set(rng.choice(len(events), size=n_test, replace=False).tolist())
        train[user] = [e for i, e in enumerate(events) if i not in held_rows]
        items = {events[i][0] for i in held_rows} - {e[0] for e in train[user]}
        if items:
            test[user] = items
    return Split(train, test, "random", params={"holdout": fraction, "seed": seed, "min_events": min_events})


def new_items(item_ids: Sequence[int], share: float, seed: int) -> np.ndarray:
    """The seeded random ``share`` of the catalogue that plays "new arrivals" (sorted ids)."""
    ids = np.sort(np.asarray(item_ids, dtype=np.int64))
    n = int(round(len(ids) * share))
    picked = np.random.default_rng(seed).choice(len(ids), size=n, replace=False) if n else []
    return np.sort(ids[picked])


def cold_item_split(
    history: Mapping[str, list[Event]], item_ids: Sequence[int], *, share: float = 0.2, seed: int = 0
) -> Split:
    """New items: every event on a seeded random ``share`` of the catalogue leaves training; each
    user's events on them are the test set; users with no training events are left out; lists
    may hold new items only (a "new arrivals" shelf)."""
    new = new_items(item_ids, share, seed)
    is_new = set(new.tolist())
    train, test = {}, {}
    for user, events in history.items():
        kept = [e for e in events if e[0] not in is_new]
        if kept:
            train[user] = kept
            items = {e[0] for e in events if e[0] in is_new}
            if items:
                test[user] = items
    return Split(train, test, "cold-items", new, {"cold_share": share, "seed": seed})


def sample_users(split: Split, n: int, seed: int) -> Split:
    """The split scored on a seeded sample of ``n`` of its test users (training unchanged)."""
    if n >= len(split.test):
        return split
    keep = np.random.default_rng(seed).choice(sorted(split.test), size=n, replace=False)
    return replace(split, test={u: split.test[u] for u in keep}, params={**split.params, "users_sampled": n})


# --- leaks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainedOn:
    """What a model trained apart left out of its training, as its recorded parameters say.

    Attributes:
        holdout: Share of each user's latest events never trained on, taken over all of the
            user's events as ``temporal_split`` takes it (0: none).
        min_events: Users with fewer events were trained on whole (``temporal_split``'s rule).
        cold_share: Share of the catalogue left out entirely (``new_items`` with ``seed``).
        seed: Seed of those items.
        warm_start_from: The version it continued from, if any (that one saw every event).
        holdout_after_cold: The holdout was taken after the new items' events had left, so with a
            cold share it is not a share of all of a user's events.
        split: The split its holdout was taken as: "temporal" or "global-time".
        cut: How its temporal holdout counted (``CUT``; "events" before interactions).
        before: global-time: it saw only events before this time (ISO 8601).
    """

    holdout: float = 0.0
    min_events: int = 3
    cold_share: float = 0.0
    seed: int | None = None
    warm_start_from: int | None = None
    holdout_after_cold: bool = False
    split: str = "temporal"
    cut: str = CUT
    before: str | None = None

    @classmethod
    def from_params(cls, params: Mapping, *, holdout_after_cold: bool = False) -> TrainedOn:
        """From a trainer's recorded parameters (``holdout``, ``min_events``, ``cold_share``, ``seed``,
        ``warm_start_from``, ``split``, ``cut``, ``before``; absent ones mean "none left out", and a
        temporal holdout counted by events)."""
        return cls(
            holdout=float(params.get("holdout") or 0.0),
            min_events=int(params.get("min_events") or 3),
            cold_share=float(params.get("cold_share") or 0.0),
            seed=params.get("seed"),
            warm_start_from=params.get("warm_start_from"),
            holdout_after_cold=holdout_after_cold,
            split=str(params.get("split") or "temporal"),
            cut=str(params.get("cut") or "events"),
            before=params.get("before"),
        )

    def describe(self) -> str:
        held = f"holdout={self.holdout:g} ({self.split}"
        held += f", before {self.before})" if self.split == "global-time" else f", by {self.cut})"
        return f"{held}, cold_share={self.cold_share:g}, seed={self.seed}"


def leak(trained: TrainedOn, split: Split) -> str | None:
    """Why scoring a model with this training on ``split`` would score it on events it trained on
    (None: it would not).

    Temporal: its holdout must cover the split's: the latest ``holdout`` of each user's
    interactions at least, counted over all of them, with no more users trained on whole
    (``min_events``); a ``last_n`` split is never covered. Global time: it saw nothing from the
    split's cut-off on. Cold items: the same new items left out (share and seed). Random: never.
    """
    if trained.warm_start_from is not None:
        return f"it was warm-started from v{trained.warm_start_from}, a model that saw every event"
    p = split.params
    if split.kind == "temporal":
        safe = (
            p.get("last_n") is None
            and trained.split == "temporal"
            and trained.cut == CUT
            and trained.holdout >= p["holdout"] - _SAME
            and trained.min_events <= p["min_events"]
            and not (trained.holdout_after_cold and trained.cold_share)
        )
    elif split.kind == "global-time":
        safe = (
            trained.split == "global-time"
            and trained.before is not None
            and p.get("cutoff") is not None
            and datetime.fromisoformat(trained.before) <= datetime.fromisoformat(p["cutoff"])
        )
    elif split.kind == "cold-items":
        safe = abs(trained.cold_share - p["cold_share"]) < _SAME and trained.seed == p["seed"]
    else:
        safe = False
    if safe:
        return None
    return (
        f"it was trained with {trained.describe()}: this {split.kind} split would score it on "
        "events it trained on"
    )
