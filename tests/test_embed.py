"""Embed: real Lite0 vectors, resumable after kill -9, never duplicated."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from sqlalchemy import delete, func, select

from recsys import store
from recsys.catalog import ingest
from recsys.embedders.runner import embed_missing
from recsys.workspace import Workspace
from tests.conftest import BUNDLED, cli_env, db_rows, save_figures, settings_for


def _vectors(home):
    with Workspace(settings_for(home)) as ws, ws.session() as s:
        return store.load_embeddings(s, "efficientnet-lite0")


def test_vectors_are_unit_length_1280d_and_cluster_by_label(embedded_home):
    ids, matrix = _vectors(embedded_home)
    assert matrix.shape == (200, 1280) and matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    with Workspace(settings_for(embedded_home)) as ws, ws.session() as s:
        label = dict(s.execute(select(store.Item.id, store.Item.label)).all())
    labels = np.array([label[int(i)] for i in ids])
    same = labels[:, None] == labels[None, :]
    sims = matrix @ matrix.T
    assert sims[same].mean() > sims[~same].mean() + 0.05


def test_rerun_embeds_nothing_and_new_items_only(embedded_copy, tmp_path):
    with Workspace(settings_for(embedded_copy)) as ws:
        assert embed_missing(ws, progress=False).embedded == 0
        extra = tmp_path / "extra" / "rose"
        extra.mkdir(parents=True)
        shutil.copy(next((BUNDLED / "rose").glob("*.jpg")), extra / "copy-of-a-rose.jpg")
        assert ingest(ws, extra.parent, progress=False).added == 1
        report = embed_missing(ws, progress=False)
        assert report.embedded == 1
        with ws.session() as s:
            assert s.scalar(select(func.count()).select_from(store.Embedding)) == 201


def test_missing_image_file_is_reported_not_fatal(embedded_copy):
    with Workspace(settings_for(embedded_copy)) as ws:
        with ws.session() as s, s.begin():
            s.execute(delete(store.Embedding).where(store.Embedding.item_id <= 3))
            rel = s.scalar(select(store.Item.image_path).where(store.Item.id == 2))
        ws.image_file(rel).unlink()
        report = embed_missing(ws, progress=False)
    assert report.embedded == 2
    assert [i for i, _ in report.failed] == [2] and "missing" in report.failed[0][1]


def test_kill_minus_9_mid_run_then_resume_completes_without_duplicates(tmp_path, embedded_home, models_cache):
    home = tmp_path / "home"
    shutil.copytree(models_cache, home / "models")
    with Workspace(settings_for(home)) as ws:
        ingest(ws, BUNDLED, progress=False)
    cmd = [sys.executable, "-m", "recsys.cli", "embed", "--home", str(home), "--batch-size", "8", "--quiet"]
    env = cli_env(home)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 240
    count = "SELECT count(*) FROM embeddings"
    while time.time() < deadline and proc.poll() is None:
        if db_rows(home, count)[0][0] >= 24:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "embed finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    after_kill = db_rows(home, count)[0][0]
    assert 0 < after_kill < 200
    assert after_kill % 8 == 0  # only whole committed batches survive
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert db_rows(home, "SELECT count(*), count(DISTINCT item_id) FROM embeddings") == [(200, 200)]
    ids, resumed = _vectors(home)
    ref_ids, reference = _vectors(embedded_home)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(resumed, reference, atol=2e-4)
    save_figures(
        "fault-embed",
        {
            "vectors_at_kill": after_kill,
            "vectors_after_rerun": 200,
            "duplicated": 0,
            "max_abs_difference_vs_clean_run": float(np.abs(resumed - reference).max()),
        },
    )


def test_vectors_load_in_item_id_order_whatever_order_they_were_stored(tmp_path):
    """``load_embeddings`` sorts in numpy: SQLite's ORDER BY sorted the whole blobs in a temporary b-tree."""
    rng = np.random.default_rng(0)
    vectors = rng.random((6, 4), dtype=np.float32)
    stored_order = [3, 0, 5, 1, 4, 2]
    with Workspace(settings_for(tmp_path / "home")) as ws:
        with ws.session() as s, s.begin():
            rows = [{"key": f"k{n}", "image_path": f"x/{n}.jpg"} for n in range(6)]
            store.insert_ignoring_duplicates(s, store.Item, rows)
            ids = list(s.scalars(select(store.Item.id).order_by(store.Item.id)))
            store.write_embeddings(s, "m", [ids[n] for n in stored_order], vectors[stored_order])
        with ws.session() as s:
            loaded_ids, matrix = store.load_embeddings(s, "m")
    assert loaded_ids.tolist() == ids
    np.testing.assert_array_equal(matrix, vectors)
