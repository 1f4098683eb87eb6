"""End to end in real headless Chromium against `recsys serve` (waitress) on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from recsys.workspace import Workspace
from tests.conftest import BUNDLED, ROOT, cli_env, settings_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("RECSYS_ARTIFACTS", ROOT / "artifacts"))


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(embedded_copy):
    from recsys.recommend import Recommender

    # Make the cold-start grid a mix with tulips a minority: 8 popular non-tulips, then the newest.
    with Workspace(settings_for(embedded_copy)) as ws:
        rec = Recommender(ws, log=None)
        for label in ("daisy", "dandelion", "rose", "sunflower"):
            for f in sorted((BUNDLED / label).glob("*.jpg"))[:2]:
                rec.record("crowd", f"{label}/{f.stem}")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "serve", "--home", str(embedded_copy), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(embedded_copy),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"server died:\n{proc.stdout.read()}") from None
            time.sleep(0.3)
    else:
        proc.kill()
        raise AssertionError("server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


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
