"""The recsys command line on real workspaces: results, --json, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy import inspect

from recsys.settings import Settings
from tests.conftest import BUNDLED, ON_POSTGRES, cli_env, db_engine, db_rows, one_line_error, run_cli


def test_similar_by_key_prints_a_table_and_json(embedded_home):
    key = "tulip/" + sorted((BUNDLED / "tulip").glob("*.jpg"))[0].stem
    table = run_cli("similar", key, "-k", "5", home=embedded_home, check=True)
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["rank", "score", "key", "label", "title"]
    assert len(lines) == 2 + 5
    hits = json.loads(run_cli("similar", key, "-k", "10", "--json", home=embedded_home, check=True).stdout)
    assert len(hits) == 10 and key not in [h["key"] for h in hits]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert sum(h["label"] == "tulip" for h in hits) >= 5


def test_similar_by_image_finds_the_same_photo_first(embedded_home):
    photo = sorted((BUNDLED / "sunflower").glob("*.jpg"))[3]
    out = run_cli("similar", "--image", str(photo), "-k", "3", "--json", home=embedded_home, check=True)
    hits = json.loads(out.stdout)
    assert hits[0]["key"] == f"sunflower/{photo.stem}" and hits[0]["score"] > 0.99


def test_knn_accuracy_json(embedded_home):
    out = run_cli("knn-accuracy", "--json", home=embedded_home, check=True)
    result = json.loads(out.stdout)
    assert result["items"] == 200 and result["k"] == 1
    assert result["accuracy"] > 0.6  # 5 classes: chance is 0.2
    assert set(result["per_label"]) == {"daisy", "dandelion", "rose", "sunflower", "tulip"}


def test_bad_input_gives_one_line_errors(embedded_home, tmp_path):
    assert "'no/such-item'" in one_line_error(run_cli("similar", "no/such-item", home=embedded_home))
    assert "exactly one" in one_line_error(run_cli("similar", home=embedded_home))
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    line = one_line_error(run_cli("similar", "--image", str(not_image), home=embedded_home))
    assert "notes.jpg" in line and "not an image" in line
    line = one_line_error(run_cli("knn-accuracy", home=tmp_path / "empty"))
    assert "has no items" in line and str(tmp_path / "empty") in line and "--home" in line
    line = one_line_error(run_cli("ingest", str(BUNDLED), "--db", "nosuchdialect://x"))
    assert "nosuchdialect" in line
    unreachable = "postgresql+psycopg://ann:s3cret@127.0.0.1:9/recsys"  # nothing listens on port 9
    for command in ("ingest", "doctor"):
        line = one_line_error(
            run_cli(command, *([str(BUNDLED)] if command == "ingest" else []), "--db", unreachable)
        )
        assert "127.0.0.1" in line and "s3cret" not in line
    line = one_line_error(run_cli("embed", home=tmp_path / "h", env={"RECSYS_BATCH_SIZE": "lots"}))
    assert "batch_size" in line and "lots" in line


def test_unknown_model_is_a_clear_error(tmp_path):
    line = one_line_error(run_cli("embed", "--model", "efficientnet-b7", home=tmp_path / "h"))
    assert "efficientnet-b7" in line and "efficientnet-lite0" in line


def test_db_commands_and_automatic_migration(tmp_path):
    from recsys import store

    home = tmp_path / "h"
    assert "current None" in run_cli("db", "current", home=home, check=True).stdout
    head = store.head_revision()
    assert f"revision {head}" in run_cli("db", "upgrade", home=home, check=True).stdout
    with db_engine(home) as engine:
        tables = set(inspect(engine).get_table_names())
    if not ON_POSTGRES:
        assert db_rows(home, "PRAGMA journal_mode") == [("wal",)]
    assert {"items", "embeddings", "users", "interactions", "alembic_version"} <= tables
    assert "revision None" in run_cli("db", "downgrade", "base", home=home, check=True).stdout
    # any command migrates an empty database by itself
    run_cli("knn-accuracy", home=home)
    assert f"current {head}" in run_cli("db", "current", home=home, check=True).stdout


def test_each_migration_steps_down_and_up_again_keeping_the_data(embedded_copy):
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from recsys import store

    home = embedded_copy
    run_cli(
        "record",
        "--user",
        "ann",
        "--item",
        "tulip/" + sorted((BUNDLED / "tulip").glob("*.jpg"))[0].stem,
        home=home,
        check=True,
    )
    counts = (
        "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM embeddings), "
        "(SELECT count(*) FROM interactions)"
    )
    before = db_rows(home, counts)
    cfg = Config()
    cfg.set_main_option("script_location", str(store.MIGRATIONS_DIR))
    revisions = [r.revision for r in ScriptDirectory.from_config(cfg).walk_revisions()]  # newest first
    assert len(revisions) >= 3
    for older in [*revisions[1:], "base"][: len(revisions) - 1]:  # down one step at a time, to 0001
        assert f"revision {older}" in run_cli("db", "downgrade", older, home=home, check=True).stdout
        assert db_rows(home, counts) == before
    assert f"revision {revisions[0]}" in run_cli("db", "upgrade", home=home, check=True).stdout
    assert db_rows(home, counts) == before
    assert run_cli("recommend", "--user", "ann", "--json", home=home, check=True).returncode == 0


def test_foreign_keys_are_enforced(workspace):
    import pytest
    from sqlalchemy.exc import IntegrityError

    from recsys import store

    with pytest.raises(IntegrityError), workspace.session() as s, s.begin():
        s.add(store.Embedding(item_id=999, model="m", dim=1, vector=b"\0\0\0\0"))


def test_settings_come_from_env_then_flags(tmp_path):
    env = {"RECSYS_HOME": str(tmp_path / "env"), "RECSYS_MAX_SIDE": "128"}
    s = Settings.from_env(env)
    assert s.home == tmp_path / "env" and s.max_side == 128
    assert s.database_url.endswith("env/recsys.db")
    s = Settings.from_env(env, home=str(tmp_path / "flag"), max_side=None)
    assert s.home == tmp_path / "flag" and s.max_side == 128
    assert Settings.from_env({"RECSYS_DB_URL": "postgresql://x/y"}).database_url == "postgresql://x/y"


# -- first impressions ----------------------------------------------------------------------------


def test_a_command_in_an_empty_workspace_names_it_and_says_how_to_point_elsewhere(tmp_path):
    """Finding: from another folder, `recsys recommend` opened a new, empty workspace there and
    said only "no embeddings", `recsys embed` "embedded 0 item(s)", and doctor "ok" on 0 items."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = cli_env()
    expected = str((elsewhere / "recsys-home").resolve())
    for args in (["recommend", "--user", "demo-user"], ["embed"], ["similar", "tulip/x"]):
        proc = subprocess.run(
            [sys.executable, "-m", "recsys.cli", *args],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
        )
        line = one_line_error(proc)
        assert expected in line and "has no items" in line and "--home" in line, (args, line)
    doctor = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "doctor"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert doctor.returncode == 1 and f"BAD  catalogue       0 items in workspace {expected}" in doctor.stdout


def test_smaller_first_impressions(embedded_home, tmp_path):
    """Findings: a port in use printed "serving recsys on ..." and then 5 s of gunicorn errors; a
    picture given to ingest was "not a readable CSV"; an unknown --label printed an empty table and
    exited 0; `record --help` named fewer CSV columns than the README."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli("serve", "--port", str(port), home=embedded_home, timeout=60)
    assert (
        f"cannot listen on 127.0.0.1:{port}" in one_line_error(proc) and "serving recsys" not in proc.stdout
    )
    picture = sorted((BUNDLED / "tulip").glob("*.jpg"))[0]
    line = one_line_error(run_cli("ingest", str(picture), home=tmp_path / "h"))
    assert "a picture, not a catalogue" in line and "folder" in line and "CSV" in line
    line = one_line_error(run_cli("recommend", "--user", "x", "--label", "nosuchlabel", home=embedded_home))
    assert "'nosuchlabel'" in line and "daisy, dandelion, rose, sunflower, tulip" in line
    assert "event_key" in run_cli("record", "--help").stdout


def test_skipped_pictures_print_on_lines_of_their_own_beside_the_progress_bar(tmp_path):
    """Finding: the ingest progress bar was tangled with the "skipped" lines."""
    folder = tmp_path / "photos" / "tulip"
    folder.mkdir(parents=True)
    for photo in sorted((BUNDLED / "tulip").glob("*.jpg"))[:6]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    for n in range(3):
        (folder / f"broken-{n}.jpg").write_text("not a picture")
    proc = run_cli("ingest", str(tmp_path / "photos"), home=tmp_path / "h", check=True)
    skipped = [line for line in proc.stderr.replace("\r", "\n").splitlines() if "skipped" in line]
    assert len(skipped) == 3 and all(line.startswith("skipped tulip/broken-") for line in skipped), (
        proc.stderr
    )
