"""End to end in real headless Chromium against `recsys serve` (waitress) on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from recsys.workspace import Workspace
from tests.conftest import ARTIFACTS, BUNDLED, running_server, settings_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _ensure_chromium() -> None:
    """The test installs what it needs: Debian's chromium (root only), else the test is skipped."""
    if Path(CHROMIUM).exists():
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"],
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True,
        )
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")


@pytest.fixture
def server(embedded_copy):
    from recsys.recommend import Recommender

    # Make the cold-start grid a mix with tulips a minority: 8 popular non-tulips, then the newest.
    with Workspace(settings_for(embedded_copy)) as ws:
        rec = Recommender(ws, log=None)
        for label in ("daisy", "dandelion", "rose", "sunflower"):
            for f in sorted((BUNDLED / label).glob("*.jpg"))[:2]:
                rec.record("crowd", f"{label}/{f.stem}")
    with running_server(embedded_copy) as url:
        yield url


def test_start_fresh_click_three_tulips_and_the_grid_follows(server):
    _ensure_chromium()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(server)
        page.click("#start-fresh")
        page.wait_for_selector("#recommendations figure")
        first_grid = page.locator("#recommendations figure")
        before = page.locator('#recommendations figure[data-label="tulip"]').count()
        assert before < first_grid.count() / 2, "the cold-start grid should not already be tulips"
        clicked = []
        for _ in range(3):
            card = page.locator('#recommendations figure[data-label="tulip"]').first
            clicked.append(card.get_attribute("data-key"))
            with page.expect_navigation():
                card.locator("button.pick").click()
            page.wait_for_selector("#history")
        tulips = page.locator('#recommendations figure[data-label="tulip"]').count()
        history = page.locator("#history a")
        history_keys = [history.nth(i).get_attribute("data-key") for i in range(history.count())]
        # every card has a loaded picture
        widths = page.eval_on_selector_all("#recommendations img", "els => els.map(e => e.naturalWidth)")
        page.screenshot(path=str(ARTIFACTS / "browser-grid.png"), full_page=True)
        browser.close()
    assert sorted(history_keys) == sorted(clicked) and history_keys[0] == clicked[-1]  # newest first
    assert tulips >= 8, tulips  # of 12: tulips dominate
    assert all(w > 0 for w in widths)
