"""Splits record what made them, and the one leak rule says whether a model trained apart saw a
split's test events: checked by hand, against the events themselves, and through a workspace."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from recsys import evaluate, store
from recsys.events import Event
from recsys.splits import (
    TrainedOn,
    cold_item_split,
    for_training,
    global_time_split,
    leak,
    new_items,
    random_split,
    temporal_split,
)
from recsys.workspace import Workspace
from tests.conftest import settings_for

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def logs(users: int, seed: int) -> dict[str, list[Event]]:
    """Random histories of 1 to 30 events over 60 items, some at the same instant."""
    rng = np.random.default_rng(seed)
    out = {}
    for u in range(users):
        n = int(rng.integers(1, 31))
        minutes = np.sort(rng.integers(0, 40, n))
        out[f"u{u}"] = [
            Event(int(rng.integers(1, 61)), "view", None, T0 + timedelta(minutes=int(m))) for m in minutes
        ]
    return out


def test_every_split_records_the_parameters_that_made_it():
    history = logs(20, 0)
    assert temporal_split(history, fraction=0.3, min_events=4).params == {
        "holdout": 0.3,
        "last_n": None,
        "min_events": 4,
    }
    assert temporal_split(history, last_n=2).params["last_n"] == 2
    assert random_split(history, fraction=0.25, seed=3).params == {
        "holdout": 0.25,
        "seed": 3,
        "min_events": 3,
    }
    cold = cold_item_split(history, np.arange(1, 61), share=0.2, seed=5)
    assert cold.params == {"cold_share": 0.2, "seed": 5}
    assert cold.candidates.tolist() == new_items(np.arange(1, 61), 0.2, 5).tolist()


def test_the_rule_by_hand():
    temporal = temporal_split(logs(10, 1), fraction=0.2)
    cold = cold_item_split(logs(10, 1), np.arange(1, 61), share=0.2, seed=0)
    same = TrainedOn(holdout=0.2, min_events=3)
    assert leak(same, temporal) is None
    assert leak(replace(same, holdout=0.3), temporal) is None  # held out more: still never saw the test
    assert "holdout=0.1" in leak(replace(same, holdout=0.1), temporal)
    assert leak(replace(same, min_events=5), temporal) is not None  # users of 3-4 events trained whole
    assert leak(replace(same, min_events=2), temporal) is None
    assert leak(same, temporal_split(logs(10, 1), last_n=1)) is not None
    assert "warm-started from v1" in leak(replace(same, warm_start_from=1), temporal)
    # a holdout taken after the new items left is not a share of all of a user's events
    after_cold = TrainedOn(holdout=0.2, cold_share=0.2, seed=0, holdout_after_cold=True)
    assert leak(after_cold, temporal) is not None
    assert leak(replace(after_cold, holdout_after_cold=False), temporal) is None
    assert leak(after_cold, cold) is None
    assert leak(replace(after_cold, seed=1), cold) is not None
    assert leak(replace(after_cold, cold_share=0.3), cold) is not None
    assert leak(same, random_split(logs(10, 1))) is not None
    # a temporal holdout counted by events (before interactions) may split a view from its like
    assert "by events" in leak(replace(same, cut="events"), temporal)
    assert "global-time" in leak(replace(same, split="global-time"), temporal)


@pytest.mark.parametrize("seed", range(4))
def test_when_the_rule_allows_a_model_it_never_trained_on_a_test_event(seed):
    """The rule against the events: a model trained on ``temporal_split(h_t, m_t).train`` and allowed
    on ``temporal_split(h_e, m_e)`` holds none of that split's held-out items in training."""
    rng = np.random.default_rng(seed)
    history = logs(60, seed)
    allowed = refused = 0
    for _ in range(40):
        h_t, h_e = (float(x) for x in rng.choice([0.1, 0.2, 0.3, 0.5], 2))
        m_t, m_e = (int(x) for x in rng.integers(2, 6, 2))
        trained = temporal_split(history, fraction=h_t, min_events=m_t).train
        split = temporal_split(history, fraction=h_e, min_events=m_e)
        overlap = any(
            items & {e[0] for e in trained.get(user, [])} - {e[0] for e in split.train[user]}
            for user, items in split.test.items()
        )
        if leak(TrainedOn(holdout=h_t, min_events=m_t), split) is None:
            allowed += 1
            assert not overlap, (h_t, m_t, h_e, m_e)
        else:
            refused += 1
    assert allowed and refused  # both sides of the rule were exercised


def test_a_library_split_is_checked_against_a_saved_two_tower(tmp_path):
    """Bug at ff4e1ae: ``temporal_split`` called from the library returned ``params={}`` (the CLI
    filled them in afterwards), so the two-tower's leak check raised ``KeyError: 'holdout'``."""
    home = tmp_path / "home"
    with Workspace(settings_for(home)) as ws:
        with ws.session() as s, s.begin():
            v1 = {"holdout": 0.2, "min_events": 3, "cut": "interactions"}
            for version, params in ((1, v1), (2, {"holdout": 0.0})):
                path = f"models/two-tower/v{version}"
                s.add(
                    store.ModelVersion(
                        kind="two-tower", version=version, base_model="m", path=path, params=params
                    )
                )
        split = temporal_split(logs(10, 2), fraction=0.2)
        problem = evaluate.trained_apart_leak(ws, "two-tower", split)  # the latest: v2, trained on all
        assert problem.startswith("two-tower v2: it was trained with holdout=0") and "--holdout H" in problem
        with ws.session() as s, s.begin():
            s.query(store.ModelVersion).filter(store.ModelVersion.version == 2).delete()
        assert evaluate.trained_apart_leak(ws, "two-tower", split) is None
        assert (
            evaluate.trained_apart_leak(ws, "two-tower", temporal_split(logs(10, 2), fraction=0.3))
            is not None
        )


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def test_the_temporal_split_keeps_a_like_with_its_view():
    """Five interactions, seven events: a 0.4 holdout is the latest two items whole, though by
    events it would have cut between item 4's view and its like."""
    events = [
        Event(1, "view", None, at(0)),
        Event(2, "view", None, at(1)),
        Event(2, "like", None, at(1)),
        Event(3, "view", None, at(2)),
        Event(4, "view", None, at(3)),
        Event(4, "like", None, at(3)),
        Event(5, "view", None, at(4)),
        Event(1, "view", None, at(5)),  # item 1 again: its interaction began at minute 0
    ]
    split = temporal_split({"u": events}, fraction=0.4)
    assert split.test == {"u": {4, 5}}
    assert sorted({e[0] for e in split.train["u"]}) == [1, 2, 3]
    assert [e.kind for e in split.train["u"] if e.item == 2] == ["view", "like"]
    assert len(split.train["u"]) == 5  # the second view of item 1 stays with the first
    assert temporal_split({"u": events[:3]}, fraction=0.5).test == {}  # two interactions: under 3


def test_the_global_time_split_cuts_every_user_at_one_moment():
    history = {
        "early": [Event(1, "view", None, at(0)), Event(2, "view", None, at(1))],
        "both": [Event(1, "view", None, at(2)), Event(3, "view", None, at(8)), Event(3, "like", None, at(8))],
        "late": [Event(4, "view", None, at(9))],
        "again": [Event(2, "view", None, at(3)), Event(2, "view", None, at(9))],
    }
    split = global_time_split(history, fraction=0.4)  # 8 events: the latest 3 (from minute 8) are test
    assert split.params == {"holdout": 0.4, "cutoff": at(8).isoformat()}
    assert split.test == {"both": {3}}  # "again" saw item 2 before; "late" was never seen before
    assert set(split.train) == {"early", "both", "again"}
    assert all(e.ts < at(8) for events in split.train.values() for e in events)
    trained, params = for_training(history, 0.4, "global-time")
    assert params["before"] == at(8).isoformat() and dict(trained) == dict(split.train)
    assert leak(TrainedOn.from_params(params), split) is None
    assert leak(TrainedOn.from_params(for_training(history, 0.2, "global-time")[1]), split) is not None
    assert leak(TrainedOn.from_params(for_training(history, 0.6, "global-time")[1]), split) is None
    assert leak(TrainedOn.from_params(for_training(history, 0.4)[1]), split) is not None  # temporal


@pytest.mark.parametrize("seed", range(3))
def test_a_model_allowed_on_a_global_time_split_never_saw_its_future(seed):
    rng = np.random.default_rng(seed)
    history = logs(60, seed)
    allowed = refused = 0
    for _ in range(30):
        h_t, h_e = (float(x) for x in rng.choice([0.1, 0.2, 0.3, 0.5], 2))
        trained, params = for_training(history, h_t, "global-time")
        split = global_time_split(history, fraction=h_e)
        cutoff = datetime.fromisoformat(split.params["cutoff"])
        saw_future = any(e.ts >= cutoff for events in trained.values() for e in events)
        if leak(TrainedOn.from_params(params), split) is None:
            allowed += 1
            assert not saw_future, (h_t, h_e)
        else:
            refused += 1
            assert saw_future or h_t < h_e
    assert allowed and refused
