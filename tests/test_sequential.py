"""The order-aware peers on cases small enough to check by hand: transitions, EASE with recency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from recsys.events import Event, item_sequence, recency_weights
from recsys.strategies.base import Catalogue
from recsys.strategies.ease import Ease
from recsys.strategies.ease_recency import EaseRecency
from recsys.strategies.transitions import Transitions, transition_matrix
from tests.test_strategies import _context

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def seq(*items: int) -> list[Event]:
    """One person's views of ``items``, a minute apart, in that order."""
    return [Event(item, "view", None, T0 + timedelta(minutes=n)) for n, item in enumerate(items)]


LOGS = {"a": seq(1, 2, 3), "b": seq(1, 2), "c": seq(2, 4)}


def test_a_sequence_is_the_order_of_first_events_and_recency_halves_by_half_life():
    history = seq(3, 1, 3, 2)
    assert item_sequence(history) == [3, 1, 2]
    assert recency_weights(3, 1.0).tolist() == [0.25, 0.5, 1.0]
    assert recency_weights(3, 0.0).tolist() == [1.0, 1.0, 1.0]


def test_transitions_by_hand():
    catalogue = _context(4).catalogue
    # window 1: 1 was followed by 2 twice; 2 by 3 once and by 4 once; 3 and 4 by nothing
    one = transition_matrix(list(LOGS.values()), catalogue, 1, 0.5).toarray()
    assert one == pytest.approx(np.array([[0, 1, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0, 0], [0, 0, 0, 0]]))
    # window 2, decay 0.5: 1 is followed by 2 (1 + 1) and, two steps on, by 3 (0.5): 0.8, 0.2
    two = transition_matrix(list(LOGS.values()), catalogue, 2, 0.5).toarray()
    assert two[0] == pytest.approx([0, 0.8, 0.2, 0])
    model = Transitions(_context(4), {"window": 1, "decay": 0.5, "half_life": 1.0}).fit(LOGS)
    scores = model.score([seq(1, 2), seq(4), []], ["x", "y", None])
    # the latest item (2) weighs 1, the one before (1) 0.5: 0.5 * row 1 + row 2
    assert scores.scores[0] == pytest.approx([0, 0.5, 0.5, 0.5])
    assert scores.scores[1] == pytest.approx([0, 0, 0, 0])  # nothing ever followed 4
    assert scores.valid.tolist() == [True, True, False]


def test_transitions_saved_and_read_onto_a_grown_catalogue(tmp_path):
    model = Transitions(_context(4), {"window": 1, "decay": 0.5, "half_life": 0.0}).fit(LOGS)
    model.write(tmp_path)
    ids = np.array([1, 2, 3, 4, 5], dtype=np.int64)  # item 5 arrived after training
    grown = _context(5)
    grown.catalogue = Catalogue(ids, np.array([None] * 5, dtype=object), np.linspace(0, 1, 5))
    loaded = Transitions(grown, dict(model.params))
    loaded.read(tmp_path)
    assert loaded.matrix.shape == (5, 5)
    assert loaded.matrix.toarray()[:4, :4] == pytest.approx(model.matrix.toarray())
    assert loaded.matrix.toarray()[4].sum() == 0 and loaded.matrix.toarray()[:, 4].sum() == 0


def test_transitions_tunes_its_window_on_validation_events():
    rng = np.random.default_rng(0)
    logs = {f"u{u}": seq(*(int(s) + k for k in range(6))) for u, s in enumerate(rng.integers(1, 20, 40))}
    model = Transitions(_context(30)).fit(logs)  # everyone walks up by one: window 1 is exact
    assert {row["window"] for row in model.params["grid"]} == {1, 3, 10, 30}
    assert model.params["window"] == 1
    assert max(row["val_recall@10"] for row in model.params["grid"]) >= 0.95


def test_ease_with_recency_weighs_the_history_row():
    train = {"a": seq(1, 2), "b": seq(1), "c": seq(2, 3)}
    plain = Ease(_context(3), {"lambda": 1.0}).fit(train)
    recent = EaseRecency(_context(3), {"lambda": 1.0, "half_life": 1.0}).fit(train)
    assert recent.weights == pytest.approx(plain.weights)
    history = seq(1, 2)  # item 1 one step older than item 2: weight 0.5
    expected = np.array([0.5, 1.0, 0.0]) @ plain.weights
    assert recent.score([history], ["a"]).scores[0] == pytest.approx(expected, abs=1e-6)
    flat = EaseRecency(_context(3), {"lambda": 1.0, "half_life": 0.0}).fit(train)
    assert flat.score([history], ["a"]).scores == pytest.approx(plain.score([history], ["a"]).scores)


def drift(seed: int, users: int = 200) -> dict[str, list[Event]]:
    """Everyone moves on: eight items of one topic (of four, 25 items each), then four of another."""
    rng = np.random.default_rng(seed)
    out = {}
    for u in range(users):
        old, new = rng.choice(4, 2, replace=False)
        items = np.concatenate(
            [rng.choice(25, 8, replace=False) + 25 * old, rng.choice(25, 4, replace=False) + 25 * new]
        )
        out[f"u{u}"] = seq(*(int(i) + 1 for i in items))
    return out


@pytest.mark.parametrize("seed", range(2))
def test_ease_with_recency_reports_both_grids_and_follows_a_drift(seed):
    model = EaseRecency(_context(100)).fit(drift(seed))
    grid = model.params["grid"]
    assert len(grid) == 5 + 3  # five lambdas with no recency, then three more half-lives
    assert {row["half_life"] for row in grid} == {0.0, 2.0, 5.0, 20.0}
    assert "_memo" not in model.params
    none = max(row["val_recall@10"] for row in grid if row["half_life"] == 0)
    chosen = next(row for row in grid if row["half_life"] == model.params["half_life"])
    assert model.params["half_life"] > 0 and chosen["val_recall@10"] > 2 * none


def test_sasrec_windows_by_hand():
    from recsys.sasrec import latest, windows

    inputs, targets = windows([np.array([1, 2, 3, 4, 5, 6]), np.array([7]), np.array([8, 9])], 3)
    # 6 items, windows of 3 steps from the end: [3,4,5]->[4,5,6], then [1,2]->[2,3] padded
    assert inputs.tolist() == [[3, 4, 5], [0, 1, 2], [0, 0, 8]]
    assert targets.tolist() == [[4, 5, 6], [0, 2, 3], [0, 0, 9]]
    assert latest([np.array([1, 2, 3, 4]), np.array([], np.int32)], 3).tolist() == [[2, 3, 4], [0, 0, 0]]


def test_sasrec_learns_what_comes_next_and_is_tuned_on_validation_events(tmp_path):
    from recsys.strategies.sasrec import Sasrec

    rng = np.random.default_rng(0)
    # everyone walks up a ring of 60 items from a random start: the next item is always the one after
    logs = {
        f"u{u}": seq(*((int(s) + k) % 60 + 1 for k in range(12)))
        for u, s in enumerate(rng.integers(0, 60, 150))
    }
    params = {"dim": 16, "epochs": 15, "patience": 3, "blocks": 1, "dropout": 0.2, "batch_size": 32}
    model = Sasrec(_context(60), {**params, "learning_rate": 0.01}).fit(logs)
    assert [row["blocks"] for row in model.params["grid"]] == [1]  # given: not searched
    assert model.params["grid"][0]["val_recall@10"] >= 0.9
    scores = model.score([seq(3, 4, 5), seq(18, 19, 20), []], ["x", "y", None])
    assert scores.valid.tolist() == [True, True, False]
    unseen = scores.scores.copy()
    unseen[0, [2, 3, 4]] = unseen[1, [17, 18, 19]] = -np.inf  # a list never holds what was seen
    top3 = np.argsort(-unseen, axis=1)[:2, :3]
    assert 5 in top3[0] and 20 in top3[1]  # items 6 and 21, of 57 unseen
    model.write(tmp_path)  # saved, then read onto a catalogue with a new item 61: it gets no score
    loaded = Sasrec(_context(61), dict(model.params))
    loaded.read(tmp_path)
    again = loaded.score([seq(3, 4, 5)], ["x"]).scores[0]
    assert again[:60] == pytest.approx(scores.scores[0], abs=1e-4) and again[60] == -np.inf
