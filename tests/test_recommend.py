"""Recommendations from history on real SQLite with real Lite0 vectors of the bundled photos."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from sqlalchemy import delete, func, select

from recsys import store
from recsys.catalog import ingest
from recsys.embedders.runner import embed_missing
from recsys.errors import NotFound, RecsysError
from recsys.index import ItemIndex, choose_factory
from recsys.recommend import Recommender
from recsys.workspace import Workspace
from tests.conftest import BUNDLED, cli_env, one_line_error, run_cli, settings_for

LABELS = ("daisy", "dandelion", "rose", "sunflower", "tulip")


def keys(label: str, n: int, seed: int = 0) -> list[str]:
    files = sorted((BUNDLED / label).glob("*.jpg"))
    picked = np.random.default_rng(seed).choice(len(files), size=n, replace=False)
    return [f"{label}/{files[i].stem}" for i in picked]


@pytest.fixture
def ws(embedded_copy):
    with Workspace(settings_for(embedded_copy)) as workspace:
        yield workspace


def test_five_tulip_views_give_mostly_tulips_then_roses_show_at_once(ws):
    rec = Recommender(ws, log=None)
    for key in keys("tulip", 5):
        rec.record("ana", key)
    first = rec.recommend("ana", 10)
    assert not first.cold_start and first.history_size == 5
    assert sum(r.label == "tulip" for r in first.items) >= 8, [r.label for r in first.items]
    assert all(r.because and r.because.startswith("tulip/") for r in first.items)
    for key in keys("rose", 5):
        rec.record("ana", key)
    second = rec.recommend("ana", 10)  # same instance: no rebuild between the events
    roses = [r for r in second.items if r.label == "rose"]
    assert len(roses) >= 3
    assert sum(r.because.startswith("rose/") for r in roses) > len(roses) / 2


def test_a_warmed_recommender_describes_lists_without_querying_the_items(ws):
    """Serving warms every item's key, label and title once; a list then costs no item query
    (at 100,000 items that query ran on most requests), and an item added later is still found."""
    from sqlalchemy import event

    rec = Recommender(ws, log=None)
    for key in keys("tulip", 3):
        rec.record("ana", key)
    rec.record("bob", keys("rose", 1)[0])
    rec.recommend("bob", 3)  # vectors, index and catalogue loaded; three roses described
    rec.remember_items()
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(ws.engine, "before_cursor_execute", seen)
    try:
        listed = rec.recommend("ana", 10)
        history = rec.history("ana")
    finally:
        event.remove(ws.engine, "before_cursor_execute", seen)
    assert len(listed.items) == 10 and all(r.key and r.label for r in listed.items)
    assert len(history) == 3 and all(h.key.startswith("tulip/") for h in history)
    assert not [q for q in statements if "FROM items" in q], statements
    with ws.session() as s, s.begin():
        s.add(store.Item(key="late/arrival", image_path="x.jpg", label="late", title="Late"))
    late = ws.session().scalar(select(store.Item.id).where(store.Item.key == "late/arrival"))
    assert rec.descriptions.describe([(late, 1.0)])[0].key == "late/arrival"  # filled on a miss


def test_seen_items_are_never_returned_even_when_k_reaches_the_catalogue(ws):
    rec = Recommender(ws, log=None)
    seen = keys("daisy", 6) + keys("sunflower", 6)
    for key in seen:
        rec.record("bo", key, event="like")
    for k in (10, 100, 188, 500):
        items = rec.recommend("bo", k).items
        assert not set(seen) & {r.key for r in items}
        assert len(items) == min(k, 200 - len(seen))
        assert len({r.key for r in items}) == len(items)


def test_cold_start_gives_popular_then_newest_and_says_so(ws):
    rec = Recommender(ws, log=None)
    popular = keys("rose", 3)
    for n, key in enumerate(popular):
        for user in range(3 - n):
            rec.record(f"fan{user}", key)
    result = rec.recommend("newcomer", 5)
    assert result.cold_start and "popular" in result.notes[0]
    assert [r.key for r in result.items[:3]] == popular
    with pytest.raises(NotFound):
        rec.recommend("newcomer", 5, require_user=True)
    out = run_cli("recommend", "--user", "nobody", "-k", "3", home=ws.home, check=True).stdout
    assert "most popular" in out
    data = json.loads(run_cli("recommend", "--user", "nobody", "--json", home=ws.home, check=True).stdout)
    assert data["cold_start"] is True and len(data["items"]) == 10


def test_label_filters_and_diversify(ws):
    rec = Recommender(ws, log=None)
    for key in keys("tulip", 5):
        rec.record("cy", key)
    only_roses = rec.recommend("cy", 10, labels=["rose"]).items
    assert len(only_roses) == 10 and {r.label for r in only_roses} == {"rose"}
    no_tulips = rec.recommend("cy", 10, exclude_labels=["tulip"]).items
    assert "tulip" not in {r.label for r in no_tulips}
    plain = rec.recommend("cy", 10).items
    diverse = rec.recommend("cy", 10, diversify=True, mmr_lambda=0.3).items

    def mean_pairwise(items):
        space = rec.space()
        m = space.matrix[space.rows([r.item_id for r in items])]
        sims = m @ m.T
        return (sims.sum() - np.trace(sims)) / (len(m) * (len(m) - 1))

    assert mean_pairwise(diverse) < mean_pairwise(plain)
    with pytest.raises(RecsysError, match="lambda"):
        rec.recommend("cy", 10, diversify=True, mmr_lambda=1.5)


def test_half_life_favours_recent_events(ws):
    rec = Recommender(ws, log=None)
    for n, key in enumerate(keys("dandelion", 5)):
        rec.record("dee", key, at=f"2024-01-0{n + 1}T00:00:00Z")
    for n, key in enumerate(keys("sunflower", 5)):
        rec.record("dee", key, at=f"2024-03-0{n + 1}T00:00:00Z")
    even = rec.recommend("dee", 10).items
    recent = rec.recommend("dee", 10, half_life_days=7).items
    count = lambda items, lab: sum(r.label == lab for r in items)  # noqa: E731
    assert count(recent, "sunflower") > count(even, "sunflower")
    assert count(recent, "sunflower") >= 8


def test_similar_excludes_the_item_and_prefers_its_label(ws):
    rec = Recommender(ws, log=None)
    key = keys("sunflower", 1)[0]
    hits = rec.similar(key, 10)
    assert key not in [h.key for h in hits] and len(hits) == 10
    assert sum(h.label == "sunflower" for h in hits) >= 7


def test_index_is_persisted_and_staleness_is_detected(ws, tmp_path):
    import shutil

    shutil.rmtree(ws.settings.index_dir, ignore_errors=True)  # start from no index at all
    log = io.StringIO()
    rec = Recommender(ws, log=log)
    rec.similar(keys("rose", 1)[0], 3)
    assert "building" in log.getvalue()
    saved = ItemIndex.load(ws.settings.index_dir, rec.model)
    assert saved.meta.count == 200 and saved.meta.factory == "Flat" and len(saved.ids) == 200

    # a new item: the index gains it by add_with_ids, no rebuild
    extra = tmp_path / "new" / "tulip"
    extra.mkdir(parents=True)
    (extra / "fresh.jpg").write_bytes(next((BUNDLED / "tulip").glob("*.jpg")).read_bytes())
    ingest(ws, extra.parent, progress=False)
    embed_missing(ws, progress=False)
    log = io.StringIO()
    rec = Recommender(ws, log=log)
    assert rec.similar("tulip/fresh", 1)[0].score > 0.99
    assert "1 new item(s) not in the index): added them" in log.getvalue()
    assert ItemIndex.load(ws.settings.index_dir, rec.model).meta.count == 201

    # an item whose vector is gone: the index must be rebuilt, not used
    with ws.session() as s, s.begin():
        s.execute(delete(store.Embedding).where(store.Embedding.item_id == 1))
    status = run_cli("index", "--show", "--json", home=ws.home, check=True)
    assert json.loads(status.stdout)["status"] == "stale-rebuild"
    log = io.StringIO()
    rec = Recommender(ws, log=log)
    assert 1 not in {r.item_id for r in rec.similar("tulip/fresh", 200)}
    assert "no longer have embeddings" in log.getvalue() and "rebuilding" in log.getvalue()
    assert ItemIndex.load(ws.settings.index_dir, rec.model).meta.count == 200

    # a damaged file is never used
    index_path, _ = ItemIndex.paths(ws.settings.index_dir, rec.model)
    index_path.write_bytes(b"garbage")
    assert ItemIndex.load(ws.settings.index_dir, rec.model) is None
    log = io.StringIO()
    Recommender(ws, log=log).similar("tulip/fresh", 3)
    assert "no usable" in log.getvalue()


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "PCA64,HNSW32,RFlat", "IVF8,Flat", "IVF8,PQ16x4"])
def test_index_types_agree_with_exact_search(ws, factory):
    result = run_cli("index", "--index", factory, "--json", home=ws.home, check=True)
    assert json.loads(result.stdout)["factory"] == factory
    approx = Recommender(ws, log=None)
    exact = Recommender(ws, use_index=False, log=None)
    key = keys("daisy", 1)[0]
    assert approx.space().index.meta.factory == factory
    overlap = len({h.key for h in approx.similar(key, 10)} & {h.key for h in exact.similar(key, 10)})
    assert overlap >= (10 if factory in ("Flat", "HNSW32", "PCA64,HNSW32,RFlat") else 5)


@pytest.mark.parametrize(
    "factory", ["Flat", "HNSW32", "PCA48,HNSW32,RFlat", "IVF8,Flat", "IVF8,PQ16x4", "PQ16x4"]
)
def test_an_index_leaves_excluded_items_out_while_it_searches(factory):
    """Excluded ids never come back; the rest are the exact search's where the index is exact, and
    mostly those the index finds searching past the excluded where it is not (PQ16x4: no selector
    reaches it, so it does search past them)."""
    rng = np.random.default_rng(3)
    cluster = rng.integers(0, 8, 2000)
    matrix = (rng.normal(size=(8, 64))[cluster] + 0.3 * rng.normal(size=(2000, 64))).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    ids = rng.permutation(np.arange(10, 10 + 2000) * 7)  # ids in no particular order
    index = ItemIndex.build(ids, matrix, model="m", factory=factory)
    history = np.flatnonzero(cluster == 0)[:40]  # a user who viewed 40 items of one kind
    query = matrix[history].mean(axis=0)
    excluded = set(ids[history].tolist()) | {123456789}  # and an id the index does not have
    scores, found = index.search(query, 10, excluded)
    assert not set(found[0].tolist()) & excluded and (found[0] >= 0).all()
    assert np.all(np.diff(scores[0]) <= 1e-6)  # best first
    if factory in ("Flat", "HNSW32", "IVF8,Flat"):
        exact = matrix @ query
        exact[history] = -np.inf
        assert set(found[0].tolist()) == set(ids[np.argsort(-exact)[:10]].tolist())
    else:
        _, wide = index.search(query, 10 + len(excluded) + 10)
        past = [i for i in wide[0].tolist() if i not in excluded][:10]
        assert len(set(found[0].tolist()) & set(past)) >= 6


def test_auto_index_choice():
    assert choose_factory(1_000, 1280) == "Flat"
    assert choose_factory(10_000, 1280) == "PCA256,HNSW32,RFlat" == choose_factory(200_000, 1280)
    assert choose_factory(10_000, 64) == "HNSW32"
    assert "PQ" in choose_factory(1_000_000, 1280, memory_budget_gb=4)
    assert "PQ" in choose_factory(10_000_000, 1280, memory_budget_gb=4)


def test_bad_index_strings_are_one_line_errors(ws):
    assert "NotAnIndex" in one_line_error(run_cli("index", "--index", "NotAnIndex", home=ws.home))
    assert "needs at least" in one_line_error(run_cli("index", "--index", "IVF4096,Flat", home=ws.home))
    line = one_line_error(run_cli("index", "--index", "IVF8,PQ16", home=ws.home))
    assert "cannot be trained on 200 items" in line


def test_bulk_csv_import_keeps_valid_rows_and_reports_bad_ones(ws, tmp_path):
    good = keys("rose", 3)
    csv = tmp_path / "events.csv"
    csv.write_text(
        "user,item,event,timestamp,weight\n"
        f"u1,{good[0]},view,2024-05-01T10:00:00Z,\n"
        f"u1,{good[1]},like,1714557600,\n"
        "u2,no/such-item,view,2024-05-01T10:00:00Z,\n"
        f"u2,{good[2]},stare,2024-05-01T10:00:00Z,\n"
        f"u3,{good[2]},view,yesterday-ish,\n"
        f",{good[2]},view,,\n"
        f"u4,{good[2]},purchase,2024-05-02,-3\n"
        f"u5,{good[2]},purchase,2024-05-02,2.5\n"
    )
    proc = run_cli("record", "--csv", str(csv), home=ws.home)
    assert proc.returncode == 0, proc.stderr
    assert "stored 3 event(s)" in proc.stdout
    rejected = [ln for ln in proc.stderr.splitlines() if ln.startswith("rejected ")]
    assert [ln.split(":")[1] for ln in rejected] == ["4", "5", "6", "7", "8"]
    assert "unknown item 'no/such-item'" in rejected[0]
    with ws.session() as s:
        assert s.scalar(select(func.count()).select_from(store.Interaction)) == 3
        assert s.scalar(select(func.count()).select_from(store.User)) == 2
    all_bad = tmp_path / "bad.csv"
    all_bad.write_text("user,item,event,timestamp\nu9,nothing,view,\n")
    assert "no event could be stored" in one_line_error(
        run_cli("record", "--csv", str(all_bad), home=ws.home)
    )
    no_cols = tmp_path / "cols.csv"
    no_cols.write_text("who,what\n1,2\n")
    assert "cols.csv" in one_line_error(run_cli("record", "--csv", str(no_cols), home=ws.home))


def test_record_cli_single_event_and_errors(ws):
    key = keys("daisy", 1)[0]
    ok = run_cli(
        "record",
        "--user",
        "zed",
        "--item",
        key,
        "--event",
        "like",
        "--at",
        "2024-01-01T00:00:00",
        "--json",
        home=ws.home,
        check=True,
    )
    assert json.loads(ok.stdout)["stored"] == 1
    assert "'nope'" in one_line_error(run_cli("record", "--user", "zed", "--item", "nope", home=ws.home))
    assert "unknown event" in one_line_error(
        run_cli("record", "--user", "zed", "--item", key, "--event", "smell", home=ws.home)
    )
    assert "timestamp" in one_line_error(
        run_cli("record", "--user", "zed", "--item", key, "--at", "tomorrow", home=ws.home)
    )
    again = run_cli("record", "--user", "zed", "--item", key, "--event-key", "k1", home=ws.home, check=True)
    dup = run_cli("record", "--user", "zed", "--item", key, "--event-key", "k1", home=ws.home, check=True)
    assert "stored 1" in again.stdout and "1 duplicate" in dup.stdout


def test_concurrent_record_from_8_processes_loses_no_event(ws):
    import subprocess
    import sys

    item_keys = keys("tulip", 10) + keys("daisy", 10)
    script = (
        "import sys\n"
        "from recsys.cli import cli\n"
        "p, home = int(sys.argv[1]), sys.argv[2]\n"
        "keys = sys.argv[3:]\n"
        "for i in range(40):\n"
        "    args = ['record', '--user', f'p{p}', '--item', keys[i % len(keys)],\n"
        "            '--at', f'2024-01-01T00:00:{i:02d}Z', '--home', home]\n"
        "    cli.main(args, standalone_mode=False)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(p), str(ws.home), *item_keys],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(ws.home),
        )
        for p in range(8)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    with ws.session() as s:
        per_user = dict(
            s.execute(
                select(store.User.key, func.count())
                .join(store.Interaction, store.Interaction.user_id == store.User.id)
                .group_by(store.User.key)
            ).all()
        )
    assert per_user == {f"p{p}": 40 for p in range(8)}


def test_cluster_command_stores_and_shows_clusters(ws):
    run_cli("cluster", "-k", "5", home=ws.home, check=True)
    with ws.session() as s:
        assert s.scalar(select(func.count()).where(store.Item.cluster.is_not(None))) == 200
    shown = json.loads(run_cli("cluster", "--show", "--json", home=ws.home, check=True).stdout)
    assert len(shown) == 5 and sum(c["size"] for c in shown) == 200
    assert np.mean([c["purity"] for c in shown]) > 0.5  # chance is 0.2
    table = run_cli("cluster", "--show", home=ws.home, check=True).stdout
    assert table.splitlines()[0].split() == ["cluster", "size", "purity", "labels"]
    assert "between 1 and 200" in one_line_error(run_cli("cluster", "-k", "999", home=ws.home))


def test_centring_gives_unit_vectors_and_leaves_a_vector_at_the_centre_as_it_was():
    from recsys.space import center_and_normalise

    rng = np.random.default_rng(0)
    raw = rng.random((50, 8), dtype=np.float32)
    center = raw.mean(axis=0)
    raw[7] = center  # nothing left after centring: no direction to scale to length 1
    out = center_and_normalise(raw, center)
    assert out.dtype == np.float32 and out.shape == raw.shape
    others = np.delete(np.arange(50), 7)
    np.testing.assert_allclose(np.linalg.norm(out[others], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        out[others],
        (raw - center)[others] / np.linalg.norm((raw - center)[others], axis=1)[:, None],
        atol=1e-6,
    )
    np.testing.assert_array_equal(out[7], raw[7])
    np.testing.assert_allclose(center_and_normalise(raw[3], center), out[3], atol=1e-7)  # one query
    assert not np.shares_memory(out, raw)


def test_every_items_info_is_looked_up_once_per_recommender(tmp_path):
    """A forked worker inherits what its parent remembered: warming it up again costs no query."""
    from sqlalchemy import event

    with Workspace(settings_for(tmp_path / "home")) as ws:
        with ws.session() as s, s.begin():
            store.insert_ignoring_duplicates(s, store.Item, [{"key": "a/1", "image_path": "a/1.jpg"}])
        rec = Recommender(ws, log=None)
        statements: list[str] = []
        event.listen(ws.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        rec.remember_items()
        first = len(statements)
        rec.remember_items()
        assert first >= 1 and len(statements) == first
        assert set(rec.known.items) == {"a/1"}
