"""Online evaluation: impressions, A/B experiments, the online simulation and the admin dashboard.

Real workspaces of the bundled photos, the real CLI, the Flask app and, for the dashboard, a real
server in headless Chromium.
"""

from __future__ import annotations

import json
import math
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select

from recsys import experiments, store
from recsys.impressions import ImpressionLog, new_request_id
from recsys.recommend import Recommender
from recsys.workspace import Workspace
from tests.conftest import (
    ARTIFACTS,
    BUNDLED,
    bearer,
    csrf_token,
    make_token,
    one_line_error,
    run_cli,
    running_server,
    settings_for,
)
from tests.test_browser import chromium, pictures
from web import create_app

TULIPS = [f"tulip/{p.stem}" for p in sorted((BUNDLED / "tulip").glob("*.jpg"))]
ROSE = "rose/" + sorted((BUNDLED / "rose").glob("*.jpg"))[0].stem


def _experiment(name: str, arms: tuple[str, ...], split: tuple[float, ...]) -> experiments.Experiment:
    return experiments.Experiment(name, arms, split, store.utcnow())


# -- arms -------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [(50.0, 50.0), (20.0, 30.0, 50.0), (90.0, 10.0)])
def test_arms_are_stable_and_near_the_requested_split_over_10000_users(split):
    arms = ("popular", "average", "ease")[: len(split)]
    ab = _experiment("ab", arms, split)
    users = [f"user-{n}" for n in range(10_000)]
    assigned = [ab.arm(u) for u in users]
    again = _experiment("ab", arms, split)  # another process, another day: the same arms
    assert [again.arm(u) for u in users] == assigned
    for arm, share in zip(arms, split, strict=True):
        observed = 100 * assigned.count(arm) / len(users)
        sd = 100 * math.sqrt(share / 100 * (1 - share / 100) / len(users))
        assert abs(observed - share) < 4 * sd, (arm, observed, share)
    other = _experiment("another", arms, split)  # experiments are independent of each other
    same = sum(a == b for a, b in zip(assigned, (other.arm(u) for u in users), strict=True))
    expected = sum((s / 100) ** 2 for s in split) * len(users)
    assert abs(same - expected) < 0.05 * len(users)


def test_splits_and_names_are_checked():
    assert experiments.parse_split(None, 4) == (25.0, 25.0, 25.0, 25.0)
    assert experiments.parse_split("30,70", 2) == (30.0, 70.0)
    for bad in ("50", "50,60", "0,100", "a,b", "-10,110"):
        with pytest.raises(experiments.RecsysError):
            experiments.parse_split(bad, 2)


# -- statistics against hand-computed values ----------------------------------------------------


def _wilson(clicks: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = clicks / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_ctr_interval_difference_and_p_value_match_hand_computed_values():
    low, high = experiments.ctr_interval(30, 200)
    assert (low, high) == pytest.approx(_wilson(30, 200), abs=1e-9)
    assert (low, high) == pytest.approx((0.10714, 0.20606), abs=1e-5)  # from a textbook table
    assert experiments.ctr_interval(0, 0) == (0.0, 1.0)

    result = experiments.compare((60, 200), (30, 200))
    p1, p0 = 60 / 200, 30 / 200
    (l1, u1), (l0, u0) = _wilson(60, 200), _wilson(30, 200)
    newcombe = (  # Newcombe's hybrid score interval (method 10)
        p1 - p0 - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2),
        p1 - p0 + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2),
    )
    pooled = 90 / 400
    z = (p1 - p0) / math.sqrt(pooled * (1 - pooled) * (1 / 200 + 1 / 200))
    assert result["difference"] == pytest.approx(0.15)
    assert result["ci"] == pytest.approx(list(newcombe), abs=1e-9)
    assert result["p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    assert compare_no_data() == {"difference": None, "ci": None, "p_value": None}


def compare_no_data():
    return experiments.compare((0, 0), (3, 10))


# -- impressions and attribution ----------------------------------------------------------------


def _impressions(ws, **where) -> list:
    imp = store.Impression
    query = select(imp.request_id, imp.user_key, imp.item_id, imp.position, imp.strategy, imp.arm)
    for column, value in where.items():
        query = query.where(getattr(imp, column) == value)
    with ws.session() as s:
        return s.execute(query.order_by(imp.id)).all()


def test_a_click_carrying_a_request_id_is_attributed_to_its_impression(embedded_copy):
    with Workspace(settings_for(embedded_copy)) as ws:
        experiments.start(ws, "ab", ["popular", "average"])
        rec = Recommender(ws, log=None)
        rec.record("ana", TULIPS[0])
        first = rec.recommend("ana", 5)
        again = rec.recommend("ana", 5)  # the same list again: the same impression, the same id
        longer = rec.recommend("ana", 6)  # another list: another impression
        arm = first.arm
        assert first.experiment == "ab" and arm in ("popular", "average") and again.arm == arm
        assert first.request_id == again.request_id != longer.request_id and len(first.request_id) == 32
        rows = _impressions(ws, request_id=first.request_id)
        assert [r.position for r in rows] == [1, 2, 3, 4, 5]
        assert [r.item_id for r in rows] == [i.item_id for i in first.items]
        assert {(r.user_key, r.arm) for r in rows} == {("ana", arm)}

        third = first.items[2]
        rec.record("ana", third.key, "click", request_id=first.request_id)  # counts
        rec.record("ana", ROSE, "click", request_id=first.request_id)  # not in that list
        rec.record("bob", first.items[0].key, "click", request_id=first.request_id)  # not bob's list
        rec.record("ana", first.items[1].key, "click")  # no request id: organic
        counts = experiments.arm_counts(ws, "ab")[arm]
        assert counts == {"users": 1, "impressions": 6, "clicks": 1}  # (person, item) pairs shown
        report = experiments.report(ws, "ab")
        row = next(a for a in report["arms"] if a["strategy"] == arm)
        assert row["ctr"] == pytest.approx(1 / 6)
        with pytest.raises(experiments.RecsysError, match="request_id"):
            rec.record("ana", third.key, "click", request_id="not an id!")


def test_the_api_and_the_page_return_request_ids_and_attribute_clicks(embedded_copy):
    app = create_app({"RECSYS_SETTINGS": settings_for(embedded_copy), "TESTING": True})
    try:
        client = app.test_client()
        writer = bearer(make_token(embedded_copy, "write"))
        client.post("/api/events", json={"user": "cleo", "item": TULIPS[0]}, headers=writer)
        listed = client.get("/api/users/cleo/recommendations?k=4", headers=writer).get_json()
        assert len(listed["request_id"]) == 32 and listed["experiment"] is None
        click = {"user": "cleo", "item": listed["items"][0]["key"], "event": "click"}
        ok = client.post("/api/events", json={**click, "request_id": listed["request_id"]}, headers=writer)
        assert ok.status_code == 201
        for bad in ("x", "a" * 33, "../../etc", 12345678, None.__class__.__name__ + " !"):
            refused = client.post("/api/events", json={**click, "request_id": bad}, headers=writer)
            assert refused.status_code == 400 and "request_id" in refused.get_json()["message"], bad

        # the page: the grid's forms carry the list's request id, and a click sends it back
        client.post("/start", data={"csrf_token": csrf_token(client.get("/").data)})
        page = client.get("/you").data.decode()
        request_id = page.split('name="request_id" value="')[1].split('"')[0]
        item = page.split('name="item" value="')[1].split('"')[0]
        token = csrf_token(page)
        posted = client.post("/view", data={"csrf_token": token, "item": item, "request_id": request_id})
        assert posted.status_code == 302
        app.extensions["recsys"].recommender.impressions.flush()  # the server's log is batched
        ws = app.extensions["recsys"].workspace
        with ws.session() as s:
            attributed = s.scalar(
                select(func.count())
                .select_from(store.Interaction)
                .where(store.Interaction.request_id.in_([listed["request_id"], request_id]))
            )
        assert attributed == 2
        assert {r.request_id for r in _impressions(ws)} >= {listed["request_id"], request_id}
    finally:
        app.extensions["recsys"].workspace.close()


def test_the_background_log_commits_in_batches_without_losing_rows(workspace):
    from recsys.catalog import ingest
    from recsys.impressions import Shown

    ingest(workspace, BUNDLED / "rose", progress=False)
    with workspace.session() as s:
        ids = list(s.scalars(select(store.Item.id)))
    log = ImpressionLog(workspace, background=True, interval=0.05)
    for n in range(300):
        log.log(Shown(new_request_id(), f"u{n}", ids[:10], "average", None, None, store.utcnow()))
    deadline = store.utcnow() + timedelta(seconds=20)
    while len(_impressions(workspace)) < 3000 and store.utcnow() < deadline:
        time.sleep(0.05)  # the writer commits by itself every 0.05 s
    log.flush()
    assert len(_impressions(workspace)) == 3000 and log.dropped == 0


def test_impressions_written_in_one_statement_read_back_as_sqlalchemy_writes_them(workspace):
    """The bulk path (one JSON array on SQLite) stores the same values, types and clock as a plain
    SQLAlchemy insert of the same rows: nulls, integers, strings, and UTC timestamps."""
    from recsys.catalog import ingest
    from recsys.impressions import _INSERT, Shown

    ingest(workspace, BUNDLED / "rose", progress=False)
    with workspace.session() as s:
        ids = list(s.scalars(select(store.Item.id)))[:3]
    at = store.utcnow().replace(microsecond=123456)
    bulk = Shown("bulk0001", 'ana "q" é', ids, "average", None, None, at).rows()
    plain = Shown("plain001", None, ids[::-1], "popular", "exp 'a'", "two-tower", at).rows()
    with workspace.engine.begin() as conn:
        _INSERT.execute(conn, _INSERT.prepare(workspace.engine, bulk))
        conn.execute(insert(store.Impression), plain)
        _INSERT.execute(conn, _INSERT.prepare(workspace.engine, []))  # nothing to write: no error
    columns = _INSERT.columns
    with workspace.engine.connect() as conn:
        table = store.Impression.__table__
        stored = conn.execute(select(*(table.c[c] for c in columns)).order_by(table.c.id)).all()
        if conn.dialect.name == "sqlite":  # same storage classes and text, not only equal values
            kinds = conn.exec_driver_sql(
                "SELECT request_id, typeof(item_id), typeof(position), typeof(user_key), "
                "typeof(experiment), shown_at FROM impressions ORDER BY id"
            ).all()
            assert {k[1:5] for k in kinds if k[0] == "bulk0001"} == {("integer", "integer", "text", "null")}
            assert {k[5] for k in kinds} == {k[5] for k in kinds if k[0] == "plain001"}
    by_request = {}
    for row in stored:
        by_request.setdefault(row[0], []).append(dict(zip(columns, row, strict=True)))
    for written, rows in ((bulk, by_request["bulk0001"]), (plain, by_request["plain001"])):
        assert [{**r, "shown_at": store.as_utc(r["shown_at"])} for r in rows] == written


def test_old_impressions_are_pruned_and_recent_ones_kept(embedded_copy):
    with Workspace(settings_for(embedded_copy)) as ws:
        with ws.session() as s:
            item = s.scalar(select(store.Item.id))
        now = store.utcnow()
        rows = [
            {
                "request_id": f"req{n:08d}",
                "user_key": "ana",
                "item_id": item,
                "position": 1,
                "strategy": "average",
                "shown_at": now - timedelta(days=days),
            }
            for n, days in enumerate([200, 120, 91, 30, 1])
        ]
        with ws.engine.begin() as conn:
            conn.execute(insert(store.Impression), rows)
    out = run_cli("impressions", "prune", "--json", home=embedded_copy, check=True)
    assert json.loads(out.stdout) == {"deleted": 3, "older_than_days": 90.0}
    out = run_cli("impressions", "prune", "--older-than", "7", "--json", home=embedded_copy, check=True)
    assert json.loads(out.stdout)["deleted"] == 1
    assert "positive" in one_line_error(
        run_cli("impressions", "prune", "--older-than", "0", home=embedded_copy)
    )


# -- experiments, end to end through the CLI ----------------------------------------------------


def test_experiment_commands_refuse_bad_input_in_one_line(embedded_copy):
    def error(*args: str) -> str:
        return one_line_error(run_cli("experiment", *args, home=embedded_copy))

    assert "unknown strategy" in error("start", "x", "--strategies", "popular,nope")
    assert "at least two" in error("start", "x", "--strategies", "popular")
    assert "not auto" in error("start", "x", "--strategies", "auto,popular")
    assert "no trained model" in error("start", "x", "--strategies", "popular,ease")
    assert "shares for 2" in error("start", "x", "--strategies", "popular,average", "--split", "50,25,25")
    assert "name" in error("start", "bad name!", "--strategies", "popular,average")
    assert "unknown experiment" in error("report", "nothing")
    run_cli("experiment", "start", "one", "--strategies", "popular,average", home=embedded_copy, check=True)
    assert "is running" in error("start", "two", "--strategies", "popular,average")
    run_cli("experiment", "stop", "one", home=embedded_copy, check=True)
    assert "already exists" in error("start", "one", "--strategies", "popular,average")


def test_online_simulation_average_beats_popular_and_stopping_keeps_the_data(embedded_copy):
    home = embedded_copy
    run_cli("simulate", "--users", "40", "--events-per-user", "12", "--quiet", home=home, check=True)
    run_cli("experiment", "start", "ab", "--strategies", "popular,average", home=home, check=True)
    online = run_cli("simulate", "--online", "--users", "60", "--seed", "1", "--json", home=home, check=True)
    summary = json.loads(online.stdout)
    assert summary["lists"] == 300 and summary["experiment"] == "ab"
    assert set(summary["users_per_arm"]) == {"popular", "average"}
    report = json.loads(run_cli("experiment", "report", "ab", "--json", home=home, check=True).stdout)
    popular, average = report["arms"]
    assert (popular["strategy"], average["strategy"]) == ("popular", "average")
    assert popular["users"] + average["users"] == 60
    assert popular["impressions"] + average["impressions"] == summary["impressions"]
    assert popular["clicks"] + average["clicks"] == summary["clicks"]
    versus = report["comparison"]["treatments"][0]
    print(json.dumps(report["arms"]), versus)
    assert average["ctr"] > popular["ctr"] and versus["ci"][0] > 0, report

    text = run_cli("experiment", "report", "ab", home=home, check=True).stdout
    assert "average - popular" in text and "95% interval" in text
    run_cli("experiment", "stop", "ab", home=home, check=True)
    after = json.loads(run_cli("experiment", "report", "ab", "--json", home=home, check=True).stdout)
    assert after["arms"] == report["arms"] and after["experiment"]["running"] is False
    with Workspace(settings_for(home)) as ws:  # auto no longer serves arms
        result = Recommender(ws, log=None).recommend(f"online-1-{0:05d}", 3)
        assert result.experiment is None and result.arm is None


# -- the admin dashboard ------------------------------------------------------------------------

ADMIN_ROUTES = ["/admin", "/admin/overview.json", "/admin/plots/events.png", "/admin/plots/recall.png"]


def test_admin_refuses_read_and_write_tokens_and_anonymous_visitors_outside_demo(embedded_copy):
    app = create_app({"RECSYS_SETTINGS": settings_for(embedded_copy), "TESTING": True})
    demo = create_app({"RECSYS_SETTINGS": settings_for(embedded_copy), "RECSYS_DEMO": True, "TESTING": True})
    try:
        client = app.test_client()
        admin = bearer(make_token(embedded_copy, "admin"))
        for path in ADMIN_ROUTES:
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers=bearer("rsk_made-up")).status_code == 401, path
            for scope in ("read", "write"):
                assert client.get(path, headers=bearer(make_token(embedded_copy, scope))).status_code == 403
            assert client.get(path, headers=admin).status_code == 200, path
            assert demo.test_client().get(path).status_code == 200, path  # demo: loopback only
        assert client.get("/admin/plots/secrets.png", headers=admin).status_code == 404

        # signing in: a read token is refused, a forged or cross-site post too, an admin token works
        form = client.get("/admin/login")
        token = csrf_token(form.data)
        reader = make_token(embedded_copy, "read", "reader")
        assert client.post("/admin/login", data={"csrf_token": token, "token": reader}).status_code == 403
        assert client.post("/admin/login", data={"token": admin["Authorization"][7:]}).status_code == 400
        cross = client.post(
            "/admin/login",
            data={"csrf_token": token, "token": admin["Authorization"][7:]},
            headers={"Origin": "https://evil.example"},
        )
        assert cross.status_code == 403 and client.get("/admin").status_code == 401
        signed = client.post("/admin/login", data={"csrf_token": token, "token": admin["Authorization"][7:]})
        assert signed.status_code == 302 and client.get("/admin").status_code == 200
        # the session names the token and is re-checked: revoking it signs the browser out
        from recsys import tokens

        name = next(
            t.name for t in tokens.list_tokens(app.extensions["recsys"].workspace) if t.scope == "admin"
        )
        tokens.revoke(app.extensions["recsys"].workspace, name)
        app.extensions["recsys"].token_cache.clear()
        assert client.get("/admin").status_code == 401
    finally:
        app.extensions["recsys"].workspace.close()
        demo.extensions["recsys"].workspace.close()


def test_the_dashboard_shows_every_picture_in_headless_chromium(embedded_copy):
    from recsys import evaluate as ev
    from recsys import events, splits

    home = embedded_copy
    run_cli("simulate", "--users", "30", "--events-per-user", "10", "--quiet", home=home, check=True)
    with Workspace(settings_for(home)) as ws:
        rec = Recommender(ws, log=None)
        split = splits.temporal_split(events.load_history(ws), fraction=0.2)
        report = ev.evaluate(rec, split, ["popular", "average"], [5, 10, 20], bootstrap=50)
        ev.save(ws, report)
    run_cli("experiment", "start", "ab", "--strategies", "popular,average", home=home, check=True)
    run_cli("simulate", "--online", "--users", "10", "--sessions", "2", "--quiet", home=home, check=True)
    secret = make_token(home, "admin", "dashboard")
    with running_server(home) as url, chromium() as page:
        page.goto(f"{url}/admin")
        assert "sign in" in page.content()
        page.fill("input[name=token]", secret)
        with page.expect_navigation():
            page.click("form.login button")
        page.wait_for_selector("#doctor li")
        shown, loaded = pictures(page)
        text = page.inner_text("main")
        catalogue = page.inner_text("#catalogue")
        page.screenshot(path=str(ARTIFACTS / "browser-admin.png"), full_page=True)
    assert shown == 3 and loaded == 3, (shown, loaded)  # events, experiment CTR, recall@K
    assert "200 items" in catalogue and "200 labelled" in catalogue, catalogue
    for expected in ("efficientnet-lite0", "average − popular", "Evaluation", "schema"):
        assert expected in text, expected
