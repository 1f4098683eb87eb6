"""Strategies as parts: EASE and ALS against known answers, the cold-item split, auto, plug-ins."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from recsys import evaluate as ev
from recsys import events, splits, store, strategies
from recsys.errors import RecsysError
from recsys.events import History
from recsys.recommend import Recommender
from recsys.simulate import SimulationConfig, simulate
from recsys.strategies.base import Catalogue, Context, Dense, Strategy
from recsys.strategies.ease import Ease, ease_weights
from recsys.workspace import Workspace
from tests.conftest import one_line_error, run_cli, settings_for

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def ev_(item: int, minutes: int = 0, event: str = "view") -> tuple:
    return (item, event, None, T0 + timedelta(minutes=minutes))


def _context(n_items: int, workspace=None) -> Context:
    ids = np.arange(1, n_items + 1, dtype=np.int64)
    catalogue = Catalogue(ids, np.array([None] * n_items, dtype=object), np.linspace(0, 1, n_items))

    class Settings:
        max_weight = 100.0
        ease_memory_gb = 8.0
        half_life_days = None

    class Ws:
        settings = Settings()

    return Context(workspace or Ws(), catalogue, image_space=lambda: None)


def test_ease_matches_a_hand_computed_two_item_case():
    # X = [[1, 1], [1, 0]]: G = X'X = [[2, 1], [1, 1]]; with lambda 1, P = (G + I)^-1 = [[2, -1], [-1, 3]] / 5
    # B_ij = -P_ij / P_jj: B_01 = (1/5) / (3/5) = 1/3, B_10 = (1/5) / (2/5) = 1/2, diagonal 0.
    weights = ease_weights(np.array([[2.0, 1.0], [1.0, 1.0]]), 1.0)
    assert weights == pytest.approx(np.array([[0.0, 1 / 3], [1 / 2, 0.0]]), abs=1e-6)


def test_ease_fit_and_score_on_a_tiny_log():
    train = {"a": [ev_(1), ev_(2)], "b": [ev_(1)], "c": [ev_(2), ev_(3)]}
    model = Ease(_context(3), {"lambda": 1.0}).fit(train)
    x = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=np.float64)
    p = np.linalg.inv(x.T @ x + np.eye(3))
    expected = -p / np.diag(p)
    np.fill_diagonal(expected, 0.0)
    assert model.weights == pytest.approx(expected, abs=1e-5)
    scores = model.score([[ev_(1)], []], ["b", None])
    assert scores.valid.tolist() == [True, False]
    assert scores.scores[0] == pytest.approx(expected[0], abs=1e-5)  # a history of item 1 scores row 1


def test_ease_refuses_a_catalogue_too_large_for_memory_and_says_how_much():
    context = _context(50_000)
    with pytest.raises(RecsysError, match=r"needs about 27\.9 GB.*limit is 8 GB"):
        Ease(context, {"lambda": 10.0}).fit({"u": [ev_(1)]})


def test_als_recovers_a_planted_block_structure():
    rng = np.random.default_rng(0)
    # 60 users, 40 items: users 0-29 use only items 1-20, users 30-59 only items 21-40
    train = {}
    for u in range(60):
        pool = np.arange(1, 21) if u < 30 else np.arange(21, 41)
        train[f"u{u}"] = [ev_(int(i), n) for n, i in enumerate(rng.choice(pool, size=8, replace=False))]
    # two blocks: a rank-2 structure, which 2 factors can hold exactly
    als = strategies.get("als")(_context(40), {"factors": 2, "regularization": 0.01, "alpha": 10.0})
    result = als.fit(train).score([[ev_(3), ev_(7), ev_(11)], [ev_(25), ev_(33)]], [None, None])
    a, b = result.scores
    assert a[:20].min() > a[20:].max() and b[20:].min() > b[:20].max()  # every item of its own block first


def test_no_cold_item_is_in_the_cold_split_training_events():
    history = {f"u{u}": [ev_(i, i) for i in range(1, 101) if (i + u) % 3 == 0] for u in range(30)}
    split = splits.cold_item_split(history, np.arange(1, 101), share=0.2, seed=0)
    new = set(split.candidates.tolist())
    assert len(new) == 20
    assert all(e[0] not in new for events in split.train.values() for e in events)
    assert all(items <= new for items in split.test.values()) and split.test
    assert splits.cold_item_split(
        history, np.arange(1, 101), share=0.2, seed=0
    ).candidates.tolist() == sorted(new)
    assert splits.cold_item_split(
        history, np.arange(1, 101), share=0.2, seed=1
    ).candidates.tolist() != sorted(new)


def test_strategies_fitted_on_one_split_build_its_interaction_matrix_once(monkeypatch):
    from recsys.strategies import base

    history = {
        f"u{u}": [ev_(i, i, "like" if i % 5 == 0 else "view") for i in range(1, 21) if (i * u) % 4 < 2]
        for u in range(1, 30)
    }
    split = splits.temporal_split(history, fraction=0.2)
    with pytest.raises(TypeError):
        split.train["intruder"] = [ev_(1)]  # frozen: what was derived from it stays true
    built = []
    real = base._weights_matrix
    monkeypatch.setattr(base, "_weights_matrix", lambda *a: built.append(1) or real(*a))
    context = _context(20)
    first = Ease(context, {"lambda": 5.0}).fit(split.train)
    second = Ease(context, {"lambda": 5.0}).fit(split.train)  # data[:] = 1 on its copy, not the kept one
    assert len(built) == 1 and np.array_equal(first.weights, second.weights)
    matrix, users = base.interaction_matrix(split.train, context.catalogue, 100.0)
    assert users == sorted(split.train) and matrix.max() == 3  # a like's weight: not the 1s EASE set
    fresh = dict(split.train)  # a plain mapping is read again each time
    base.interaction_matrix(fresh, context.catalogue, 100.0)
    base.interaction_matrix(fresh, context.catalogue, 100.0)
    assert len(built) == 3


@pytest.fixture
def logged(embedded_copy):
    with Workspace(settings_for(embedded_copy)) as ws:
        simulate(ws, SimulationConfig(users=60, events_per_user=20, seed=0), progress=False)
    return embedded_copy


def test_auto_serves_the_measured_best_and_falls_back_to_average(logged):
    with Workspace(settings_for(logged)) as ws:
        rec = Recommender(ws, log=None)
        assert rec.selection.auto_choice()["strategy"] == "average" and rec.strategy("auto").name == "average"
        split = splits.temporal_split(events.load_history(ws), fraction=0.2)
        split.params = {"holdout": 0.2, "min_events": 3}
        report = ev.evaluate(
            Recommender(ws, use_index=False, log=None),
            split,
            ["average", "popular", "random"],
            [10],
            bootstrap=50,
        )
        ev.save(ws, report)
        best = max(report.strategies, key=lambda r: r.mean("recall@10")).name
        fresh = Recommender(ws, log=None)
        assert fresh.selection.auto_choice()["strategy"] == best
        listing = fresh.recommend("sim-0-00001", 5)
        assert listing.strategy == best and listing.requested == "auto" and "auto serves" in listing.notes[-1]
        # an evaluation whose winner cannot be served (ease, never trained here) is passed over
        with ws.session() as s, s.begin():
            s.add(
                store.Evaluation(
                    created_at=store.utcnow(),
                    split="temporal",
                    params={},
                    strategies=[
                        {"strategy": "ease", "version": None, "recall@10": 0.9},
                        {"strategy": "random", "version": None, "recall@10": 0.01},
                    ],
                )
            )
        assert Recommender(ws, log=None).selection.auto_choice()["strategy"] == "random"


def test_a_new_strategy_plugs_in_without_touching_the_recommender(logged, monkeypatch):
    class Reverse(Strategy):
        """Everything in reverse id order: the point is the plumbing, not the taste."""

        name = "reverse"
        explains = False

        def score(self, histories: Sequence[History], users) -> Dense:
            ids = self.context.catalogue.ids
            return Dense(ids[None, :].astype(float), np.ones(len(histories), dtype=bool))

    monkeypatch.setitem(strategies.REGISTRY, "reverse", Reverse)
    with Workspace(settings_for(logged)) as ws:
        rec = Recommender(ws, log=None)
        assert "reverse" in rec.strategies()
        result = rec.recommend("sim-0-00002", 3, strategy="reverse")
        seen = {h.item_id for h in rec.history("sim-0-00002")}
        expected = [i for i in sorted(rec.catalogue().ids.tolist(), reverse=True) if i not in seen][:3]
        assert [r.item_id for r in result.items] == expected
        split = splits.temporal_split(events.load_history(ws), fraction=0.2)
        report = ev.evaluate(
            Recommender(ws, use_index=False, log=None), split, ["reverse"], [10], bootstrap=20
        )
        assert report.strategies[0].name == "reverse"


def test_train_and_serve_ease_and_als_and_the_cold_split_cli(logged, tmp_path):
    for name in ("ease", "als"):
        out = run_cli("train", "--strategy", name, "--json", home=logged, check=True, timeout=900)
        assert '"version": 1' in out.stdout
    result = run_cli(
        "recommend", "--user", "sim-0-00003", "--strategy", "ease", "--json", home=logged, check=True
    )
    assert '"strategy": "ease"' in result.stdout
    cold = run_cli(
        "evaluate",
        "--split",
        "cold-items",
        "--cold-share",
        "0.2",
        "--k",
        "10",
        "--out",
        str(tmp_path / "c"),
        "--quiet",
        home=logged,
        check=True,
        timeout=900,
    )
    assert "cold-items split" in cold.stdout
    import json

    data = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert data["split"] == "cold-items" and data["split_params"] == {"cold_share": 0.2, "seed": 0}
    assert set(data["notes"]) == {
        "popular",
        "ease",
        "ease-recency",
        "als",
        "transitions",
        "sasrec",
    }  # said honestly: nothing to rank new items by
    assert "--holdout" in one_line_error(
        run_cli("train", "--strategy", "ease", "--holdout", "2", home=logged)
    )
    assert "--epochs" in one_line_error(run_cli("train", "--strategy", "als", "--epochs", "3", home=logged))
