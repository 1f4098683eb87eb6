"""kill -9 in the middle of ingest and of training leaves a usable workspace; the re-run completes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from sqlalchemy import func, insert, select

from recsys import store
from recsys.index import ItemIndex
from recsys.workspace import Workspace
from tests.conftest import BUNDLED, cli_env, copy_home, db_rows, save_figures, settings_for


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


def _items(home: Path) -> int:
    if not (home / "images").exists():  # not started yet: do not race the job's own migration
        return 0
    try:
        return db_rows(home, "SELECT count(*) FROM items")[0][0]
    except Exception:  # noqa: BLE001 - the schema is not there yet
        return 0


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
    _kill_when(cli, home, lambda _: _items(home) > 0)  # once the first batch is committed
    items_at_kill = db_rows(home, "SELECT count(*) FROM items")[0][0]
    leftovers_at_kill = len(list(images.rglob(".*.tmp")))
    rerun = subprocess.run(cli, capture_output=True, text=True, timeout=300, env=cli_env(home))
    assert rerun.returncode == 0, rerun.stderr
    assert db_rows(home, "SELECT count(*), count(DISTINCT key) FROM items") == [(1000, 1000)]
    missing = [p for (p,) in db_rows(home, "SELECT image_path FROM items") if not (images / p).is_file()]
    assert missing == []
    assert not list(images.rglob(".*.tmp"))  # a half-written image is never renamed into place
    again = subprocess.run(cli, capture_output=True, text=True, timeout=300, env=cli_env(home))
    assert "0 new item(s), 1000 already present" in again.stdout
    save_figures(
        "fault-ingest",
        {
            "items_at_kill": items_at_kill,
            "temporaries_at_kill": leftovers_at_kill,
            "items_after_rerun": 1000,
            "duplicated": 0,
            "missing_image_files": len(missing),
        },
    )


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
    output = _kill_when(train, home, lambda lines: any(line.startswith("epoch 1/") for line in lines))
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
    save_figures(
        "fault-train",
        {
            "epochs_logged_before_kill": sum(line.startswith("epoch ") for line in output),
            "versions_after_kill": 0,
            "versions_after_rerun": 1,
        },
    )


def _add_synthetic_items(home: Path, n: int) -> int:
    """``n`` extra embedded items (noisy copies of the real vectors), so an index build takes a while."""
    with Workspace(settings_for(home)) as ws, ws.session() as s, s.begin():
        ids, matrix = store.load_embeddings(s, "efficientnet-lite0")
        image = s.scalar(select(store.Item.image_path).where(store.Item.id == int(ids[0])))
        rng = np.random.default_rng(0)
        for start in range(0, n, 5_000):
            count = min(5_000, n - start)
            items = [
                {"key": f"synthetic/{start + i}", "image_path": image, "label": "synthetic"}
                for i in range(count)
            ]
            s.execute(insert(store.Item), items)
            new_ids = s.scalars(
                select(store.Item.id).where(store.Item.key.in_([it["key"] for it in items]))
            ).all()
            vectors = matrix[rng.integers(0, len(matrix), count)] + rng.normal(
                0, 0.02, (count, matrix.shape[1])
            )
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            store.write_embeddings(s, "efficientnet-lite0", new_ids, vectors)
        return s.scalar(select(func.count()).select_from(store.Embedding))


def test_kill_while_the_index_file_is_written_keeps_the_old_index_then_rerun_builds_it(embedded_copy):
    home = embedded_copy
    base = [sys.executable, "-m", "recsys.cli"]
    subprocess.run([*base, "index", "--home", str(home)], check=True, capture_output=True, env=cli_env(home))
    total = _add_synthetic_items(home, 20_000)
    indexes = home / "indexes"
    build = [*base, "index", "--index", "HNSW32", "--home", str(home)]
    # the moment the new index starts going to disk: the most dangerous point for the old one
    _kill_when(build, home, lambda _: any(indexes.glob(".*.tmp")), timeout=600)
    assert list(indexes.glob(".*.tmp")), "killed mid-write: its temporary file is left behind"
    old = ItemIndex.load(indexes, "efficientnet-lite0")
    assert old is not None and old.meta.count == 200  # the previous index, whole
    doctor = {f["check"]: f for f in json.loads(run_doctor(home).stdout)}
    assert "stale-add" in doctor["index"]["detail"] and not doctor["leftovers"]["ok"]
    # a query brings the old index up to date by adding the new items (and clears the leftover)
    served = subprocess.run(
        [*base, "similar", "rose/" + sorted((BUNDLED / "rose").glob("*.jpg"))[0].stem, "--home", str(home)],
        capture_output=True,
        text=True,
        env=cli_env(home),
    )
    assert served.returncode == 0, served.stderr  # the workspace still answers
    db_ids = np.array(sorted(i for (i,) in db_rows(home, "SELECT item_id FROM embeddings")))
    updated = ItemIndex.load(indexes, "efficientnet-lite0")
    np.testing.assert_array_equal(updated.ids, db_ids)
    assert updated.meta.factory == old.meta.factory and not list(indexes.glob(".*.tmp"))
    rerun = subprocess.run(build, capture_output=True, text=True, timeout=600, env=cli_env(home))
    assert rerun.returncode == 0, rerun.stderr
    assert not list(indexes.glob(".*.tmp"))
    rebuilt = ItemIndex.load(indexes, "efficientnet-lite0")
    assert rebuilt.meta.factory == "HNSW32" and rebuilt.meta.count == total == 20_200
    np.testing.assert_array_equal(rebuilt.ids, db_ids)  # every item once, none missing
    assert rebuilt.status(db_ids, "efficientnet-lite0").state == "fresh"
    doctor = {f["check"]: f for f in json.loads(run_doctor(home).stdout)}
    assert doctor["index"]["ok"] and doctor["leftovers"]["ok"]
    save_figures(
        "fault-index",
        {
            "old_index_items_after_kill": old.meta.count,
            "items_in_db": len(db_ids),
            "rebuilt_index_items": rebuilt.meta.count,
            "missing": 0,
            "duplicated": 0,
        },
    )


def run_doctor(home: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "recsys.cli", "doctor", "--json", "--home", str(home)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=cli_env(home))
