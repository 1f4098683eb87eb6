"""kill -9 in the middle of ingest and of training leaves a usable workspace; the re-run completes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import BUNDLED, cli_env, copy_home, db_rows


def _kill_when(cmd: list[str], home: Path, ready, timeout: float = 240) -> list[str]:
    """Start ``cmd``, SIGKILL it as soon as ``ready(output lines so far)`` holds; return the lines."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(home)
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready(lines):
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the job finished before it could be killed:\n" + "".join(lines)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(timeout=10)
    return lines


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
    _kill_when(cli, home, lambda _: images.exists() and any(images.iterdir()))
    rerun = subprocess.run(cli, capture_output=True, text=True, timeout=300, env=cli_env(home))
    assert rerun.returncode == 0, rerun.stderr
    assert db_rows(home, "SELECT count(*), count(DISTINCT key) FROM items") == [(1000, 1000)]
    missing = [p for (p,) in db_rows(home, "SELECT image_path FROM items") if not (images / p).is_file()]
    assert missing == []
    assert not list(
        images.rglob("*.tmp")
    )  # a half-written image was never renamed into place... or was removed
    again = subprocess.run(cli, capture_output=True, text=True, timeout=300, env=cli_env(home))
    assert "0 new item(s), 1000 already present" in again.stdout


def test_kill_during_training_then_rerun_makes_one_clean_version(tmp_path, embedded_home):
    home = tmp_path / "home"
    copy_home(embedded_home, home)
    base = [sys.executable, "-m", "recsys.cli"]
    subprocess.run(
        [*base, "simulate", "--users", "150", "--events-per-user", "20", "--quiet", "--home", str(home)],
        check=True,
        capture_output=True,
        env=cli_env(home),
    )
    train = [*base, "train", "--epochs", "50", "--batch-size", "32", "--home", str(home)]
    # kill once TensorFlow is busy training: the first epoch has been logged, 49 are to come
    _kill_when(train, home, lambda lines: any(line.startswith("epoch 1:") for line in lines))
    assert db_rows(home, "SELECT count(*) FROM models") == [(0,)]
    assert not (home / "models" / "two-tower" / "v1").exists()
    done = subprocess.run(
        [*base, "train", "--epochs", "1", "--batch-size", "64", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(home),
    )
    assert done.returncode == 0, done.stderr
    assert db_rows(home, "SELECT version FROM models") == [(1,)]
    assert (home / "models" / "two-tower" / "v1" / "weights.weights.h5").is_file()
    rec = subprocess.run(
        [*base, "recommend", "--user", "sim-0-00001", "--strategy", "two-tower", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(home),
    )
    assert rec.returncode == 0, rec.stderr
