"""kill -9 in the middle of ingest and of training leaves a usable workspace; the re-run completes."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import BUNDLED


def _kill_when(cmd: list[str], ready, timeout: float = 240) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the job finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _rows(db: Path, sql: str):
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql).fetchall()


def test_kill_during_ingest_then_rerun_stores_everything_once(tmp_path):
    # 1,000 photos (the bundled 200 under five names each), so the job runs long enough to be killed
    catalog = tmp_path / "catalog"
    for photo in BUNDLED.rglob("*.jpg"):
        (catalog / photo.parent.name).mkdir(parents=True, exist_ok=True)
        for n in range(5):
            shutil.copy(photo, catalog / photo.parent.name / f"{photo.stem}-{n}.jpg")
    home = tmp_path / "home"
    cli = [sys.executable, "-m", "recsys.cli", "ingest", str(catalog), "--home", str(home), "--quiet"]
    cli += ["--workers", "1"]
    images = home / "images"
    _kill_when(cli, lambda: images.exists() and any(images.iterdir()))
    rerun = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    db = home / "recsys.db"
    assert _rows(db, "SELECT count(*), count(DISTINCT key) FROM items") == [(1000, 1000)]
    missing = [p for (p,) in _rows(db, "SELECT image_path FROM items") if not (images / p).is_file()]
    assert missing == []
    assert not list(
        images.rglob("*.tmp")
    )  # a half-written image was never renamed into place... or was removed
    again = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert "0 new item(s), 1000 already present" in again.stdout


def test_kill_during_training_then_rerun_makes_one_clean_version(tmp_path, embedded_home):
    home = tmp_path / "home"
    shutil.copytree(embedded_home, home)
    base = [sys.executable, "-m", "recsys.cli"]
    subprocess.run(
        [*base, "simulate", "--users", "150", "--events-per-user", "20", "--quiet", "--home", str(home)],
        check=True,
        capture_output=True,
    )
    train = [*base, "train", "--epochs", "50", "--batch-size", "32", "--home", str(home)]
    # kill once TensorFlow is busy training (several seconds after start)
    started = time.time()
    _kill_when(train, lambda: time.time() - started > 12)
    db = home / "recsys.db"
    assert _rows(db, "SELECT count(*) FROM models") == [(0,)]
    assert not (home / "models" / "two-tower" / "v1").exists()
    done = subprocess.run(
        [*base, "train", "--epochs", "1", "--batch-size", "64", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert _rows(db, "SELECT version FROM models") == [(1,)]
    assert (home / "models" / "two-tower" / "v1" / "weights.weights.h5").is_file()
    rec = subprocess.run(
        [*base, "recommend", "--user", "sim-0-00001", "--strategy", "two-tower", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rec.returncode == 0, rec.stderr
