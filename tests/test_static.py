"""`recsys export-static`: a site that recommends in the browser, opened from disk, offline."""

from __future__ import annotations

import json
import os

import numpy as np

from recsys.export import StaticOptions, dequantise, export_static, quantise
from recsys.recommend import Recommender
from recsys.workspace import Workspace
from tests.conftest import ARTIFACTS, one_line_error, run_cli, settings_for
from tests.test_browser import _crowd, chromium, pictures


def test_quantisation_round_trips_within_half_a_step():
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(50, 16)).astype(np.float32)
    raw, scale = quantise(matrix, "int8")
    assert len(raw) == 50 * 16
    back = dequantise(raw, "int8", 16, scale)
    assert np.all(np.abs(back - matrix) <= np.asarray(scale) / 2 + 1e-6)
    raw16, none = quantise(matrix, "float16")
    assert none is None and np.allclose(dequantise(raw16, "float16", 16, None), matrix, atol=2e-3)


def test_the_exported_page_works_from_disk_offline_and_follows_three_tulips(embedded_copy, tmp_path):
    _crowd(embedded_copy)
    site = tmp_path / "site"
    out = run_cli("export-static", str(site), "--json", "--quiet", home=embedded_copy, check=True)
    report = json.loads(out.stdout)
    assert report["items"] == 200 and report["quantise"] == "int8" and report["dim"] == 1280
    assert report["vector_bytes"] == 200 * 1280
    assert {p.name for p in site.iterdir()} >= {
        "index.html",
        "recsys-static.js",
        "items.js",
        "vectors.js",
        "thumbs",
    }
    assert len(list((site / "thumbs").glob("*.jpg"))) == 200

    requests: list[str] = []
    with chromium() as page:
        page.on("request", lambda r: requests.append(r.url))
        page.goto((site / "index.html").as_uri())
        page.wait_for_selector("#recommendations figure")
        grid = page.locator("#recommendations figure")
        assert grid.count() == 12
        before = page.locator('#recommendations figure[data-label="tulip"]').count()
        assert before < 6, "the starting grid should not already be tulips"
        clicked = []
        for _ in range(3):
            card = page.locator('#recommendations figure[data-label="tulip"]').first
            clicked.append(card.get_attribute("data-key"))
            card.locator("button.pick").click()
            page.wait_for_function(f"document.querySelectorAll('#history a').length === {len(clicked)}")
        tulips = page.locator('#recommendations figure[data-label="tulip"]').count()
        history = page.locator("#history a")
        keys = [history.nth(i).get_attribute("data-key") for i in range(history.count())]
        because = page.locator("#recommendations .because").count()
        page.wait_for_timeout(300)
        shown, loaded = pictures(page)
        page.screenshot(path=str(ARTIFACTS / "static-grid.png"), full_page=True)
        # the history survives a reload (localStorage), and "similar items" run in the page too
        page.reload()
        page.wait_for_selector("#history a")
        kept = page.locator("#history a").count()
        page.goto(
            (site / "index.html").as_uri()
            + "#item="
            + page.locator("#history a").first.get_attribute("href")[6:]
        )
        page.wait_for_selector("#similar figure")
        similar_labels = [
            page.locator("#similar figure").nth(i).get_attribute("data-label") for i in range(12)
        ]
    assert keys == clicked[::-1]  # newest first
    assert tulips >= 8, tulips  # of 12: tulips dominate
    assert because == 12
    assert shown >= 15 and loaded == shown, (shown, loaded)
    assert kept == 3
    assert similar_labels.count("tulip") >= 6, similar_labels
    assert all(url.startswith("file://") for url in requests), [
        u for u in requests if not u.startswith("file")
    ]


def test_the_browser_profile_is_the_servers(embedded_copy, tmp_path):
    """Same history, same top items: the page's mean of viewed vectors is the server's average."""
    site = tmp_path / "site"
    with Workspace(settings_for(embedded_copy)) as ws:
        rec = Recommender(ws, use_index=False, log=None, impressions=None)
        export_static(rec, site, StaticOptions(quantise="float16"), progress=False)
        tulips = [i.item_id for i in rec.similar("tulip/" + _first("tulip"), 3)]
        history = [(i, "view", None, _now()) for i in tulips] + [(tulips[0], "like", None, _now())]
        server = [r.item_id for r in rec.recommend_for_history(history, 10, strategy="average").items]
    with chromium() as page:
        page.goto((site / "index.html").as_uri())
        page.wait_for_function("window.RecsysStatic !== undefined")
        events = [{"id": i, "event": e} for i, e, *_ in history]
        browser = page.evaluate("(h) => window.RecsysStatic.recommend(h, 10).items.map((x) => x.id)", events)
    assert len(set(browser) & set(server)) >= 9, (browser, server)


def test_exports_replace_an_earlier_one_and_never_touch_other_folders(embedded_copy, tmp_path):
    site = tmp_path / "site"
    run_cli("export-static", str(site), "--quiet", home=embedded_copy, check=True)
    (site / "stale.txt").write_text("from before")
    run_cli("export-static", str(site), "--quiet", "--pca", "64", home=embedded_copy, check=True)
    assert not (site / "stale.txt").exists() and '"dim":64' in (site / "items.js").read_text()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert "not an earlier export" in one_line_error(run_cli("export-static", str(mine), home=embedded_copy))
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    assert "--pca" in one_line_error(
        run_cli("export-static", str(tmp_path / "x"), "--pca", "5000", home=embedded_copy)
    )


def test_a_failed_export_leaves_nothing_behind(embedded_copy, tmp_path):
    site = tmp_path / "site"
    images = sorted((embedded_copy / "images").rglob("*.jpg"))
    os.unlink(images[len(images) // 2])  # one item's picture is gone: the export stops on it
    proc = run_cli("export-static", str(site), "--quiet", home=embedded_copy)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert not site.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".site")] == []


def _first(label: str) -> str:
    from tests.conftest import BUNDLED

    return sorted((BUNDLED / label).glob("*.jpg"))[0].stem


def _now():
    from recsys import store

    return store.utcnow()
