"""Hostile input, fuzzed with hypothesis: a clear error every time, and nothing half-stored."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from recsys import store
from recsys.catalog import read_catalog
from recsys.errors import RecsysError
from recsys.interactions import import_csv
from tests.conftest import BUNDLED, bearer, copy_home, make_token, settings_for
from web import MAX_UPLOAD_BYTES, create_app

TULIP = "tulip/" + sorted((BUNDLED / "tulip").glob("*.jpg"))[0].stem
NASTY = st.sampled_from(
    [
        "",
        " ",
        "'; DROP TABLE items; --",
        '" OR 1=1 --',
        "../../etc/passwd",
        "ü🌷\u202e",
        "\x00",
        "a" * 300,
        TULIP,
        "view",
        "like",
        "2024-01-01T00:00:00Z",
        "1e308",
        "-1",
        "NaN",
    ]
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    NASTY,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def app(tmp_path_factory, embedded_home):

    home = tmp_path_factory.mktemp("fuzz") / "home"
    copy_home(embedded_home, home)
    # hundreds of requests in seconds: the rate limits are tested in test_security, not here
    settings = settings_for(home, limit_uploads="100000 per minute", limit_api_writes="100000 per minute")
    app = create_app({"RECSYS_SETTINGS": settings, "TESTING": True})
    app.config["AUTH"] = bearer(make_token(home, "write"))
    yield app
    app.extensions["recsys"].workspace.close()


def _write_csv(path, header: str, lines: list[list[str]]):
    """Every cell quoted, so hostile text reaches the importer as one field."""
    body = "\n".join(",".join('"' + cell.replace('"', '""') + '"' for cell in row) for row in lines)
    path.write_text(header + "\n" + body, encoding="utf-8", errors="surrogatepass")
    return path


def _count(app) -> int:
    with app.extensions["recsys"].workspace.session() as s:
        return s.scalar(select(func.count()).select_from(store.Interaction))


@FUZZ
@given(
    body=st.dictionaries(st.sampled_from(["user", "item", "event", "weight", "at", "event_key", "x"]), VALUES)
)
@example(body={"user": "\x00", "item": TULIP})  # PostgreSQL text has no NUL: refused on both
@example(body={"user": "u" * 256, "item": TULIP})
@example(body={"user": "ok", "item": TULIP, "event_key": "k\x00"})
@example(body={"user": "'; DROP TABLE users; --", "item": TULIP, "event_key": "x' OR '1'='1"})
def test_event_api_answers_clearly_and_stores_all_or_nothing(app, body):
    before = _count(app)
    raw = json.dumps(body)  # NaN and Infinity go out as the literals a careless client sends
    response = app.test_client().post(
        "/api/events", data=raw, content_type="application/json", headers=app.config["AUTH"]
    )
    assert response.status_code in (200, 201, 400, 404, 409), (body, response.get_json())
    assert response.is_json and "Traceback" not in response.get_data(as_text=True)
    stored = response.get_json().get("stored", 0) if response.status_code in (200, 201) else 0
    assert _count(app) == before + stored


@FUZZ
@given(raw=st.binary(max_size=300), kind=st.sampled_from(["image/jpeg", "image/png", "text/plain", ""]))
def test_upload_of_random_bytes_is_refused_cleanly(app, raw, kind):
    response = app.test_client().post(
        "/api/search", data={"image": (io.BytesIO(raw), "x.jpg", kind)}, headers=app.config["AUTH"]
    )
    assert response.status_code in (400, 415), response.get_json()
    assert response.is_json


@FUZZ
@given(lines=st.lists(st.lists(st.one_of(NASTY, st.text(max_size=12)), min_size=0, max_size=6), max_size=8))
@example(lines=[["\x00", TULIP, "view", "2024-01-01T00:00:00Z"], ["ok", TULIP, "like", "1", "a" * 300]])
def test_events_csv_importer_keeps_valid_rows_and_rejects_the_rest(app, tmp_path_factory, lines):
    ws = app.extensions["recsys"].workspace
    path = _write_csv(
        tmp_path_factory.mktemp("csv") / "events.csv", "user,item,event,timestamp,weight", lines
    )
    before = _count(app)
    try:
        report = import_csv(ws, path)
    except RecsysError as exc:  # a clear one-line error naming the file
        assert "events.csv" in str(exc) and "\n" not in str(exc)
        assert _count(app) == before
        return
    assert _count(app) == before + report.stored
    assert all(where.startswith("events.csv:") for where, _ in report.rejected)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.tuples(st.integers(1, 16_000), st.integers(1, 16_000)),
    fmt=st.sampled_from(["PNG", "GIF", "BMP"]),
)
@example(size=(12_000, 12_000), fmt="PNG")  # 144 Mpx in a file of a few kB
@example(size=(1, 16_000), fmt="PNG")
def test_upload_of_any_dimensions_is_answered_or_refused_as_a_bomb(app, size, fmt):
    from PIL import Image

    data = io.BytesIO()
    Image.new("1", size).save(data, format=fmt)
    kind = {"PNG": "image/png", "GIF": "image/gif", "BMP": "image/bmp"}[fmt]
    response = app.test_client().post(
        "/api/search", data={"image": (io.BytesIO(data.getvalue()), "x", kind)}, headers=app.config["AUTH"]
    )
    assert response.is_json
    if len(data.getvalue()) > MAX_UPLOAD_BYTES:  # refused for its bytes before any decoding
        assert response.status_code == 413
    elif size[0] * size[1] > 16_000_000:  # the upload pixel limit, far below the ingest one
        assert response.status_code == 413 and "16,000,000" in response.get_json()["message"]
    else:
        assert response.status_code in (200, 413), response.get_json()


@FUZZ
@given(raw=st.binary(max_size=400))
def test_catalogue_csv_reader_never_crashes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("cat") / "catalog.csv"
    path.write_bytes(raw)
    try:
        entries, problems = read_catalog(path)
    except RecsysError as exc:
        assert "catalog.csv" in str(exc)
        return
    assert all(e.key and len(e.key) <= store.KEY_LENGTH and "\x00" not in e.key for e in entries)


@FUZZ
@given(lines=st.lists(st.lists(st.one_of(NASTY, st.text(max_size=12)), min_size=2, max_size=4), max_size=6))
def test_catalogue_csv_import_of_hostile_rows_reports_them_and_stores_nothing(app, tmp_path_factory, lines):
    from recsys.catalog import ingest

    ws = app.extensions["recsys"].workspace
    path = _write_csv(tmp_path_factory.mktemp("cat") / "catalog.csv", "key,image,label,title", lines)
    with ws.session() as s:
        before = s.scalar(select(func.count()).select_from(store.Item))
    problems: list[tuple[str, str]] = []
    try:
        report = ingest(ws, path, progress=False, on_problem=lambda where, why: problems.append((where, why)))
    except RecsysError as exc:
        assert "catalog.csv" in str(exc) and "\n" not in str(exc)
        report = None
    with ws.session() as s:
        after = s.scalar(select(func.count()).select_from(store.Item))
    assert after == before  # no row names a real image file, so nothing can be stored
    if report is not None:
        assert report.added == 0
        assert len(problems) + report.already_present == len(lines)  # each row accounted for
