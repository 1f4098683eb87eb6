"""Two-tower: a small real training run on the bundled catalogue with simulated interactions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sqlalchemy import select

from recsys import store
from recsys.catalog import ingest
from recsys.embedders.runner import embed_missing
from recsys.events import load_history
from recsys.index import ItemIndex
from recsys.recommend import Recommender
from recsys.simulate import SimulationConfig, simulate
from recsys.splits import temporal_split
from recsys.twotower import TwoTowerConfig
from recsys.twotower.serve import borrowed_vectors
from recsys.twotower.train import load, train, validation_recall
from recsys.workspace import Workspace
from tests.conftest import BUNDLED, copy_home, db_rows, one_line_error, run_cli, settings_for

SMALL = TwoTowerConfig(epochs=2, patience=5, batch_size=64, dim=32, hidden=64, val_fraction=0.2)


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory, embedded_home):
    home = tmp_path_factory.mktemp("tt") / "home"
    copy_home(embedded_home, home)
    with Workspace(settings_for(home)) as ws:
        simulate(ws, SimulationConfig(users=150, events_per_user=20, seed=3), progress=False)
        report = train(ws, SMALL, log=lambda m: None)
    assert report.version == 1 and report.epochs_run == 2
    return home


def test_training_logs_epochs_and_registers_a_version(trained_home):
    with Workspace(settings_for(trained_home)) as ws, ws.session() as s:
        row = s.scalar(select(store.ModelVersion))
    assert row.kind == "two-tower" and row.version == 1 and row.base_model == "efficientnet-lite0"
    assert [e["epoch"] for e in row.metrics["epochs"]] == [1, 2]
    assert all(np.isfinite(e["loss"]) for e in row.metrics["epochs"])
    assert row.params["dim"] == 32 and row.params["split"] == "temporal"
    assert (trained_home / row.path / "weights.weights.h5").is_file()


def test_tower_shapes_and_saved_model_round_trip(trained_home):
    import tensorflow as tf

    with Workspace(settings_for(trained_home)) as ws:
        model, vocab, _ = load(ws)
        again, _, _ = load(ws)
        with ws.session() as s:
            ids, raw = store.load_embeddings(s, "efficientnet-lite0")
    rows = vocab.item_rows(ids)
    items = model.item_tower(raw, rows).numpy()
    assert items.shape == (200, 32)
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(items, again.item_tower(raw, rows).numpy(), atol=1e-6)
    history = tf.constant(vocab.item_rows(ids[:5])[None, :])
    user = model.user_tower(tf.constant(raw[None, :5]), history, tf.constant([0])).numpy()
    assert user.shape == (1, 32)


def test_the_history_mean_leans_towards_the_latest_items():
    """Half-life 1: each older item counts half the next; padding rows count nothing."""
    import dataclasses

    from recsys.twotower.model import TwoTowerModel

    rng = np.random.default_rng(0)
    table = np.vstack([np.zeros((1, 8)), rng.normal(size=(5, 8))]).astype(np.float32)
    config = dataclasses.replace(SMALL, recency_half_life=1.0)
    model = TwoTowerModel(table, 1, config)
    rows = np.array([[3, 1, 4, 0, 0]], np.int32)  # oldest first, then padding
    got = model.history_mean(table[rows]).numpy()[0]
    expected = (0.25 * table[3] + 0.5 * table[1] + 1.0 * table[4]) / 1.75
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_new_item_borrows_the_vectors_of_the_known_items_it_looks_like():
    known_images = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1]], np.float32)
    known_vectors = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
    image = np.array([[2, 0, 0]], np.float32)  # cosine 1, 0.8 and 0 with the known images
    # the two nearest, weighed exp(1 / 0.1) : exp(0.8 / 0.1), then re-normalised
    w = np.array([1.0, np.exp(-2.0)]) / (1 + np.exp(-2.0))
    expected = w[0] * known_vectors[0] + w[1] * known_vectors[1]
    got = borrowed_vectors(image, known_images, known_vectors, 2, 0.1)
    np.testing.assert_allclose(got[0], expected / np.linalg.norm(expected), atol=1e-6)
    np.testing.assert_allclose(borrowed_vectors(image, known_images, known_vectors, 1, 0.1)[0], [1, 0])
    # a cooler softmax leans further towards the nearest
    assert borrowed_vectors(image, known_images, known_vectors, 2, 0.05)[0][0] > got[0][0]


def test_validation_recall_beats_random(trained_home):
    with Workspace(settings_for(trained_home)) as ws:
        model, vocab, row = load(ws)
        split = temporal_split(load_history(ws), fraction=0.2, min_events=3)
    recall = validation_recall(model, vocab, split.train, split.test)
    chance = np.mean([10 / (200 - len({e[0] for e in split.train[u]})) for u in split.test])
    assert recall > 1.5 * chance, (recall, chance)
    assert row.metrics["val_recall@10"] > chance


def test_the_strategy_fits_on_the_events_it_is_given(trained_home):
    """``fit`` trains on the events handed to it (it used to ignore them and load the latest
    version): a model of these users only, saved nowhere, that ranks their items."""
    with Workspace(settings_for(trained_home)) as ws:
        history = load_history(ws)
        train = {u: history[u] for u in sorted(history)[:60]}
        rec = Recommender(ws, use_index=False, log=None)
        params = {"epochs": 1, "batch_size": 64, "dim": 16, "hidden": 32}
        fitted = rec.fitted("two-tower", train, **params)
        versions = db_rows(trained_home, "SELECT count(*) FROM models")
    assert fitted.server.vocab.users == sorted(train) and fitted.server.model.config.dim == 16
    assert versions == [(1,)]  # nothing saved
    user = sorted(train)[0]
    hits, _ = rec.rank(fitted, [train[user]], [user], 5)[0]
    assert len(hits) == 5 and not {i for i, _ in hits} & {e[0] for e in train[user]}


def test_serving_through_faiss_and_the_new_item_path(trained_home, tmp_path):
    home = tmp_path / "home"
    copy_home(trained_home, home)
    with Workspace(settings_for(home)) as ws:
        rec = Recommender(ws, log=None)
        assert "two-tower" in rec.strategies()
        user = "sim-3-00007"
        seen = {h.key for h in rec.history(user)}
        result = rec.recommend(user, 10, strategy="two-tower")
        assert len(result.items) == 10 and not seen & {r.key for r in result.items}
        assert all(r.because in seen for r in result.items)
        assert ItemIndex.load(ws.settings.index_dir, "two-tower-v1").meta.count == 200
        # an item added after training (no id row) borrows the vectors of the items it looks like
        extra = tmp_path / "new" / "daisy"
        extra.mkdir(parents=True)
        source = next((BUNDLED / "daisy").glob("*.jpg"))
        shutil.copy(source, extra / "late-daisy.jpg")
        ingest(ws, extra.parent, progress=False)
        embed_missing(ws, progress=False)
        fresh = Recommender(ws, log=None)
        space = fresh.strategy("two-tower").space
        assert len(space.ids) == 201
        assert ItemIndex.load(ws.settings.index_dir, "two-tower-v1").meta.count == 201
        with ws.session() as s:
            new_id = s.scalar(select(store.Item.id).where(store.Item.key == "daisy/late-daisy"))
            source_id = s.scalar(select(store.Item.id).where(store.Item.key == f"daisy/{source.stem}"))
        vector = space.matrix[space.rows([new_id])[0]]
        assert np.isfinite(vector).all() and abs(np.linalg.norm(vector) - 1) < 1e-5
        # the same photo, known to the model, is among the items nearest to the newcomer
        nearest = space.ids[np.argsort(-(space.matrix @ vector))[:3]]
        assert source_id in nearest.tolist()
        server = fresh.strategy("two-tower").server
        known = server.vocab.item_rows(server.ids) > 0
        assert known.sum() == 200 and not known[space.rows([new_id])[0]]
        expected = borrowed_vectors(
            server.raw[space.rows([new_id])], server.raw[known], space.matrix[known], 100, 0.1
        )
        np.testing.assert_allclose(vector, expected[0], atol=1e-5)
        fresh.record("late-fan", "daisy/late-daisy")
        assert fresh.recommend("late-fan", 5, strategy="two-tower").items


def test_cli_train_continue_recommend_and_evaluate_guard(trained_home, tmp_path):
    home = tmp_path / "home"
    copy_home(trained_home, home)
    report = json.loads(
        run_cli(
            "train", "--continue", "--epochs", "1", "--batch-size", "64", "--json", home=home, check=True
        ).stdout
    )
    assert report["version"] == 2 and report["epochs_run"] == 1
    with Workspace(settings_for(home)) as ws, ws.session() as s:
        v2 = s.scalar(select(store.ModelVersion).where(store.ModelVersion.version == 2))
    assert v2.params["warm_start_from"] == 1
    out = json.loads(
        run_cli(
            "recommend",
            "--user",
            "sim-3-00001",
            "--strategy",
            "two-tower",
            "--model-version",
            "1",
            "--json",
            home=home,
            check=True,
        ).stdout
    )
    assert out["strategy"] == "two-tower" and len(out["items"]) == 10
    guarded = run_cli("evaluate", "--k", "10", "--quiet", home=home, check=True)
    assert "two-tower left out" in guarded.stderr and "two-tower" not in guarded.stdout.split("@10")[1]
    line = one_line_error(run_cli("evaluate", "--strategy", "two-tower", home=home))
    assert "warm-started" in line  # v2 continued v1, which saw every event
    line = one_line_error(
        run_cli(
            "recommend", "--user", "sim-3-00001", "--strategy", "two-tower", "--model-version", "9", home=home
        )
    )
    assert "no two-tower model version 9" in line


def test_two_epochs_with_id_dropout_history_ids_and_cold_items(trained_home, tmp_path):
    """The cold-item path: new items are left out of training (events and ids), the image path is
    trained to stand alone (id dropout), and the model still ranks the new items it never saw."""
    import dataclasses

    from recsys import evaluate as ev
    from recsys import events, splits

    home = copy_home(trained_home, tmp_path / "home")
    config = dataclasses.replace(SMALL, id_dropout=0.3, history_ids=True, cold_share=0.2, seed=0)
    with Workspace(settings_for(home)) as ws:
        report = train(ws, config, log=lambda m: None)
        model, vocab, row = load(ws, report.version)
        assert report.epochs_run == 2 and row.params["id_dropout"] == 0.3 and row.params["cold_share"] == 0.2
        rec = Recommender(ws, use_index=False, log=None)
        new = splits.new_items(rec.catalogue().ids, 0.2, 0)
        assert len(new) == 40 and not np.isin(new, vocab.item_ids).any()  # no id row for a new item
        split = splits.cold_item_split(events.load_history(ws), rec.catalogue().ids, share=0.2, seed=0)
        result = ev.evaluate(rec, split, ["two-tower", "random"], [10], bootstrap=50)
    scores = {s.name: s.mean("recall@10") for s in result.strategies}
    assert scores["two-tower"] > 0 and all(s.ranks_new_items for s in result.strategies)
    guarded = run_cli(
        "evaluate", "--split", "cold-items", "--cold-share", "0.3", "--strategy", "two-tower", home=home
    )
    assert "cold_share=0.2" in one_line_error(guarded)


def test_the_forking_server_serves_the_two_tower(trained_home, tmp_path):
    """`recsys serve` forks gunicorn workers: TensorFlow must start in each worker, never in the
    parent (its threads do not survive a fork, and the worker then hangs on its first request)."""
    import urllib.request

    from tests.conftest import bearer, make_token, running_server

    home = copy_home(trained_home, tmp_path / "home")
    token = make_token(home, "read")
    with running_server(home, "--workers", "2") as url:
        request = urllib.request.Request(
            f"{url}/api/users/sim-3-00007/recommendations?k=5&strategy=two-tower", headers=bearer(token)
        )
        with urllib.request.urlopen(request, timeout=90) as response:
            body = json.loads(response.read())
    assert body["strategy"] == "two-tower" and len(body["items"]) == 5
