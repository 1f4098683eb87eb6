"""The served model: a ranker over several retrievers, learning on validation events only, and
letting items added after training into people's lists; ``auto`` judging known and new items."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image, ImageOps
from sqlalchemy import select

from recsys import evaluate as ev
from recsys import events, splits, store, training
from recsys.catalog import ingest
from recsys.embedders.runner import embed_missing
from recsys.errors import RecsysError
from recsys.recommend import Recommender
from recsys.serving.selection import describe, judge
from recsys.simulate import SimulationConfig, simulate
from recsys.strategies.hybrid import Hybrid
from recsys.workspace import Workspace
from tests.conftest import BUNDLED, bearer, copy_home, make_token, settings_for

#: A small, quick hybrid: a two-epoch two-tower, a ranker stopping early.
SMALL = {
    "tower_epochs": 2,
    "tower_dim": 32,
    "tower_hidden": 64,
    "tower_batch_size": 64,
    "epochs": 8,
    "patience": 3,
}


@pytest.fixture(scope="module")
def hybrid_home(tmp_path_factory, embedded_home):
    """The bundled photos, simulated people, and a hybrid trained on every event."""
    home = tmp_path_factory.mktemp("hybrid") / "home"
    copy_home(embedded_home, home)
    with Workspace(settings_for(home)) as ws:
        simulate(ws, SimulationConfig(users=80, events_per_user=20, seed=5), progress=False)
        report = training.train_peer(
            Recommender(ws, use_index=False, log=None), "hybrid", params=SMALL, log=lambda m: None
        )
    assert report["version"] == 1
    return home


def test_the_ranker_learns_only_from_validation_events(hybrid_home, monkeypatch):
    """Fitted on a split's training events, its ranker's positives are the latest 10% of each
    user's training interactions, never the split's held-out items."""
    from recsys.ranker.model import Ranker

    with Workspace(settings_for(hybrid_home)) as ws:
        split = splits.temporal_split(events.load_history(ws), fraction=0.2)
        inner = splits.temporal_split(split.train, fraction=0.1, min_events=3)
        rec = Recommender(ws, use_index=False, log=None)
        taught: list[list[np.ndarray]] = []
        lists_seen = []
        original_epoch, original_lists = Ranker.epoch, Hybrid._lists

        def epoch(self, features, labels, rng):
            taught.append(labels)
            return original_epoch(self, features, labels, rng)

        def lists(self, histories, users, new):
            made = original_lists(self, histories, users, new)
            lists_seen.append((list(users), made[0]))
            return made

        monkeypatch.setattr(Ranker, "epoch", epoch)
        monkeypatch.setattr(Hybrid, "_lists", lists)
        rec.fitted("hybrid", split.train, **SMALL)
    users, made = lists_seen[0]  # the lists the ranker learns from
    assert users == inner.users
    ids = rec.catalogue().ids
    positives = {
        u: set(ids[rows[np.isin(rows, rec.catalogue().rows(sorted(inner.test[u])))]].tolist())
        for u, rows in zip(users, made.rows, strict=True)
    }
    assert taught and sum(len(p) for p in positives.values()) > 20
    for user, items in positives.items():
        assert items <= inner.test[user]
        assert not items & (split.test.get(user, set()))  # the evaluation's held-out items: never
    assert sum(int(label.sum()) for label in taught[0]) <= sum(len(p) for p in positives.values())


def test_a_new_item_reaches_a_list_through_the_api_without_retraining(hybrid_home, tmp_path):
    """A tulip photo added after training: someone who has just liked the tulip it mirrors gets it
    in their list, from
    the same trained version; a strategy that ranks by interactions only never shows it."""
    from web import create_app

    home = tmp_path / "home"
    copy_home(hybrid_home, home)
    with Workspace(settings_for(home)) as ws:
        catalogue = Recommender(ws, log=None).catalogue()
        tulips = [f"tulip/{p.stem}" for p in sorted((BUNDLED / "tulip").glob("*.jpg"))[:8]]
        source = BUNDLED / (tulips[0] + ".jpg")
        folder = tmp_path / "new" / "tulip"
        folder.mkdir(parents=True)
        ImageOps.mirror(Image.open(source)).save(folder / "late-tulip.jpg")
        ingest(ws, folder.parent, progress=False)
        embed_missing(ws, progress=False)
        with ws.session() as s:
            assert s.scalar(select(store.Item.id).where(store.Item.key == "tulip/late-tulip")) is not None
    assert len(catalogue) == 200  # the model was trained before the new photo came
    app = create_app({"RECSYS_SETTINGS": settings_for(home), "TESTING": True})
    client, write, read = app.test_client(), make_token(home, "write"), make_token(home, "read")
    for n, key in enumerate(tulips[1:] + tulips[:1]):  # the one it mirrors, liked last
        at = f"2026-01-01T00:{n:02d}:00Z"
        answer = client.post(
            "/api/events",
            json={"user": "tulip-fan", "item": key, "event": "like", "at": at},
            headers=bearer(write),
        )
        assert answer.status_code == 201, answer.get_data(as_text=True)

    def listed(strategy: str) -> list[str]:
        answer = client.get(
            f"/api/users/tulip-fan/recommendations?k=10&strategy={strategy}", headers=bearer(read)
        )
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return [item["key"] for item in answer.get_json()["items"]]

    hybrid, id_only = listed("hybrid"), listed("popular")
    app.extensions["recsys"].workspace.close()
    assert "tulip/late-tulip" in hybrid and len(hybrid) == 10
    assert "tulip/late-tulip" not in id_only


def test_auto_judges_known_and_new_items_together(logged_for_auto):
    warm = [
        {"strategy": "popular", "version": None, "recall@10": 0.30},
        {"strategy": "average", "version": None, "recall@10": 0.26},
    ]
    cold = [
        {"strategy": "popular", "version": None, "recall@10": 0.05, "reach": 0.0},  # cannot rank them
        {"strategy": "average", "version": None, "recall@10": 0.20, "reach": 0.9},
    ]
    judged = {r["strategy"]: r["score"] for r in judge(warm, cold, 0.2)}
    assert judged["popular"] == pytest.approx(0.8 * 0.30)
    assert judged["average"] == pytest.approx(0.8 * 0.26 + 0.2 * 0.20 * 0.9)
    assert {r["strategy"]: r["score"] for r in judge(warm, None, 0.2)} == {"popular": 0.30, "average": 0.26}
    with Workspace(settings_for(logged_for_auto)) as ws:
        for split, rows in (("temporal", warm), ("cold-items", cold)):
            with ws.session() as s, s.begin():
                s.add(store.Evaluation(created_at=store.utcnow(), split=split, params={}, strategies=rows))
        choice = Recommender(ws, log=None).selection.auto_choice()
        assert choice["strategy"] == "average" and choice["new_items"] == {"recall@10": 0.20, "reach": 0.9}
        line = describe(choice)
        assert (
            "recall@10 0.2600 on known items" in line and "0.2000 on new items (reaching 90% of them)" in line
        )
        # a real cold-item evaluation stores each strategy's reach: 0 where it cannot rank new items
        rec = Recommender(ws, use_index=False, log=None)
        split = splits.cold_item_split(events.load_history(ws), rec.catalogue().ids, share=0.2, seed=0)
        report = ev.evaluate(rec, split, ["popular", "average"], [10], bootstrap=20)
        ev.save(ws, report)
        stored = registry_rows(ws, "cold-items")
        assert stored["popular"]["reach"] == 0.0 and 0 < stored["average"]["reach"] <= 1


def registry_rows(ws, split: str) -> dict:
    from recsys import registry

    return {r["strategy"]: r for r in registry.latest_evaluations(ws, split=split)[0].strategies}


@pytest.fixture
def logged_for_auto(embedded_copy):
    with Workspace(settings_for(embedded_copy)) as ws:
        simulate(ws, SimulationConfig(users=40, events_per_user=15, seed=1), progress=False)
    return embedded_copy


def test_a_saved_hybrid_reads_back_the_same(hybrid_home, tmp_path):
    with Workspace(settings_for(hybrid_home)) as ws:
        rec = Recommender(ws, use_index=False, log=None)
        history = events.load_history(ws)
        users = sorted(history)[:5]
        served = rec.strategy("hybrid")
        assert served.params["version"] == 1 and "ranker_val_recall@10" in served.params
        scores = served.score([history[u] for u in users], users)
        assert scores.valid.all() and np.isfinite(scores.scores).all()
        served.write(tmp_path)
        again = Hybrid(rec.context(), dict(served.params))
        again.read(tmp_path)
        np.testing.assert_allclose(
            again.score([history[u] for u in users], users).scores, scores.scores, atol=1e-5
        )
        with Workspace(settings_for(hybrid_home, model="efficientnet-b0")) as other:
            moved = Hybrid(dataclasses.replace(rec.context(), workspace=other), {})
            with pytest.raises(RecsysError, match="serve with --model efficientnet-lite0"):
                moved.read(tmp_path)  # its scores were learnt over other vectors
