"""`recsys finetune`: a new embedding model from Lite0, registered, used by embed, never half-written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from recsys import finetune
from tests.conftest import cli_env, one_line_error, run_cli


def test_a_one_epoch_label_finetune_registers_a_model_that_embed_uses(embedded_copy):
    home = embedded_copy
    out = run_cli(
        "finetune", "--labels", "--epochs", "1", "--val-share", "0.2", "--json", home=home, check=True
    )
    report = json.loads(out.stdout)
    assert report["model"] == "lite0-labels" and report["mode"] == "labels" and report["epochs_run"] == 1
    assert 0 < report["frozen_accuracy"] <= 1 and 0 < report["finetuned_accuracy"] <= 1
    assert report["finetuned_accuracy"] >= report["frozen_accuracy"]  # the best epoch is kept (or none)
    assert report["seconds"] > 0 and report["metric"] == "held-out 1-NN label accuracy"
    assert set(finetune.registered(home / "models")) == {"lite0-labels"}

    embedded = run_cli("embed", "--model", "lite0-labels", "--json", "--quiet", home=home, check=True)
    assert json.loads(embedded.stdout)["embedded"] == 200
    accuracy = json.loads(
        run_cli("knn-accuracy", "--model", "lite0-labels", "--json", home=home, check=True).stdout
    )
    assert accuracy["accuracy"] > 0.5
    recommended = run_cli(
        "recommend",
        "--user",
        "nobody",
        "--strategy",
        "average",
        "--model",
        "lite0-labels",
        "--json",
        home=home,
    )
    assert recommended.returncode == 0, recommended.stderr
    # the old model keeps working until you switch; a second run gets a new name
    assert run_cli("similar", "--json", "tulip/" + _first_tulip(), home=home, check=True).returncode == 0
    again = json.loads(
        run_cli(
            "finetune", "--labels", "--epochs", "1", "--augment", "0", "--json", home=home, check=True
        ).stdout
    )
    assert again["model"] == "lite0-labels-2"


def test_a_killed_finetune_leaves_no_model_behind(embedded_copy):
    home = embedded_copy
    cmd = [sys.executable, "-m", "recsys.cli", "finetune", "--labels", "--epochs", "40", "--patience", "40"]
    proc = subprocess.Popen(
        [*cmd, "--home", str(home)],
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = ""
    deadline = time.time() + 300
    while "epoch 2/" not in seen and time.time() < deadline:  # killed mid-training
        seen += proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "epoch 2/" in seen, seen[-2000:]
    assert finetune.registered(home / "models") == {}
    # what a run killed while saving would leave: a temporary folder of a dead process
    root = finetune.folder(home / "models")
    root.mkdir(parents=True, exist_ok=True)
    leftover = root / ".lite0-labels.tmp-999999"
    leftover.mkdir()
    (leftover / "weights.h5").write_bytes(b"half")
    assert finetune.registered(home / "models") == {}
    assert "unknown model" in one_line_error(run_cli("embed", "--model", "lite0-labels", home=home))
    run_cli("finetune", "--labels", "--epochs", "1", "--augment", "0", home=home, check=True)
    assert not leftover.exists() and list(finetune.registered(home / "models")) == ["lite0-labels"]


def test_bad_finetune_input_is_one_line(embedded_copy):
    def error(*args: str) -> str:
        return one_line_error(run_cli("finetune", *args, home=embedded_copy))

    assert "--labels or --interactions" in error()
    assert "--val-share" in error("--labels", "--val-share", "1.5")
    assert "--unfreeze" in error("--labels", "--unfreeze", "20")
    assert "exists" in error("--labels", "--name", "efficientnet-lite0")
    assert "model name" in error("--labels", "--name", "../evil")
    assert "co-interaction pairs" in error("--interactions")  # no events yet


def test_co_interaction_pairs_respect_the_window_the_gap_and_the_items_left_out():
    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def at(hours: float):
        return t0 + timedelta(hours=hours)

    history = {
        "ana": [
            (1, "view", None, at(0)),
            (2, "view", None, at(1)),
            (3, "view", None, at(30)),
            (4, "view", None, at(31)),
        ],
        "bob": [
            (5, "view", None, at(0)),
            (6, "view", None, at(0.1)),
            (7, "view", None, at(0.2)),
            (8, "view", None, at(0.3)),
            (9, "view", None, at(0.4)),
        ],
    }
    rows = {i: i for i in range(1, 10) if i != 4}  # item 4 is cold: it has no row
    pairs = {tuple(p) for p in finetune.co_interaction_pairs(history, rows, window_hours=24, max_gap=3)}
    assert (1, 2) in pairs and (2, 1) in pairs  # within an hour
    assert (2, 3) not in pairs  # 29 hours apart
    assert not any(4 in p for p in pairs)  # never the cold item
    assert (5, 8) in pairs and (5, 9) not in pairs  # at most 3 events apart


def test_interactions_finetune_trains_on_simulated_logs_without_the_cold_items(embedded_copy):
    home = embedded_copy
    run_cli("simulate", "--users", "60", "--events-per-user", "20", "--quiet", home=home, check=True)
    out = run_cli(
        "finetune",
        "--interactions",
        "--epochs",
        "1",
        "--cold-share",
        "0.2",
        "--batch-size",
        "32",
        "--json",
        home=home,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["model"] == "lite0-interactions" and report["metric"] == "held-out pair recall@10"
    assert report["params"]["cold_share"] == 0.2 and report["params"]["holdout"] == 0.2
    assert 0 <= report["frozen_accuracy"] <= 1 and report["epochs_run"] == 1
    meta = json.loads((finetune.folder(home / "models") / "lite0-interactions" / "meta.json").read_text())
    assert meta["base"] == "efficientnet-lite0" and meta["params"]["seed"] == 0


def _first_tulip() -> str:
    from tests.conftest import BUNDLED

    return sorted((BUNDLED / "tulip").glob("*.jpg"))[0].stem
