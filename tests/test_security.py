"""Every finding of the security review, as a test: identity, tokens, CSRF, abuse, files, errors.

Each test names the finding it covers. They run against the real app (Flask's client, a real
workspace) and, where the finding was about the running server, against `recsys serve`.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import stat
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, insert, select

from recsys import store
from recsys.settings import Settings
from recsys.workspace import Workspace
from tests.conftest import (
    BUNDLED,
    ON_POSTGRES,
    bearer,
    csrf_token,
    last_server_log,
    make_token,
    one_line_error,
    run_cli,
    running_server,
    settings_for,
)
from web import create_app

TULIP, ROSE = (f"{label}/" + sorted((BUNDLED / label).glob("*.jpg"))[0].stem for label in ("tulip", "rose"))


def strict_json(raw: bytes | str):
    """What JSON.parse accepts: NaN and Infinity are not JSON."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw, parse_constant=refuse)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def writer(embedded_copy) -> dict:
    return bearer(make_token(embedded_copy, "write", "writer"))


def count(app, model=store.Interaction) -> int:
    with app.extensions["recsys"].workspace.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def user_events(app, user: str) -> int:
    with app.extensions["recsys"].workspace.session() as s:
        return s.scalar(
            select(func.count())
            .select_from(store.Interaction)
            .join(store.User, store.User.id == store.Interaction.user_id)
            .where(store.User.key == user)
        )


def visitor_of(client) -> str | None:
    with client.session_transaction() as session:
        return session.get("visitor")


def start(client) -> str:
    client.post("/start", data={"csrf_token": csrf_token(client.get("/").data)})
    return visitor_of(client)


# -- "The demo's pictures": a relative home ------------------------------------------------------


def test_a_relative_home_is_resolved_once_and_images_load_from_another_folder(embedded_copy, tmp_path):
    """Finding: every /images/<id> answered 500 when the home was relative."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    relative = os.path.relpath(embedded_copy, elsewhere)
    here = os.getcwd()
    try:
        os.chdir(elsewhere)
        assert Settings(home=relative).home == embedded_copy.resolve()
        assert Settings.from_env({"RECSYS_HOME": relative}).home.is_absolute()
    finally:
        os.chdir(here)
    with running_server(embedded_copy, cwd=elsewhere, home_arg=relative) as url:
        page = urllib.request.urlopen(f"{url}/").read().decode()
        sources = sorted(set(part.split('"')[0] for part in page.split('src="/images/')[1:]))
        assert len(sources) >= 10
        for src in sources:
            with urllib.request.urlopen(f"{url}/images/{src}") as r:
                assert r.status == 200 and r.read(2) == b"\xff\xd8"


# -- "No identity" -----------------------------------------------------------------------------


def test_other_peoples_pages_and_the_people_list_exist_only_in_demo_mode(make_app, writer):
    """Finding: anyone could read anyone's history; the home page listed people publicly."""
    app = make_app()
    client = app.test_client()
    client.post("/api/events", json={"user": "ana", "item": TULIP}, headers=writer)
    assert client.get("/users/ana").status_code == 404
    home = client.get("/").data
    assert b"ana" not in home and b"People" not in home
    demo = make_app(demo=True).test_client()
    assert demo.get("/users/ana").status_code == 200 and b"People" in demo.get("/").data


def test_a_url_never_switches_who_the_visitor_is(make_app, writer):
    """Finding: visiting /users/<x> switched the visitor's identity to x."""
    app = make_app(demo=True)
    client = app.test_client()
    client.post("/api/events", json={"user": "victim", "item": ROSE}, headers=writer)
    me = start(client)
    assert client.get("/users/victim").status_code == 200  # demo mode: may look
    assert visitor_of(client) == me
    page = client.get("/you")
    form = {"csrf_token": csrf_token(page.data), "item": TULIP, "user": "victim"}  # a forged field
    assert client.post("/view", data=form).status_code == 302
    assert user_events(app, "victim") == 1 and user_events(app, me) == 1
    assert client.post("/users/victim/view", data=form).status_code in (404, 405)  # the old route is gone
    assert b"victim" not in client.get("/you").data


def test_the_api_needs_a_token_and_a_wrong_or_revoked_one_is_refused(app, client, embedded_copy):
    """Finding: anyone could read recommendations and write events for anyone (201, user created)."""
    users_before, events_before = count(app, store.User), count(app)
    for headers in ({}, {"Authorization": "Bearer rsk_not-a-real-token"}, {"Authorization": "Basic abc"}):
        read = client.get("/api/users/crowd/recommendations", headers=headers)
        write = client.post("/api/events", json={"user": "mallory", "item": TULIP}, headers=headers)
        search = client.post("/api/search", data={}, headers=headers)
        similar = client.get(f"/api/items/{TULIP}/similar", headers=headers)
        for response in (read, write, search, similar):
            assert response.status_code == 401 and response.is_json
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert count(app, store.User) == users_before and count(app) == events_before
    # a visitor's session cookie is not a credential for the API
    start(client)
    assert client.get("/api/users/crowd/recommendations").status_code == 401
    # public: health and the OpenAPI document
    assert client.get("/api/health").status_code == 200
    assert client.get("/api/openapi.json").status_code == 200
    reader = make_token(embedded_copy, "read", "reader")
    denied = client.post("/api/events", json={"user": "u", "item": TULIP}, headers=bearer(reader))
    assert denied.status_code == 403 and "insufficient_scope" in denied.headers["WWW-Authenticate"]
    assert client.get(f"/api/items/{TULIP}/similar", headers=bearer(reader)).status_code == 200
    with Workspace(settings_for(embedded_copy)) as ws:
        from recsys import tokens

        tokens.revoke(ws, "reader")
    from web.identity import TOKEN_CACHE_SECONDS

    deadline = time.monotonic() + TOKEN_CACHE_SECONDS + 1  # a verified token is trusted that long
    while client.get(f"/api/items/{TULIP}/similar", headers=bearer(reader)).status_code != 401:
        assert time.monotonic() < deadline, "a revoked token was still accepted"
        time.sleep(0.2)


def test_every_api_route_but_health_and_the_document_needs_a_token(app):
    public = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            view = app.view_functions[rule.endpoint]
            if getattr(view, "required_scope", "read") is None:
                public.add(rule.rule)
    assert public == {"/api/health", "/api/openapi.json"}


def test_token_commands_store_only_a_hash(embedded_copy):
    made = run_cli("token", "create", "site", "--scope", "write", home=embedded_copy, check=True)
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("rsk_") and len(secret) > 40
    as_json = json.loads(run_cli("token", "create", "ro", "--json", home=embedded_copy, check=True).stdout)
    assert set(as_json) == {"name", "token", "scope"} and as_json["scope"] == "read"
    listed = run_cli("token", "list", "--json", home=embedded_copy, check=True).stdout
    assert {t["name"] for t in json.loads(listed)} == {"site", "ro"} and secret not in listed
    with Workspace(settings_for(embedded_copy)) as ws, ws.session() as s:
        stored = s.scalars(select(store.ApiToken.token_hash)).all()
    assert secret not in stored and all(len(h) == 64 for h in stored)
    assert "exists" in one_line_error(run_cli("token", "create", "site", home=embedded_copy))
    assert "scope" in run_cli("token", "create", "x", "--scope", "root", home=embedded_copy).stderr
    run_cli("token", "revoke", "site", home=embedded_copy, check=True)
    assert "no live token" in one_line_error(run_cli("token", "revoke", "site", home=embedded_copy))


def test_new_visitors_and_writes_are_rate_limited_with_retry_after(make_app, embedded_copy):
    """Finding: 200 users were created in 0.6 s, with no 429."""
    app = make_app()
    client = app.test_client()
    codes = []
    for _ in range(25):  # the default: 20 new visitors an hour per address
        codes.append(client.post("/start", data={"csrf_token": csrf_token(client.get("/").data)}).status_code)
    assert codes[:20] == [302] * 20 and codes[20:] == [429] * 5
    limited = client.post("/start", data={"csrf_token": csrf_token(client.get("/").data)})
    assert int(limited.headers["Retry-After"]) > 0
    # counters are shared by every app of this workspace (as by a server's processes): the 20 new
    # visitors above are spent, so this app allows more of them, and counts afresh
    strict = make_app(
        limit_api_writes="5 per year", limit_page_writes="3 per year", limit_new_visitors="50 per year"
    )
    c = strict.test_client()
    token = bearer(make_token(embedded_copy, "write", "busy"))
    answers = [
        c.post("/api/events", json={"user": f"u{n}", "item": TULIP}, headers=token).status_code
        for n in range(7)
    ]
    assert answers == [201] * 5 + [429] * 2
    other = bearer(make_token(embedded_copy, "write", "other"))  # counted per token
    assert c.post("/api/events", json={"user": "x", "item": TULIP}, headers=other).status_code == 201
    start(c)
    clicks = [
        c.post("/view", data={"csrf_token": csrf_token(c.get("/you").data), "item": TULIP}).status_code
        for _ in range(4)
    ]
    assert clicks == [302, 302, 302, 429]
    assert count(strict, store.User) <= 60  # nothing was made past the limits


def test_uploads_are_rate_limited(make_app, embedded_copy):
    app = make_app(limit_uploads="2 per year")
    client = app.test_client()
    token = bearer(make_token(embedded_copy, "read"))
    photo = (BUNDLED / TULIP).with_suffix(".jpg").read_bytes()
    codes = [
        client.post("/api/search", data={"image": (io.BytesIO(photo), "t.jpg", "image/jpeg")}, headers=token)
        for _ in range(3)
    ]
    assert [r.status_code for r in codes] == [200, 200, 429] and "Retry-After" in codes[2].headers


# -- "CSRF" --------------------------------------------------------------------------------------


def test_form_posts_need_the_csrf_token_and_our_origin(app, client):
    """Finding: any site could make a visitor's browser record events (302, stored)."""
    me = start(client)
    before = count(app)
    no_token = client.post("/view", data={"item": TULIP})
    assert no_token.status_code == 400 and b"CSRF" in no_token.data
    token = csrf_token(client.get("/you").data)
    foreign = client.post(
        "/view", data={"csrf_token": token, "item": TULIP}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    cross_site = client.post(
        "/view", data={"csrf_token": token, "item": TULIP}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross_site.status_code == 403
    stranger = create_app_client_without_cookie(app)
    assert stranger.post(
        "/view", data={"item": TULIP}, headers={"Origin": "https://evil.example"}
    ).status_code in (
        400,
        403,
    )
    assert stranger.post("/start", data={}).status_code == 400
    assert stranger.post("/search", data={}).status_code == 400
    assert count(app) == before and user_events(app, me) == 0
    same = client.post(
        "/view", data={"csrf_token": token, "item": TULIP}, headers={"Origin": "http://localhost"}
    )
    assert same.status_code == 302 and count(app) == before + 1


def create_app_client_without_cookie(app):
    return app.test_client(use_cookies=False)


# -- "Poisoning" ---------------------------------------------------------------------------------


def test_weights_are_bounded_and_no_answer_contains_nan_or_infinity(app, client, writer):
    """Finding: weight 1e308 was accepted; the API then answered "score": Infinity, and a user with
    two such events got no items."""
    for weight in (1e308, 101, -1, "1e308"):
        r = client.post("/api/events", json={"user": "p", "item": TULIP, "weight": weight}, headers=writer)
        assert r.status_code == 400, weight
    nan = client.post(
        "/api/events",
        data=f'{{"user": "p", "item": "{TULIP}", "weight": NaN}}',
        content_type="application/json",
        headers=writer,
    )
    assert nan.status_code == 400
    # rows written before the bound existed: they must not poison anything either
    with app.extensions["recsys"].workspace.session() as s, s.begin():
        user_id = s.execute(
            insert(store.User).values(key="legacy", created_at=store.utcnow()).returning(store.User.id)
        ).scalar_one()
        item_ids = store.item_ids(s, [TULIP, ROSE])
        for key in (TULIP, ROSE):
            s.execute(
                insert(store.Interaction).values(
                    user_id=user_id, item_id=item_ids[key], event="view", weight=1e308, ts=store.utcnow()
                )
            )
    for strategy in ("average", "popular"):
        r = client.get(f"/api/users/legacy/recommendations?k=10&strategy={strategy}", headers=writer)
        body = strict_json(r.data)
        assert r.status_code == 200 and len(body["items"]) == 10, strategy
    assert b"inf" not in client.get("/").data
    with pytest.raises(ValueError):
        app.json.dumps({"score": float("inf")})  # the app's JSON refuses, rather than send it


# -- "Idempotency keys are global" -----------------------------------------------------------------


def test_event_keys_are_per_user_and_a_changed_payload_is_a_conflict(app, client, writer):
    a = {"user": "alice", "item": TULIP, "event": "purchase", "event_key": "order-1001"}
    b = {"user": "bob", "item": ROSE, "event": "purchase", "event_key": "order-1001"}
    assert client.post("/api/events", json=a, headers=writer).status_code == 201
    bob = client.post("/api/events", json=b, headers=writer)
    assert bob.status_code == 201 and bob.get_json() == {"stored": 1, "duplicate": False}
    again = client.post("/api/events", json=a, headers=writer)
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    changed = client.post("/api/events", json={**a, "item": ROSE}, headers=writer)
    assert changed.status_code == 409 and "order-1001" in changed.get_json()["message"]
    assert "alice" not in json.dumps(client.post("/api/events", json=b, headers=writer).get_json())
    assert user_events(app, "alice") == 1 and user_events(app, "bob") == 1


# -- "Upload memory" -----------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _server_pid(port: int) -> int:
    """The pid listening on ``port`` (the test's `recsys serve`), from /proc."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            inode = fields[9]
    assert inode
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if any(os.readlink(fd) == f"socket:[{inode}]" for fd in (proc / "fd").iterdir()):
                    return int(proc.name)
            except OSError:
                continue
    raise AssertionError("no server process")


def _png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, format="PNG")
    return out.getvalue()


def test_sixteen_huge_uploads_at_once_do_not_blow_up_the_server(embedded_copy):
    """Finding: 16 concurrent 7,900 x 7,900 PNGs took the server from 0.76 to 2.7 GB, 6.5 s latency."""
    token = make_token(embedded_copy, "read")
    with running_server(embedded_copy, env={"RECSYS_LIMIT_UPLOADS": "1000 per minute"}) as url:
        port = int(url.rsplit(":", 1)[1])
        pid = _server_pid(port)
        results: dict[int, list] = {}

        def burst(side: int, n: int = 16) -> tuple[float, list]:
            data, answers, lock = _png(side), [], threading.Lock()

            def one() -> None:
                boundary = "x" * 16
                body = (
                    (
                        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
                        "Content-Type: image/png\r\n\r\n"
                    ).encode()
                    + data
                    + f"\r\n--{boundary}--\r\n".encode()
                )
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                started = time.perf_counter()
                conn.request(
                    "POST",
                    "/api/search?k=3",
                    body,
                    {"Content-Type": f"multipart/form-data; boundary={boundary}", **bearer(token)},
                )
                response = conn.getresponse()
                payload = response.read()
                with lock:
                    answers.append(
                        (
                            response.status,
                            time.perf_counter() - started,
                            response.getheader("Retry-After"),
                            payload,
                        )
                    )

            base, peak, done = _rss_mb(pid), [0.0], threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], _rss_mb(pid))
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample)
            sampler.start()
            threads = [threading.Thread(target=one) for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            done.set()
            sampler.join()
            return peak[0] - base, answers

        burst(64, 1)  # the model is loaded once, before anything is measured
        growth_huge, results[7900] = burst(7900)
        growth_under, results[3990] = burst(3990)  # 15.9 Mpx: under the cap, so decoded
    huge = results[7900]
    assert all(status == 413 for status, *_ in huge)
    assert all(b"16,000,000" in payload for *_, payload in huge)
    assert growth_huge < 100, growth_huge
    assert sorted(t for _, t, *_ in huge)[8] < 1.0
    under = results[3990]
    assert {status for status, *_ in under} <= {200, 503} and any(s == 200 for s, *_ in under)
    assert all(retry for status, _, retry, _ in under if status == 503)
    assert growth_under < 600, growth_under
    print(f"RSS growth: 16 x 7900^2 -> {growth_huge:.0f} MB; 16 x 3990^2 -> {growth_under:.0f} MB")


def test_an_undecodable_upload_says_415_and_a_bomb_413_with_our_limit(client, writer):
    """Finding: 415 with "error": "Bad Request"; a bomb answered 400 with Pillow's own limit."""
    junk = client.post(
        "/api/search", data={"image": (io.BytesIO(b"nope"), "a.jpg", "image/jpeg")}, headers=writer
    )
    assert junk.status_code == 415 and junk.get_json()["error"] == "Unsupported Media Type"
    assert junk.get_json()["status"] == 415
    bomb = client.post(
        "/api/search", data={"image": (io.BytesIO(_png(20000)), "b.png", "image/png")}, headers=writer
    )
    assert bomb.status_code == 413 and bomb.get_json()["error"] == "Request Entity Too Large"
    assert "16,000,000" in bomb.get_json()["message"] and "Pillow" not in bomb.get_json()["message"]


# -- "--debug", files, headers --------------------------------------------------------------------


def test_debug_and_demo_refuse_a_public_host_and_debug_has_no_console(embedded_copy):
    """Finding: --debug turned on the interactive console and passed any --host through."""
    for flag in ("--debug", "--demo"):
        refused = run_cli("serve", flag, "--host", "0.0.0.0", "--port", "9", home=embedded_copy, timeout=120)
        assert "loopback" in one_line_error(refused)
    with running_server(embedded_copy, "--debug") as url:
        for probe in ("/console", "/?__debugger__=yes&cmd=resource&f=debugger.js"):
            try:
                with urllib.request.urlopen(url + probe) as r:
                    body = r.read()
            except urllib.error.HTTPError as exc:
                body = exc.read()
            assert b"Werkzeug" not in body and b"debugger" not in body.lower()


@pytest.mark.skipif(ON_POSTGRES, reason="the database file is SQLite's")
def test_new_workspaces_and_their_secrets_are_private(tmp_path):
    """Finding: secret_key and recsys.db were created with mode 644."""
    home = tmp_path / "new-home"
    app = create_app({"RECSYS_SETTINGS": Settings(home=home)})
    app.extensions["recsys"].workspace.close()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "secret_key").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "recsys.db").stat().st_mode) == 0o600


def test_security_headers_on_every_answer_and_a_secure_cookie_on_request(make_app, client):
    """Finding: no CSP, nosniff, frame-ancestors or Referrer-Policy; no way to mark the cookie Secure."""
    for path in ("/", "/you", f"/items/{TULIP}", "/images/1", "/api/health", "/nowhere", "/static/style.css"):
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "same-origin"
    assert "Secure" not in make_app().test_client().get("/").headers["Set-Cookie"]
    secure = make_app(cookie_secure=True).test_client()
    cookie = secure.get("/").headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert Settings.from_env({"RECSYS_COOKIE_SECURE": "1"}).cookie_secure is True
    image = client.get("/images/1")
    assert image.headers["Content-Disposition"] == "inline; filename=1.jpg"
    assert b"onchange" not in client.get("/you").data  # no inline script for the CSP to block


# -- "500s" ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"at": "0001-01-01T00:00:00+01:00"},
        {"at": "9999-12-31T23:59:59Z"},
        {"at": 253402300800},
        {"at": "1969-12-31T23:59:59Z"},
        {"user": "bad\ud800surrogate"},
        {"user": "a\u202eb"},
        {"user": "zero\u200bwidth"},
        {"user": "   "},
        {"user": "x" * 256},
        {"event_key": "k\udfff"},
    ],
)
def test_hostile_event_fields_answer_400_not_500(client, writer, body):
    """Finding: OverflowError and UnicodeEncodeError answered 500."""
    payload = {"user": "ok", "item": TULIP, **body}
    raw = json.dumps(payload)  # \ud800 goes out as the escape JSON allows
    response = client.post("/api/events", data=raw, content_type="application/json", headers=writer)
    assert response.status_code == 400, response.get_json()
    assert response.is_json and response.get_json()["status"] == 400


def test_deep_or_huge_json_and_huge_ids_are_refused_cleanly(client, writer):
    """Finding: 100,000 nested [ (RecursionError) and /images/9223372036854775808 answered 500."""
    huge = client.post("/api/events", data="[" * 1_100_000, content_type="application/json", headers=writer)
    assert huge.status_code == 413 and huge.is_json  # over a batch's 1 MB
    deep = client.post("/api/events", data="[" * 100_000, content_type="application/json", headers=writer)
    assert deep.status_code == 400 and "deep" in deep.get_json()["message"]
    nested = client.post("/api/events", data="[" * 20_000, content_type="application/json", headers=writer)
    assert nested.status_code == 400 and "deep" in nested.get_json()["message"]
    not_json = client.post("/api/events", data="user=x", content_type="text/plain", headers=writer)
    assert not_json.status_code == 415 and not_json.is_json
    for path in ("/images/9223372036854775808", "/images/99999999999999999999999"):
        assert client.get(path).status_code == 404
    huge_k = client.get("/api/users/x/recommendations?k=99999999999999999999999", headers=writer)
    assert huge_k.status_code == 400


# -- "User keys" ---------------------------------------------------------------------------------


def test_one_user_key_rule_on_read_and_write(client, writer):
    """Finding: keys with / could not be read back; "  ana  " stripped on write, not on read;
    bidi overrides and zero-width characters were accepted."""
    for user in ("team/ana", "  ana  ", "Ame\u0301lie"):  # NFD e + combining accent
        assert (
            client.post("/api/events", json={"user": user, "item": TULIP}, headers=writer).status_code == 201
        )
    slash = client.get("/api/users/team/ana/recommendations?k=3", headers=writer)
    assert slash.status_code == 200 and slash.get_json()["history_size"] == 1
    assert slash.get_json()["user"] == "team/ana"
    for spelled in ("ana", "%20%20ana%20%20"):
        r = client.get(f"/api/users/{spelled}/recommendations?k=3", headers=writer)
        assert r.status_code == 200 and r.get_json()["user"] == "ana" and r.get_json()["history_size"] == 1
    nfc = client.get("/api/users/Am%C3%A9lie/recommendations?k=3", headers=writer)  # NFC é
    assert nfc.status_code == 200 and nfc.get_json()["history_size"] == 1
    for bad in ("a%E2%80%AEb", "zero%E2%80%8Bwidth"):
        assert client.get(f"/api/users/{bad}/recommendations", headers=writer).status_code == 400


def test_a_user_named_like_a_notice_is_never_shown_to_others(client, writer):
    """Finding: a user named "NOTICE: this site moved..." topped the public People list."""
    notice = "NOTICE: this site moved, log in at evil.example"
    for n in range(5):
        client.post("/api/events", json={"user": notice, "item": TULIP, "event_key": f"n{n}"}, headers=writer)
    assert b"NOTICE" not in client.get("/").data and b"NOTICE" not in client.get("/you").data


# -- "Noise" -------------------------------------------------------------------------------------


def test_quiet_start_and_an_access_log_that_names_each_request(embedded_copy, tmp_path):
    """Finding: TensorFlow/absl start-up lines (cuInit "CUDA error") printed twice; no access log."""
    demo = run_cli("demo", "--no-serve", "--quiet", home=tmp_path / "quiet", timeout=600)
    assert demo.returncode == 0, demo.stderr
    for noise in ("cuInit", "absl::InitializeLog", "oneDNN", "cuda"):
        assert noise not in demo.stderr + demo.stdout, noise
    with running_server(embedded_copy) as url:
        urllib.request.urlopen(f"{url}/?k=3").read()
        try:
            urllib.request.urlopen(f"{url}/images/99999")
        except urllib.error.HTTPError:
            pass
    log = last_server_log[0]
    assert "GET /?k=3 200" in log and "GET /images/99999 404" in log
    assert "cuInit" not in log and "absl" not in log


def test_a_500_logs_its_path_and_one_traceback(app, caplog):
    def boom():
        raise RuntimeError("kaboom")

    app.add_url_rule("/boom", view_func=boom)
    with caplog.at_level("INFO"):
        response = app.test_client().get("/boom?x=1")
    assert (
        response.status_code == 500 and b"kaboom" not in response.data and b"Traceback" not in response.data
    )
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "GET /boom" in errors[0].getMessage() and errors[0].exc_info
    assert "x=1" not in errors[0].getMessage()  # queries may carry tokens: never logged whole
    assert any("GET /boom?x=... 500" in r.getMessage() for r in caplog.records if r.name == "recsys.access")


# -- found by a security probe after the review -----------------------------------------------------


def _ico_around(png: bytes) -> bytes:
    """An .ico whose one entry is a PNG (Pillow decodes that PNG in full while opening the file)."""
    import struct

    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


def _saved(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def test_only_common_photo_formats_are_decoded(client, writer):
    """Probe: a DDS, BLP or SPIDER file answered 500; an .ico held an 88 Mpx PNG past the cap."""
    small = Image.new("RGB", (4, 4))
    exotic = {
        "dds": _saved(small, "DDS"),
        "ico-bomb": _ico_around(_png(9400)),
        "jpeg2000": _saved(Image.new("RGB", (64, 64)), "JPEG2000"),
        "spider": _saved(Image.new("F", (8, 8)), "SPIDER"),
        "truncated-png": _saved(small, "PNG")[:40],
    }
    for name, data in exotic.items():
        r = client.post(
            "/api/search", data={"image": (io.BytesIO(data), "x.png", "image/png")}, headers=writer
        )
        assert r.status_code == 415 and r.get_json()["status"] == 415, (name, r.status_code, r.get_json())


def test_an_integer_weight_too_big_for_a_float_is_a_400(client, writer):
    for weight in ("1" + "0" * 400, "-1" + "0" * 400):
        raw = f'{{"user": "u", "item": "{TULIP}", "weight": {weight}}}'
        r = client.post("/api/events", data=raw, content_type="application/json", headers=writer)
        assert r.status_code == 400 and r.is_json


def test_start_fresh_and_first_clicks_share_one_new_visitor_budget(make_app):
    """Probe: the 20-an-hour budget was counted twice, once per route (40 visitors)."""
    client = make_app(limit_new_visitors="3 per year").test_client()
    for _ in range(3):
        assert client.post("/start", data={"csrf_token": csrf_token(client.get("/").data)}).status_code == 302
    fresh = client.application.test_client()  # a second browser, same address
    first_click = fresh.post("/view", data={"csrf_token": csrf_token(fresh.get("/you").data), "item": TULIP})
    assert first_click.status_code == 429


def test_retry_after_is_only_on_refusals_and_says_when(make_app, client, writer):
    """Probe: a busy-upload 503 said Retry-After: 58 (the limiter's window); 201s carried it too."""
    ok = client.post("/api/events", json={"user": "u", "item": TULIP}, headers=writer)
    assert ok.status_code == 201 and "Retry-After" not in ok.headers
    assert not any(h.startswith("X-RateLimit") for h in ok.headers.keys())
    app = make_app(upload_decodes=1)
    slots = app.extensions["recsys_decodes"]
    photo = (BUNDLED / TULIP).with_suffix(".jpg").read_bytes()
    with slots.hold():  # the only decode slot is busy
        busy = app.test_client().post(
            "/api/search", data={"image": (io.BytesIO(photo), "t.jpg", "image/jpeg")}, headers=writer
        )
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"


def test_demo_mode_answers_loopback_host_names_only(make_app):
    """Probe: DNS rebinding could read a demo server's People list through another Host name."""
    demo = make_app(demo=True).test_client()
    assert demo.get("/", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert demo.get("/", headers={"Host": "localhost"}).status_code == 200
    assert demo.get("/", headers={"Host": "rebind.attacker.example:8000"}).status_code == 400
    assert demo.get("/users/crowd", headers={"Host": "rebind.attacker.example"}).status_code == 400
    redirect = demo.get("/images//1", headers={"Host": "127.0.0.1"})
    assert redirect.status_code == 404 and "Location" not in redirect.headers
    pinned = make_app(allowed_hosts="recs.example.com").test_client()
    assert pinned.get("/", headers={"Host": "recs.example.com"}).status_code == 200
    assert pinned.get("/", headers={"Host": "evil.example"}).status_code == 400


def test_the_server_refuses_a_huge_body_before_reading_it(embedded_copy):
    """Probe: waitress stored a 150 MB body on disk before the 8 MB limit answered 413."""
    import socket

    with running_server(embedded_copy) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                b"Content-Length: 157286400\r\n\r\n" + b"\0" * 65536
            )
            started = time.perf_counter()
            answer = sock.recv(200)
    assert answer.startswith(b"HTTP/1.1 413") and time.perf_counter() - started < 5


def test_a_new_workspace_makes_private_parent_folders_even_with_umask_0(tmp_path):
    """Probe: with umask 000 the parent folders of a new home were world-writable."""
    home = tmp_path / "a" / "b" / "home"
    old = os.umask(0)
    try:
        Workspace(Settings(home=home, db_url="sqlite://")).close()
    finally:
        os.umask(old)
    for folder in (home, home.parent, home.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_nul_and_unavailable_strategies_are_400_not_500(client, writer):
    """Probe: /items/%00 would reach PostgreSQL (500); /view with an untrained strategy led to a 400 page."""
    assert client.get("/items/a%00b").status_code == 400
    assert client.get("/api/items/a%00b/similar", headers=writer).status_code == 400
    start(client)
    form = {"csrf_token": csrf_token(client.get("/you").data), "item": TULIP, "strategy": "two-tower"}
    assert client.post("/view", data=form).status_code == 400
    assert b"two-tower" not in client.get("/you").data  # the switch lists what can be served


def test_the_quick_path_for_ascii_keys_decides_as_the_full_check_does():
    """Printable ASCII skips the look at each character: every ASCII character, alone, between
    others and at either end, is accepted or refused exactly as the full check decides."""
    from recsys import keys
    from recsys.errors import RecsysError

    def full(key: str) -> bool:
        try:
            keys._check_characters(key, "key")
            keys.check_key(key.replace("\x00", "x"), "key", 512)  # its length and path rules
        except RecsysError:
            return False
        return True

    def quick(key: str) -> bool:
        try:
            keys.user_key(key)
            keys.item_key(key)
            store.check_text(key, "key")
        except RecsysError:
            return False
        return True

    for code in range(128):
        c = chr(code)
        for key in (c, f"a{c}b", f"{c}ab", f"ab{c}", f"a/{c}"):
            if key.strip() == key:  # keys are trimmed before the check
                assert quick(key) == full(key), repr(key)
