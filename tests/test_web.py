"""The Flask page and JSON API through Flask's test client, on a real workspace."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image
from sqlalchemy import func, select, update

from recsys import store
from tests.conftest import BUNDLED, bearer, csrf_token, make_token, settings_for
from web import MAX_UPLOAD_BYTES, create_app

TULIP = "tulip/" + sorted((BUNDLED / "tulip").glob("*.jpg"))[0].stem
ROSE = "rose/" + sorted((BUNDLED / "rose").glob("*.jpg"))[0].stem


@pytest.fixture
def app(embedded_copy):
    app = create_app({"RECSYS_SETTINGS": settings_for(embedded_copy), "TESTING": True})
    yield app
    app.extensions["recsys"].workspace.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth(embedded_copy) -> dict:
    return bearer(make_token(embedded_copy, "write"))


def _events(app) -> int:
    with app.extensions["recsys"].workspace.session() as s:
        return s.scalar(select(func.count()).select_from(store.Interaction))


def start_fresh(client) -> str:
    """Press "Start fresh" as a browser would; return the new visitor's user key."""
    home = client.get("/")
    response = client.post("/start", data={"csrf_token": csrf_token(home.data)})
    assert response.status_code == 302 and response.headers["Location"].endswith("/you")
    with client.session_transaction() as session:
        return session["visitor"]


def click(client, item: str, **form) -> object:
    page = client.get("/you")
    return client.post("/view", data={"csrf_token": csrf_token(page.data), "item": item, **form})


def test_pages_render_with_pictures(client):
    home = client.get("/")
    assert home.status_code == 200 and b"Start fresh" in home.data and b'src="/images/' in home.data
    start_fresh(client)
    page = client.get("/you")
    assert page.status_code == 200 and b"Nothing yet" in page.data
    assert b"most popular" in page.data  # cold start, said so
    item = client.get(f"/items/{TULIP}")
    assert item.status_code == 200 and item.data.count(b'src="/images/') >= 10
    assert client.get("/search").status_code == 200


def test_clicking_a_card_records_a_view_and_updates_the_grid(client, app, auth):
    user = start_fresh(client)
    before = _events(app)
    response = click(client, TULIP)
    assert response.status_code == 302 and _events(app) == before + 1
    page = client.get("/you")
    assert page.data.count(b'data-label="tulip"') >= 6
    assert b"because you viewed" in page.data and f'<a href="/items/{TULIP}">Tulip '.encode() in page.data
    api = client.get(f"/api/users/{user}/recommendations?k=5", headers=auth).get_json()
    assert api["history_size"] == 1 and TULIP not in [i["key"] for i in api["items"]]


def test_the_first_click_makes_a_visitor(client, app):
    before = _events(app)
    assert click(client, TULIP).status_code == 302
    with client.session_transaction() as session:
        assert session["visitor"].startswith("visitor-")
    assert _events(app) == before + 1 and b"because you viewed" in client.get("/you").data


def test_api_status_codes(client, app, auth):
    ok = client.post("/api/events", json={"user": "api-user", "item": TULIP, "event": "like"}, headers=auth)
    assert ok.status_code == 201 and ok.get_json()["stored"] == 1
    keyed = {"user": "api-user", "item": TULIP, "event_key": "e-1"}
    assert client.post("/api/events", json=keyed, headers=auth).status_code == 201
    again = client.post("/api/events", json=keyed, headers=auth)
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    recs = client.get("/api/users/api-user/recommendations?k=3&strategy=popular", headers=auth)
    assert recs.status_code == 200
    similar = client.get(f"/api/items/{TULIP}/similar?k=4", headers=auth).get_json()
    assert similar["similar"][0]["key"] != TULIP
    assert client.get("/api/health").get_json()["embedded"] == 200
    bad = [
        client.post("/api/events", data="{not json", content_type="application/json", headers=auth),
        client.post("/api/events", json="a string", headers=auth),
        client.post("/api/events", json=[], headers=auth),
        client.post("/api/events", json={"user": "u"}, headers=auth),
        client.post("/api/events", json={"user": 5, "item": TULIP}, headers=auth),
        client.post("/api/events", json={"user": "u", "item": TULIP, "event": "stare"}, headers=auth),
        client.post("/api/events", json={"user": "u", "item": TULIP, "weight": "heavy"}, headers=auth),
        client.post("/api/events", json={"user": "u", "item": TULIP, "at": "last week"}, headers=auth),
        client.get("/api/users/api-user/recommendations?k=0", headers=auth),
        client.get("/api/users/api-user/recommendations?k=ten", headers=auth),
        client.get("/api/users/api-user/recommendations?strategy=magic", headers=auth),
        client.post("/api/search", data={}, headers=auth),
    ]
    for response in bad:
        assert response.status_code == 400, response.get_json()
        assert response.is_json and response.get_json()["status"] == 400
    for response in (
        client.get("/api/users/nobody/recommendations", headers=auth),
        client.get("/api/items/no/such/similar", headers=auth),
        client.post("/api/events", json={"user": "u", "item": "no-such-item"}, headers=auth),
    ):
        assert response.status_code == 404 and response.get_json()["status"] == 404
    assert client.get("/users/nobody").status_code == 404  # not demo mode: no one else's page at all
    assert b"Traceback" not in client.get("/users/nobody").data


def test_upload_limits_and_visual_search(client, auth):
    photo = sorted((BUNDLED / "rose").glob("*.jpg"))[2]

    def upload(data, name, kind, **kw):
        return client.post("/api/search?k=3", data={"image": (data, name, kind)}, headers=auth, **kw)

    hit = upload(photo.open("rb"), "rose.jpg", "image/jpeg")
    assert hit.status_code == 200 and hit.get_json()["similar"][0]["key"] == f"rose/{photo.stem}"
    assert hit.get_json()["similar"][0]["score"] > 0.99
    text = upload(io.BytesIO(b"hello"), "a.txt", "text/plain")
    assert text.status_code == 415 and text.get_json()["error"] == "Unsupported Media Type"
    liar = upload(io.BytesIO(b"hello"), "a.jpg", "image/jpeg")
    assert liar.status_code == 415 and "not an image" in liar.get_json()["message"]
    assert liar.get_json()["error"] == "Unsupported Media Type"
    huge = io.BytesIO(b"\xff\xd8" + b"0" * (MAX_UPLOAD_BYTES + 10))
    too_big = upload(huge, "big.jpg", "image/jpeg")
    assert too_big.status_code == 413 and too_big.is_json
    bomb = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, format="PNG")
    bombed = upload(io.BytesIO(bomb.getvalue()), "b.png", "image/png")
    assert bombed.status_code == 413 and "16,000,000" in bombed.get_json()["message"]
    page = client.get("/search")
    found = client.post(
        "/search",
        data={"csrf_token": csrf_token(page.data), "image": (photo.open("rb"), "rose.jpg", "image/jpeg")},
    )
    assert found.status_code == 200 and f"rose/{photo.stem}".encode() in found.data


def test_image_route_serves_by_id_only(client, embedded_copy):
    ok = client.get("/images/1")
    assert ok.status_code == 200 and ok.mimetype == "image/jpeg" and ok.data[:2] == b"\xff\xd8"
    assert ok.headers.get("Content-Disposition") == "inline; filename=1.jpg"  # not the store's file name
    for attempt in (
        "/images/../recsys.db",
        "/images/..%2Frecsys.db",
        "/images/%2e%2e/%2e%2e/etc/passwd",
        "/images/1/../../secret_key",
        "/images/-1",
        "/images/99999",
        "/images/secret_key",
        "/images/9223372036854775808",
        "/images/0",
        "/static/../recsys.db",
    ):
        response = client.get(attempt)
        assert response.status_code == 404, attempt
        assert b"SQLite format" not in response.data and b"root:" not in response.data


def test_titles_are_html_escaped(client, app):
    with app.extensions["recsys"].workspace.session() as s, s.begin():
        s.execute(
            update(store.Item).where(store.Item.key == TULIP).values(title="<script>alert('x')</script>")
        )
    page = client.get(f"/items/{TULIP}").data
    assert b"<script>alert" not in page and b"&lt;script&gt;alert(" in page
    start_fresh(client)
    click(client, TULIP)
    assert b"<script>alert" not in client.get("/you").data


def test_every_request_thread_of_the_server_searches_with_one_openmp_thread(embedded_copy):
    """OpenMP's thread count belongs to the thread that sets it: set once at start, request threads
    kept faiss's default (every core), and its spinning threads fought the other requests. numpy's
    BLAS likewise split each "because you viewed" product over the cores (half the throughput)."""
    import os
    import threading

    import faiss
    from threadpoolctl import threadpool_info, threadpool_limits

    from web.server import make_app

    if (os.cpu_count() or 1) < 2:
        pytest.skip("with one core every thread already searches with one")
    blas_before = {i["prefix"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    app = make_app(settings_for(embedded_copy), demo=False, models=False)
    seen: list[int] = []
    blas: list[int] = []

    def request_thread() -> None:
        assert app.test_client().get("/api/health").status_code == 200
        seen.append(faiss.omp_get_max_threads())
        blas.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

    thread = threading.Thread(target=request_thread)
    thread.start()
    thread.join(60)
    app.extensions["recsys"].workspace.close()
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # the rest of the tests: as before
    threadpool_limits(limits=blas_before)
    assert seen == [1]
    assert blas and set(blas) == {1} and max(blas_before.values()) > 1


# -- first impressions ----------------------------------------------------------------------------


def test_clicking_a_picture_on_the_home_page_opens_it_and_counts_as_a_view(client, app):
    """Finding: a click on a picture only opened its page and recorded nothing, though the page
    said the grid follows your clicks."""
    home = client.get("/")
    assert b"counts as a view" in home.data
    keys = re.findall(rb'name="item" value="([^"]+)"', home.data)
    assert len(keys) == 12  # every popular card's picture is a click that counts
    before = _events(app)
    opened = client.post(
        "/view", data={"csrf_token": csrf_token(home.data), "item": keys[0].decode(), "then": "item"}
    )
    assert opened.status_code == 302 and opened.headers["Location"] == f"/items/{keys[0].decode()}"
    assert _events(app) == before + 1
    history = client.get("/you").data.split(b'id="history"')[1].split(b"</section>")[0]
    assert f'data-key="{keys[0].decode()}"'.encode() in history


def test_captions_name_the_liked_picture_and_titles_are_readable(client, app):
    """Findings: "because you viewed tulip/10164073235_f29931d91e" (a raw key, and "viewed" after a
    like), file names as titles, and unexplained scores ("18.001") on the cards."""
    from recsys.serving.results import readable_title

    assert readable_title("10164073235_f29931d91e", "tulip", 37) == "Tulip 37"
    assert readable_title("IMG_0042", None, 5) == "Item 5"
    assert readable_title("Toy Story (1995)", "Comedy", 1) == "Toy Story (1995)"
    start_fresh(client)
    click(client, TULIP, event="like")
    page = client.get("/you").data.decode()
    grid = page.split('id="recommendations"')[1]
    assert "because you liked" in grid and "because you viewed" not in grid
    assert f'<a href="/items/{TULIP}">Tulip ' in grid  # the liked picture, by a readable title
    assert re.search(r'<img class="mini" src="/images/\d+"', grid)  # and its thumbnail
    titles = re.findall(r'class="title" href="[^"]+">([^<]+)</a>', grid)
    assert len(titles) == 12 and not any("/" in t or "_" in t for t in titles), titles
    assert not re.search(r"\b\d+\.\d{3}\b", re.sub(r"<[^>]+>", " ", grid))  # no bare scores
    item = client.get(f"/items/{TULIP}").data.decode()
    assert "<h1>Tulip " in item


def test_the_people_list_says_how_many_more_and_lists_the_demo_user_first(embedded_copy):
    """Finding: 30 of 42 users and no "more"; the demo's own user (of the printed curl) left out."""
    from recsys.workspace import Workspace

    with Workspace(settings_for(embedded_copy)) as ws:
        from recsys.recommend import Recommender

        rec = Recommender(ws, log=None)
        for n in range(33):
            rec.record(f"person-{n:02d}", TULIP)
            rec.record(f"person-{n:02d}", ROSE)
        rec.record("demo-user", TULIP)
    app = create_app({"RECSYS_SETTINGS": settings_for(embedded_copy), "TESTING": True, "RECSYS_DEMO": True})
    page = app.test_client().get("/").data.decode()
    people = re.findall(r'<li><a href="/users/([^"]+)"', page)
    assert people[0] == "demo-user" and len(people) == 30
    assert "and 4 more" in page
    app.extensions["recsys"].workspace.close()


def test_pages_name_an_icon_that_is_served(client):
    """Finding: every page asked for /favicon.ico and got a 404."""
    icon = re.search(rb'<link rel="icon" href="([^"]+)"', client.get("/").data).group(1).decode()
    response = client.get(icon)
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
