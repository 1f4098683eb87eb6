"""POST /api/events with a JSON array: each event stands on its own, the answer says what became of
each, in order; idempotency keys behave as for single events; the write limit counts events.

Run against the real app on a real workspace (SQLite, or PostgreSQL under RECSYS_TEST_DB_URL).
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from recsys import store
from tests.conftest import BUNDLED, bearer, make_token

TULIP, ROSE = (f"{label}/" + sorted((BUNDLED / label).glob("*.jpg"))[0].stem for label in ("tulip", "rose"))


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def writer(embedded_copy) -> dict:
    return bearer(make_token(embedded_copy, "write", "batch-writer"))


def stored_keys(app) -> list[tuple[str, str, str]]:
    """(user, event_key, item) of every keyed event in the database."""
    with app.extensions["recsys"].workspace.session() as s:
        rows = s.execute(
            select(store.User.key, store.Interaction.event_key, store.Item.key)
            .join(store.User, store.User.id == store.Interaction.user_id)
            .join(store.Item, store.Item.id == store.Interaction.item_id)
            .where(store.Interaction.event_key.is_not(None))
        )
        return sorted(tuple(r) for r in rows)


def count(app) -> int:
    with app.extensions["recsys"].workspace.session() as s:
        return s.scalar(select(func.count()).select_from(store.Interaction))


def test_a_batch_answers_each_event_in_order_and_keeps_the_good_ones(app, client, writer):
    batch = [
        {"user": "ann", "item": TULIP, "event_key": "a1"},  # stored
        {"user": "ann", "item": "no/such-item", "event_key": "a2"},  # unknown item
        {"user": "ann", "item": TULIP, "event_key": "a1"},  # the same again: duplicate
        {"user": "ann", "item": ROSE, "event_key": "a1"},  # the same key, another item: conflict
        {"user": "ann", "item": ROSE, "weight": "heavy"},  # wrong type
        ["not", "an", "object"],
        {"user": "ann", "item": ROSE, "event": "teleport"},  # no such event
        {"user": "bob", "item": ROSE, "event_key": "a1"},  # keys are per user: stored
        {"user": "bob", "item": ROSE},  # no key: always stored
    ]
    r = client.post("/api/events", json=batch, headers=writer)
    assert r.status_code == 200, r.data
    body = r.get_json()
    results = [(x["result"], x.get("status")) for x in body["results"]]
    assert results == [
        ("stored", None),
        ("error", 404),
        ("duplicate", None),
        ("error", 409),
        ("error", 400),
        ("error", 400),
        ("error", 400),
        ("stored", None),
        ("stored", None),
    ]
    assert (body["stored"], body["duplicates"], body["errors"]) == (3, 1, 5)
    assert "no/such-item" in body["results"][1]["message"]
    assert "a1" in body["results"][3]["message"] and "teleport" in body["results"][6]["message"]
    assert stored_keys(app) == [("ann", "a1", TULIP), ("bob", "a1", ROSE)]
    assert count(app) == 3


def test_a_batch_sent_again_stores_nothing_twice(app, client, writer):
    single = {"user": "cy", "item": TULIP, "event": "like", "event_key": "k0"}
    assert client.post("/api/events", json=single, headers=writer).status_code == 201
    batch = [single] + [
        {"user": f"u{n % 7}", "item": (TULIP, ROSE)[n % 2], "event_key": f"k{n}", "at": 1_700_000_000 + n}
        for n in range(1, 300)
    ]
    first = client.post("/api/events", json=batch, headers=writer).get_json()
    assert (first["stored"], first["duplicates"], first["errors"]) == (299, 1, 0)
    assert first["results"][0] == {"result": "duplicate"}  # stored before, by the single event
    again = client.post("/api/events", json=batch, headers=writer).get_json()  # a client's retry
    assert (again["stored"], again["duplicates"], again["errors"]) == (0, 300, 0)
    assert {x["result"] for x in again["results"]} == {"duplicate"}
    # one of them sent alone, after the batch: a duplicate, as for any single event
    one = client.post("/api/events", json=batch[5], headers=writer)
    assert one.status_code == 200 and one.get_json() == {"stored": 0, "duplicate": True}
    assert count(app) == 300


def test_a_full_batch_of_1000_is_stored_and_1001_is_refused(app, client, writer):
    batch = [{"user": f"w{n % 50}", "item": TULIP, "event_key": f"full-{n}"} for n in range(1000)]
    r = client.post("/api/events", json=batch, headers=writer)
    assert r.status_code == 200 and r.get_json()["stored"] == 1000
    assert len(r.get_json()["results"]) == 1000
    too_many = client.post("/api/events", json=batch + [batch[0]], headers=writer)
    assert too_many.status_code == 400 and "1000" in too_many.get_json()["message"]
    empty = client.post("/api/events", json=[], headers=writer)
    assert empty.status_code == 400
    assert count(app) == 1000


def test_batch_bounds_tokens_and_content_types(app, client, writer, embedded_copy):
    huge = json.dumps([{"user": "x" * 100, "item": "y" * 1000, "event_key": "z"}] * 1000)  # over 1 MB
    r = client.post("/api/events", data=huge, headers={**writer, "Content-Type": "application/json"})
    assert r.status_code == 413
    big_one = {"user": "ann", "item": TULIP, "padding": "p" * 70_000}  # one event over 64 KB
    assert client.post("/api/events", json=big_one, headers=writer).status_code == 413
    batch = [{"user": "ann", "item": TULIP}]
    assert client.post("/api/events", json=batch).status_code == 401
    reader = bearer(make_token(embedded_copy, "read", "batch-reader"))
    assert client.post("/api/events", json=batch, headers=reader).status_code == 403
    form = client.post("/api/events", data="user=ann", headers=writer, content_type="text/plain")
    assert form.status_code == 415
    assert client.post("/api/events", json=[[[[]]]] * 3, headers=writer).status_code == 200
    assert client.post("/api/events", json="a string", headers=writer).status_code == 400
    assert count(app) == 0


def test_the_write_limit_counts_events_not_requests(make_app, embedded_copy):
    app = make_app(limit_api_writes="10 per year")
    client = app.test_client()
    writer = bearer(make_token(embedded_copy, "write", "limited"))
    eight = [{"user": "lim", "item": TULIP} for _ in range(8)]
    assert client.post("/api/events", json=eight, headers=writer).status_code == 200
    three = eight[:3]
    refused = client.post("/api/events", json=three, headers=writer)
    assert refused.status_code == 429 and refused.headers.get("Retry-After")
    assert client.post("/api/events", json={"user": "lim", "item": TULIP}, headers=writer).status_code == 201
    assert client.post("/api/events", json=eight[:1], headers=writer).status_code == 200
    assert client.post("/api/events", json=eight[:1], headers=writer).status_code == 429
    # another token has its own budget
    other = bearer(make_token(embedded_copy, "write", "other"))
    assert client.post("/api/events", json=eight, headers=other).status_code == 200
    assert count(app) == 18
