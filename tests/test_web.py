"""The Flask page and JSON API through Flask's test client, on a real workspace."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy import func, select, update

from recsys import store
from tests.conftest import BUNDLED, settings_for
from web import MAX_UPLOAD_BYTES, create_app

TULIP = "tulip/" + sorted((BUNDLED / "tulip").glob("*.jpg"))[0].stem


@pytest.fixture
def app(embedded_copy):
    app = create_app({"RECSYS_SETTINGS": settings_for(embedded_copy), "TESTING": True})
    yield app
    app.extensions["recsys"]["workspace"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def _events(app) -> int:
    with app.extensions["recsys"]["workspace"].session() as s:
        return s.scalar(select(func.count()).select_from(store.Interaction))


def test_pages_render_with_pictures(client):
    home = client.get("/")
    assert home.status_code == 200 and b"Start fresh" in home.data and b'src="/images/' in home.data
    start = client.post("/start")
    assert start.status_code == 302
    page = client.get(start.headers["Location"])
    assert page.status_code == 200 and b"Nothing yet" in page.data
    assert b"most popular" in page.data  # cold start, said so
    item = client.get(f"/items/{TULIP}")
    assert item.status_code == 200 and item.data.count(b'src="/images/') >= 10
    assert client.get("/search").status_code == 200


def test_clicking_a_card_records_a_view_and_updates_the_grid(client, app):
    user = client.post("/start").headers["Location"].rsplit("/", 1)[1]
    before = _events(app)
    response = client.post(f"/users/{user}/view", data={"item": TULIP})
    assert response.status_code == 302 and _events(app) == before + 1
    page = client.get(f"/users/{user}")
    assert page.data.count(b'data-label="tulip"') >= 6
    assert b"because you viewed " + TULIP.encode() in page.data
    api = client.get(f"/api/users/{user}/recommendations?k=5").get_json()
    assert api["history_size"] == 1 and TULIP not in [i["key"] for i in api["items"]]


def test_api_status_codes(client, app):
    ok = client.post("/api/events", json={"user": "api-user", "item": TULIP, "event": "like"})
    assert ok.status_code == 201 and ok.get_json()["stored"] == 1
    keyed = {"user": "api-user", "item": TULIP, "event_key": "e-1"}
    assert client.post("/api/events", json=keyed).status_code == 201
    again = client.post("/api/events", json=keyed)
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert client.get("/api/users/api-user/recommendations?k=3&strategy=popular").status_code == 200
    assert client.get(f"/api/items/{TULIP}/similar?k=4").get_json()["similar"][0]["key"] != TULIP
    assert client.get("/api/health").get_json()["embedded"] == 200
    bad = [
        client.post("/api/events", data="{not json", content_type="application/json"),
        client.post("/api/events", json=["a", "list"]),
        client.post("/api/events", json={"user": "u"}),
        client.post("/api/events", json={"user": 5, "item": TULIP}),
        client.post("/api/events", json={"user": "u", "item": TULIP, "event": "stare"}),
        client.post("/api/events", json={"user": "u", "item": TULIP, "weight": "heavy"}),
        client.post("/api/events", json={"user": "u", "item": TULIP, "at": "last week"}),
        client.get("/api/users/api-user/recommendations?k=0"),
        client.get("/api/users/api-user/recommendations?k=ten"),
        client.get("/api/users/api-user/recommendations?strategy=magic"),
        client.post("/api/search", data={}),
    ]
    for response in bad:
        assert response.status_code == 400, response.get_json()
        assert response.is_json and response.get_json()["status"] == 400
    for response in (
        client.get("/api/users/nobody/recommendations"),
        client.get("/api/items/no/such/similar"),
        client.post("/api/events", json={"user": "u", "item": "no-such-item"}),
    ):
        assert response.status_code == 404 and response.get_json()["status"] == 404
    assert client.get("/users/nobody").status_code == 404
    assert b"Traceback" not in client.get("/users/nobody").data


def test_upload_limits_and_visual_search(client):
    photo = sorted((BUNDLED / "rose").glob("*.jpg"))[2]
    hit = client.post("/api/search?k=3", data={"image": (photo.open("rb"), "rose.jpg", "image/jpeg")})
    assert hit.status_code == 200 and hit.get_json()["similar"][0]["key"] == f"rose/{photo.stem}"
    assert hit.get_json()["similar"][0]["score"] > 0.99
    text = client.post("/api/search", data={"image": (io.BytesIO(b"hello"), "a.txt", "text/plain")})
    assert text.status_code == 415 and text.is_json
    liar = client.post("/api/search", data={"image": (io.BytesIO(b"hello"), "a.jpg", "image/jpeg")})
    assert liar.status_code == 415 and "not an image" in liar.get_json()["message"]
    huge = io.BytesIO(b"\xff\xd8" + b"0" * (MAX_UPLOAD_BYTES + 10))
    too_big = client.post("/api/search", data={"image": (huge, "big.jpg", "image/jpeg")})
    assert too_big.status_code == 413 and too_big.is_json
    bomb = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, format="PNG")
    bombed = client.post("/api/search", data={"image": (io.BytesIO(bomb.getvalue()), "b.png", "image/png")})
    assert bombed.status_code == 400 and "decompression bomb" in bombed.get_json()["message"]
    page = client.post("/search", data={"image": (photo.open("rb"), "rose.jpg", "image/jpeg")})
    assert page.status_code == 200 and f"rose/{photo.stem}".encode() in page.data


def test_image_route_serves_by_id_only(client, embedded_copy):
    ok = client.get("/images/1")
    assert ok.status_code == 200 and ok.mimetype == "image/jpeg" and ok.data[:2] == b"\xff\xd8"
    for attempt in (
        "/images/../recsys.db",
        "/images/..%2Frecsys.db",
        "/images/%2e%2e/%2e%2e/etc/passwd",
        "/images/1/../../secret_key",
        "/images/-1",
        "/images/99999",
        "/images/secret_key",
        "/static/../recsys.db",
    ):
        response = client.get(attempt)
        assert response.status_code == 404, attempt
        assert b"SQLite format" not in response.data and b"root:" not in response.data


def test_titles_are_html_escaped(client, app):
    with app.extensions["recsys"]["workspace"].session() as s, s.begin():
        s.execute(
            update(store.Item).where(store.Item.key == TULIP).values(title="<script>alert('x')</script>")
        )
    page = client.get(f"/items/{TULIP}").data
    assert b"<script>alert" not in page and b"&lt;script&gt;alert(" in page
    user = client.post("/start").headers["Location"].rsplit("/", 1)[1]
    client.post(f"/users/{user}/view", data={"item": TULIP})
    assert b"<script>alert" not in client.get(f"/users/{user}").data
