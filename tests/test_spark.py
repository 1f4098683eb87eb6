"""`recsys embed --engine spark`: Spark in local mode gives the same vectors as the local job."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from recsys import store
from recsys.catalog import ingest
from recsys.workspace import Workspace
from tests.conftest import (
    BUNDLED,
    ensure_system_package,
    one_line_error,
    run_cli,
    save_figures,
    settings_for,
)

pytest.importorskip("pyspark", reason="the spark extra is not installed")

SPARK = ("embed", "--engine", "spark", "--master", "local[2]", "--json", "--quiet")


def _vectors(home) -> dict[str, np.ndarray]:
    with Workspace(settings_for(home)) as ws, ws.session() as s:
        ids, matrix = store.load_embeddings(s, "efficientnet-lite0")
        keys = dict(s.execute(store.select(store.Item.id, store.Item.key)).all())
    return {keys[int(i)]: v for i, v in zip(ids, matrix, strict=True)}


def _max_abs_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() <= b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_spark_vectors_equal_the_local_ones_from_a_parquet_of_paths_and_from_the_catalogue(
    tmp_path, embedded_home, models_cache
):
    ensure_system_package("java", "default-jre-headless", "Spark")
    home = tmp_path / "home"
    shutil.copytree(models_cache, home / "models")
    with Workspace(settings_for(home)) as ws:
        ingest(ws, BUNDLED, progress=False)
    local = _vectors(embedded_home)
    photos = sorted(BUNDLED.rglob("*.jpg"))[::4]  # 50 originals, one per 4, outside the image store
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a picture")
    rows = [{"key": f"{p.parent.name}/{p.stem}", "url": str(p)} for p in photos]
    broken_key = "rose/" + sorted((BUNDLED / "rose").glob("*.jpg"))[1].stem
    rows += [{"key": broken_key, "url": str(broken)}, {"key": "no/such-item", "url": str(photos[0])}]
    pd.DataFrame(rows).to_parquet(tmp_path / "images.parquet")

    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"name": ["a"], "path": ["b"]}).to_parquet(bad)
    assert "needs a 'key' column" in one_line_error(run_cli(*SPARK, "--input", str(bad), home=home))

    # 1. a parquet of original files: read, shrunk as ingest does, embedded on two local executors
    out = run_cli(*SPARK, "--input", str(tmp_path / "images.parquet"), home=home, check=True)
    report = json.loads(out.stdout)
    assert report["embedded"] == 50 and report["not_in_catalogue"] == 1
    assert [f["key"] for f in report["failed"]] == [broken_key] and "broken.jpg" in out.stderr
    from_parquet = _vectors(home)
    assert len(from_parquet) == 50
    parquet_difference = _max_abs_difference(from_parquet, local)
    assert parquet_difference < 1e-5

    # 2. the rest of the catalogue, from the image store
    report = json.loads(run_cli(*SPARK, "--output", str(tmp_path / "out"), home=home, check=True).stdout)
    assert report["embedded"] == 150 and report["failed"] == []
    assert (tmp_path / "out" / "_SUCCESS").is_file()
    everything = _vectors(home)
    assert everything.keys() == local.keys()
    difference = _max_abs_difference(everything, local)
    assert difference < 1e-5
    save_figures(
        "spark-vs-local",
        {"vectors": len(everything), "max_abs_difference": difference, "from_parquet": parquet_difference},
    )

    # 3. nothing left: no Spark job, nothing stored twice
    report = json.loads(run_cli(*SPARK, home=home, check=True).stdout)
    assert report["embedded"] == 0
    assert len(_vectors(home)) == 200
    assert "local engine" in one_line_error(run_cli(*SPARK, "--limit", "5", home=home))
