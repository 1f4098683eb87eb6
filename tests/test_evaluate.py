"""Offline evaluation: metrics by hand and by brute force, splits, simulator, and the CLI."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from recsys import evaluate as ev
from recsys import metrics, splits, store
from recsys.recommend import Recommender
from recsys.simulate import SimulationConfig, generate, simulate
from recsys.workspace import Workspace
from tests.conftest import one_line_error, run_cli, settings_for

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def ev_(item, minutes, event="view"):
    return (item, event, None, T0 + timedelta(minutes=minutes))


# --- metrics against hand-computed values ------------------------------------------------


def test_metrics_hand_computed():
    m = metrics.ranking_metrics([5, 3, 9, 1, 7], {3, 7, 8}, 5)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(2 / 5)
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg"] == pytest.approx(dcg / idcg)  # 1.01778 / 2.13093
    assert m["ndcg"] == pytest.approx(0.477624, abs=1e-6)
    assert m["map"] == pytest.approx((1 / 2 + 2 / 5) / 3)
    assert m["hit_rate"] == 1.0
    assert metrics.reciprocal_rank([5, 3, 9, 1, 7], {3, 7, 8}) == 0.5


def test_user_with_one_held_out_item():
    m = metrics.ranking_metrics([4, 2, 6], {2}, 10)
    assert m == pytest.approx(
        {"recall": 1.0, "precision": 0.1, "ndcg": 1 / math.log2(3), "map": 0.5, "hit_rate": 1.0}
    )
    miss = metrics.ranking_metrics([4, 2, 6], {2}, 1)
    assert miss == {"recall": 0.0, "precision": 0.0, "ndcg": 0.0, "map": 0.0, "hit_rate": 0.0}


def test_empty_recommendation_list_scores_zero():
    assert metrics.ranking_metrics([], {1, 2}, 10) == {
        "recall": 0.0,
        "precision": 0.0,
        "ndcg": 0.0,
        "map": 0.0,
        "hit_rate": 0.0,
    }
    assert metrics.reciprocal_rank([], {1}) == 0.0
    assert metrics.intra_list_diversity([], {}) == 0.0
    assert metrics.novelty([], {}, 10) == 0.0
    with pytest.raises(ValueError):
        metrics.ranking_metrics([1], set(), 10)


def test_ties_in_time_and_in_popularity_are_broken_deterministically(embedded_copy):
    # Same timestamp: the split orders by item id, so the held-out item is always the larger id.
    split = splits.temporal_split({"u": [ev_(9, 0), ev_(4, 0), ev_(7, 0)]}, last_n=1)
    assert split.test == {"u": {9}} and [e[0] for e in split.train["u"]] == [4, 7]
    # Equal popularity: the newest item first, every time.
    with Workspace(settings_for(embedded_copy)) as ws:
        rec = Recommender(ws, use_index=False, log=None)
        popular = rec.fitted("popular", {})  # no events at all: every count is 0
        a, _ = rec.rank(popular, [[]], [None], 5)[0]
        b, _ = rec.rank(popular, [[]], [None], 5)[0]
    assert [i for i, _ in a] == [i for i, _ in b] == [200, 199, 198, 197, 196]


def test_diversity_and_novelty_by_hand():
    vectors = {1: np.array([1.0, 0.0]), 2: np.array([0.0, 1.0]), 3: np.array([1.0, 0.0])}
    # pairs: (1,2) distance 1, (1,3) distance 0, (2,3) distance 1 -> mean 2/3
    assert metrics.intra_list_diversity([1, 2, 3], vectors) == pytest.approx(2 / 3)
    # item 1 seen by 3 of 7 users: -log2(4/8) = 1; unseen item 2: -log2(1/8) = 3
    assert metrics.novelty([1, 2], {1: 3}, 7) == pytest.approx(2.0)


# --- metrics against an independent brute-force implementation -----------------------------


def _brute(ranked, relevant, k):
    """Textbook definitions, computed position by position over the full cut-off."""
    gains = np.zeros(k)
    for pos in range(min(k, len(ranked))):
        gains[pos] = ranked[pos] in relevant
    positions = np.arange(1, k + 1)
    dcg = np.sum(gains / np.log2(positions + 1))
    ideal_gains = np.zeros(k)
    ideal_gains[: min(k, len(relevant))] = 1
    idcg = np.sum(ideal_gains / np.log2(positions + 1))
    precision_at = np.cumsum(gains) / positions
    return {
        "recall": gains.sum() / len(relevant),
        "precision": gains.sum() / k,
        "ndcg": dcg / idcg,
        "map": np.sum(precision_at * gains) / min(k, len(relevant)),
        "hit_rate": float(gains.sum() > 0),
    }


def test_metrics_equal_brute_force_on_random_data():
    rng = np.random.default_rng(1)
    for _ in range(500):
        n_items = int(rng.integers(5, 60))
        ranked = rng.permutation(n_items)[: int(rng.integers(0, n_items))].tolist()
        relevant = set(rng.choice(n_items, size=int(rng.integers(1, 10)), replace=True).tolist())
        k = int(rng.integers(1, 30))
        assert metrics.ranking_metrics(ranked, relevant, k) == pytest.approx(_brute(ranked, relevant, k))


def test_batched_list_metrics_equal_the_per_list_definitions():
    """ListMetrics (what evaluate uses) against ranking_metrics, reciprocal_rank,
    intra_list_diversity and novelty, list by list: short and empty lists, items without a vector,
    items no training user had, several cut-offs."""
    rng = np.random.default_rng(2)
    n_items, ks = 80, (1, 5, 10, 30)
    ids = np.arange(100, 100 + n_items)
    matrix = rng.normal(size=(n_items, 6)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    has_vector = ids[rng.random(n_items) < 0.8]  # the rest have no vector in the space
    rows = np.searchsorted(ids, has_vector)
    item_users = {int(i): int(rng.integers(1, 9)) for i in ids if rng.random() < 0.7}
    scorer = metrics.ListMetrics(ks, has_vector, matrix[rows], item_users, 40)
    vectors = {int(i): matrix[r] for i, r in zip(has_vector, rows, strict=True)}
    lists = [rng.permutation(ids)[: int(rng.integers(0, 35))].tolist() for _ in range(300)]
    relevant = [set(rng.choice(ids, size=int(rng.integers(1, 12))).tolist()) for _ in lists]
    got = scorer.score(lists, relevant)
    for n, (ranked, wanted) in enumerate(zip(lists, relevant, strict=True)):
        for k in ks:
            for name, value in metrics.ranking_metrics(ranked, wanted, k).items():
                assert got[f"{name}@{k}"][n] == pytest.approx(value), (name, k, n)
            assert got[f"diversity@{k}"][n] == pytest.approx(
                metrics.intra_list_diversity(ranked[:k], vectors), abs=1e-5
            )
            assert got[f"novelty@{k}"][n] == pytest.approx(metrics.novelty(ranked[:k], item_users, 40))
        assert got["mrr"][n] == pytest.approx(metrics.reciprocal_rank(ranked, wanted))
    with pytest.raises(ValueError):
        scorer.score([[100]], [set()])


def test_bootstrap_interval_and_paired_comparison():
    rng = np.random.default_rng(0)
    values = rng.random(400)
    lo, hi = metrics.bootstrap_ci(values, samples=2000)
    assert lo < values.mean() < hi and hi - lo < 0.08
    better = values + 0.05 + rng.normal(0, 0.01, 400)
    result = metrics.paired_comparison(better, values)
    assert result["mean_difference"] == pytest.approx(0.05, abs=0.005)
    assert result["ci95"][0] > 0 and result["p_value"] < 0.01
    same = metrics.paired_comparison(values, values[::-1])
    assert same["p_value"] > 0.05


# --- splits --------------------------------------------------------------------------------


def test_temporal_split_holds_out_latest_and_keeps_short_users_in_training():
    history = {
        "long": [ev_(i, m) for i, m in [(1, 5), (2, 1), (3, 9), (4, 3), (5, 7)]],
        "short": [ev_(1, 0), ev_(2, 1)],
        "rewatch": [ev_(1, 0), ev_(2, 1), ev_(1, 2)],
    }
    split = splits.temporal_split(history, fraction=0.4)
    assert split.test["long"] == {5, 3}  # the two latest by time, not by insertion
    assert [e[0] for e in split.train["long"]] == [2, 4, 1]
    assert "short" not in split.test and split.train["short"] == history["short"]
    assert "rewatch" not in split.test  # its held-out item was already seen in training
    assert splits.temporal_split(history, last_n=1).test["long"] == {3}


def test_random_split_is_deterministic_with_seed():
    history = {f"u{u}": [ev_(i, i) for i in range(20)] for u in range(10)}
    a = splits.random_split(history, fraction=0.25, seed=3)
    b = splits.random_split(history, fraction=0.25, seed=3)
    c = splits.random_split(history, fraction=0.25, seed=4)
    assert a.test == b.test and a.test != c.test
    assert all(len(t) == 5 for t in a.test.values())


# --- simulator -----------------------------------------------------------------------------


def test_simulator_is_deterministic_skewed_and_timed():
    items = [(f"{lab}/{i}", lab) for lab in ("a", "b", "c") for i in range(50)]
    cfg = SimulationConfig(users=60, events_per_user=20, seed=5)
    events = generate(items, cfg)
    assert events == generate(items, cfg)
    assert len(events) == 60 * 20
    per_user: dict[str, list] = {}
    for e in events:
        per_user.setdefault(e.user, []).append(e)
    assert len(per_user) == 60
    for evs in per_user.values():
        assert len({e.item for e in evs}) == len(evs)  # no repeats
        assert all(x.ts < y.ts for x, y in zip(evs, evs[1:], strict=False))
    counts = sorted(np.unique([e.item for e in events], return_counts=True)[1], reverse=True)
    assert counts[0] > 4 * np.median(counts)  # Zipf skew
    labels_per_user = [len({e.item.split("/")[0] for e in evs}) for evs in per_user.values()]
    assert np.mean(labels_per_user) < 3  # Dirichlet tastes are focused


def test_simulate_writes_through_the_recording_path_once(embedded_copy):
    with Workspace(settings_for(embedded_copy)) as ws:
        first = simulate(ws, SimulationConfig(users=20, events_per_user=10, seed=1), progress=False)
        again = simulate(ws, SimulationConfig(users=20, events_per_user=10, seed=1), progress=False)
        with ws.session() as s:
            n = s.scalar(select(func.count()).select_from(store.Interaction))
    assert first["stored"] == 200 and first["visual_tastes"] is True
    assert again["stored"] == 0 and again["duplicates"] == 200 and n == 200


# --- end to end ----------------------------------------------------------------------------


def test_evaluate_cli_table_files_and_ordering(embedded_copy, tmp_path):
    run_cli(
        "simulate",
        "--users",
        "120",
        "--events-per-user",
        "25",
        "--seed",
        "2",
        "--quiet",
        home=embedded_copy,
        check=True,
    )
    out = tmp_path / "eval"
    proc = run_cli("evaluate", "--quiet", "--out", str(out), "--embeddings", home=embedded_copy, check=True)
    assert "recall [95% CI]" in proc.stdout and "paired (recall@10)" in proc.stdout
    assert "1-NN same-label accuracy" in proc.stdout
    data = json.loads((out / "metrics.json").read_text())
    rows = {(r["strategy"], r["k"]): r for r in data["metrics"]}
    assert {s for s, _ in rows} == {
        "average",
        "popular",
        "random",
        "ease",
        "ease-recency",
        "als",
        "transitions",
        "sasrec",
        "hybrid",
    } and {k for _, k in rows} == {
        10,
        20,
        50,
        100,
    }
    assert rows[("average", 10)]["recall"] > rows[("random", 10)]["recall"]
    assert rows[("popular", 10)]["recall"] > rows[("random", 10)]["recall"]
    assert data["split"] == "temporal" and data["split_params"]["holdout"] == 0.2
    assert data["strategy_params"]["ease"]["lambda"] in [
        row["lambda"] for row in data["strategy_params"]["ease"]["grid"]
    ]
    for r in data["metrics"]:
        assert r["recall_ci_low"] <= r["recall"] <= r["recall_ci_high"]
    assert (out / "metrics.csv").read_text().startswith("strategy,k,recall")
    with Image.open(out / "recall_at_k.png") as img:
        assert img.size[0] > 400
    as_json = json.loads(
        run_cli(
            "evaluate",
            "--json",
            "--k",
            "10",
            "--strategy",
            "random",
            "--split",
            "random",
            home=embedded_copy,
            check=True,
        ).stdout
    )
    assert as_json["split"] == "random" and len(as_json["metrics"]) == 1


def test_held_out_events_are_hidden_from_the_profile(embedded_copy):
    with Workspace(settings_for(embedded_copy)) as ws:
        rec = Recommender(ws, use_index=False, log=None)
        ids = rec.space().ids
        tulip_ids = [int(i) for i, lab in zip(ids, rec.space().labels, strict=True) if lab == "tulip"]
        # a user whose last view is the item a profile of their first views ranks first
        history = [ev_(i, n) for n, i in enumerate(tulip_ids[:5])]
        top = rec.recommend_for_history(history, 1, describe=False).items[0].item_id
        split = splits.temporal_split({"u": history + [ev_(top, 99)]}, last_n=1)
        report = ev.evaluate(rec, split, ["average"], [1], bootstrap=50)
    assert report.strategies[0].per_user["recall@1"] == [1.0]


def test_too_small_logs_give_a_clear_message(embedded_copy):
    line = one_line_error(run_cli("evaluate", home=embedded_copy))
    assert "too small to evaluate" in line


def test_evaluate_over_several_seeds_saves_each_and_reuses_the_tuned_settings(embedded_copy, tmp_path):
    run_cli("simulate", "--users", "80", "--events-per-user", "20", "--quiet", home=embedded_copy, check=True)
    out = tmp_path / "seeds"
    asked = ("evaluate", "--strategy", "random", "--strategy", "ease", "--strategy", "popular", "--k", "10")
    proc = run_cli(*asked, "--seed", "0,1,2", "--quiet", "--out", str(out), home=embedded_copy, check=True)
    assert "seeds 0,1,2" in proc.stdout and "paired (recall@10, per user, mean over seeds)" in proc.stdout
    summary = json.loads((out / "seeds.json").read_text())
    runs = [json.loads((out / f"seed-{s}" / "metrics.json").read_text()) for s in (0, 1, 2)]
    assert len(set(summary["evaluation_ids"])) == 3
    rows = {r["strategy"]: r for r in summary["summary"]}
    for name, row in rows.items():  # the means are the seeds' own figures, averaged
        by_seed = [next(m["recall"] for m in run["metrics"] if m["strategy"] == name) for run in runs]
        assert row["recall_by_seed"] == pytest.approx(by_seed)
        assert row["recall"] == pytest.approx(np.mean(by_seed))
    assert len(set(rows["random"]["recall_by_seed"])) > 1  # the seed reaches the strategies
    assert rows["ease"]["recall_min"] == rows["ease"]["recall_max"]  # a deterministic one does not move
    assert "grid" in runs[0]["strategy_params"]["ease"]  # tuned once on validation events, then reused
    assert "grid" not in runs[1]["strategy_params"]["ease"]
    assert runs[1]["strategy_params"]["ease"]["lambda"] == runs[0]["strategy_params"]["ease"]["lambda"]
    assert summary["paired_comparison"]["better"] == summary["summary"][0]["strategy"]
    best, *others = summary["summary"]
    assert "minus_best" not in best and all(r["minus_best"]["mean_difference"] <= 0 for r in others)
    runner_up = others[0]["minus_best"]
    assert runner_up["mean_difference"] == pytest.approx(-summary["paired_comparison"]["mean_difference"])
    for bad in ("0,x", "1,1", "-1"):
        assert "--seed" in one_line_error(run_cli(*asked, "--seed", bad, home=embedded_copy))
