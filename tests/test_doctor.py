"""recsys doctor: finds each kind of damage and names the repair; changes nothing."""

from __future__ import annotations

import json

from sqlalchemy import delete, select

from recsys import store
from recsys.workspace import Workspace
from tests.conftest import db_rows, one_line_error, run_cli, settings_for


def test_healthy_workspace_passes(embedded_copy):
    proc = run_cli("doctor", "--json", home=embedded_copy, check=True)
    findings = {f["check"]: f for f in json.loads(proc.stdout)}
    assert all(f["ok"] for f in findings.values()), findings
    checks = {
        "schema",
        "catalogue",
        "image files",
        "embeddings",
        "vector sizes",
        "index",
        "trained models",
        "leftovers",
    }
    assert set(findings) == checks


def test_each_kind_of_damage_is_found_with_its_repair(embedded_copy):
    run_cli("index", home=embedded_copy, check=True)
    with Workspace(settings_for(embedded_copy)) as ws:
        with ws.session() as s, s.begin():
            rel = s.scalar(select(store.Item.image_path).where(store.Item.id == 5))
            s.execute(delete(store.Embedding).where(store.Embedding.item_id == 7))
            s.add(
                store.ModelVersion(
                    kind="two-tower", version=1, base_model="efficientnet-lite0", path="models/two-tower/v1"
                )
            )
        ws.image_file(rel).unlink()
    tables = ("items", "embeddings", "models")
    counts = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in tables)
    before = db_rows(embedded_copy, counts)
    proc = run_cli("doctor", home=embedded_copy)
    assert "4 problem(s) found" in one_line_error(proc)
    out = proc.stdout
    assert "BAD  image files     1 of 200 items have no image file" in out
    assert "BAD  embeddings      1 of 200 items have no efficientnet-lite0 embedding" in out
    assert "no longer have embeddings" in out and "repair: recsys index" in out
    assert "repair: recsys embed --model efficientnet-lite0" in out
    assert "BAD  trained models  1 saved model(s) (two-tower 1), 1 with missing files (two-tower v1)" in out
    assert db_rows(embedded_copy, counts) == before  # diagnosis changes nothing

    index_file = embedded_copy / "indexes" / "efficientnet-lite0.faiss"
    index_file.write_bytes(b"junk")
    findings = {f["check"]: f for f in json.loads(run_cli("doctor", "--json", home=embedded_copy).stdout)}
    assert findings["index"]["ok"] is False and "damaged" in findings["index"]["detail"]


def test_a_folder_without_a_schema_is_reported(tmp_path):
    assert "no recsys schema" in one_line_error(run_cli("doctor", home=tmp_path / "empty"))


def test_a_healthy_ease_version_is_not_a_broken_two_tower(embedded_copy):
    """Bug at ff4e1ae: after `recsys train --strategy ease`, doctor said "1 two-tower version(s), 1 with
    missing files": it checked every saved version for the two-tower's weight file. Each kind's own
    files are checked now, and a file an EASE version lacks is still found."""
    home = embedded_copy
    run_cli("simulate", "--users", "30", "--events-per-user", "10", "--quiet", home=home, check=True)
    run_cli("train", "--strategy", "ease", home=home, check=True)
    findings = {f["check"]: f for f in json.loads(run_cli("doctor", "--json", home=home, check=True).stdout)}
    assert findings["trained models"]["ok"], findings["trained models"]
    assert "1 saved model(s) (ease 1), 0 with missing files" in findings["trained models"]["detail"]
    (home / "models" / "ease" / "v1" / "weights.npy").unlink()
    proc = run_cli("doctor", home=home)
    assert "1 problem(s) found" in one_line_error(proc)
    assert "BAD  trained models  1 saved model(s) (ease 1), 1 with missing files (ease v1)" in proc.stdout
