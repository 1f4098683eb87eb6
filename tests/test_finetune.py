"""`recsys finetune`: a new embedding model from Lite0, registered, used by embed, never half-written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from recsys import registry
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
    assert set(registry.embedders(home / "models")) == {"lite0-labels"}

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
    assert registry.embedders(home / "models") == {}
    # what a run killed while saving would leave: a temporary folder of a dead process
    root = registry.embedders_folder(home / "models")
    root.mkdir(parents=True, exist_ok=True)
    leftover = root / ".lite0-labels.999999-0.tmp"
    leftover.mkdir()
    (leftover / "weights.h5").write_bytes(b"half")
    assert registry.embedders(home / "models") == {}
    assert "unknown model" in one_line_error(run_cli("embed", "--model", "lite0-labels", home=home))
    run_cli("finetune", "--labels", "--epochs", "1", "--augment", "0", home=home, check=True)
    assert not leftover.exists() and list(registry.embedders(home / "models")) == ["lite0-labels"]


def test_bad_finetune_input_is_one_line(embedded_copy):
    def error(*args: str) -> str:
        return one_line_error(run_cli("finetune", *args, home=embedded_copy))

    assert "--labels or --interactions" in error()
    assert "--val-share" in error("--labels", "--val-share", "1.5")
    assert "--unfreeze" in error("--labels", "--unfreeze", "20")
    assert "exists" in error("--labels", "--name", "efficientnet-lite0")
    assert "model name" in error("--labels", "--name", "../evil")
    assert "too few interactions to train on" in error("--interactions")  # no events yet


def test_the_memory_layer_mixes_look_alikes_as_the_two_tower_borrows():
    """The Keras layer an `--interactions` model ends with gives a picture what
    ``twotower.serve.borrowed_vectors`` gives an item the two-tower has no row for."""
    import numpy as np

    from recsys.embedders.memory import LookAlikeMemory
    from recsys.twotower.serve import borrowed_vectors, image_inputs

    rng = np.random.default_rng(0)
    pooled = rng.random((6, 8)).astype(np.float32) * 3  # non-negative, not unit, as Lite0's
    known = rng.random((5, 8)).astype(np.float32)
    center = known.mean(axis=0) / np.linalg.norm(known.mean(axis=0))
    keys = image_inputs(known / np.linalg.norm(known, axis=1, keepdims=True), center)
    values = rng.normal(size=(5, 3)).astype(np.float32)
    layer = LookAlikeMemory(5, 8, 3, neighbours=3, temperature=0.1)
    layer.build((None, 8))
    layer.set_weights([center, keys, values])
    queries = image_inputs(pooled / np.linalg.norm(pooled, axis=1, keepdims=True), center)
    expected = borrowed_vectors(queries, keys, values, 3, 0.1)
    np.testing.assert_allclose(layer(pooled).numpy(), expected, atol=1e-5)
    # a remembered picture is its own nearest look-alike: mostly itself, a little of the others
    own = layer(known * 2).numpy()
    assert np.all(
        np.argmax(own @ (values / np.linalg.norm(values, axis=1, keepdims=True)).T, axis=1) == range(5)
    )


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
    assert report["model"] == "lite0-interactions"
    assert report["metric"] == "held-out recall@10 of the average profile"
    assert report["params"]["cold_share"] == 0.2 and report["params"]["holdout"] == 0.2
    assert 0 <= report["frozen_accuracy"] <= 1 and 0 <= report["finetuned_accuracy"] <= 1
    assert report["epochs_run"] == 1 and report["best_epoch"] == 1
    meta = registry.embedders(home / "models")["lite0-interactions"]
    assert meta["base"] == "efficientnet-lite0" and meta["params"]["seed"] == 0
    # it remembers the trained items only: not the 40 new ones, nor the 32 held out of the other 160
    assert meta["memory"]["items"] == 128 and meta["memory"]["neighbours"] == 100
    # the memory loads with the model: embed and recommend with it
    embedded = run_cli("embed", "--model", "lite0-interactions", "--json", "--quiet", home=home, check=True)
    assert json.loads(embedded.stdout)["embedded"] == 200
    listed = run_cli(
        "recommend",
        "--user",
        "sim-0-00001",
        "--strategy",
        "average",
        "--model",
        "lite0-interactions",
        "--json",
        home=home,
        check=True,
    )
    assert len(json.loads(listed.stdout)["items"]) == 10
    # evaluated on the splits it kept out of training, and refused on any other
    base = ("evaluate", "--model", "lite0-interactions", "--strategy", "average", "--json", "--quiet")
    cold = run_cli(
        *base, "--split", "cold-items", "--cold-share", "0.2", "--seed", "0", home=home, check=True
    )
    assert json.loads(cold.stdout)["catalogue_size"] == 40
    run_cli(*base, "--holdout", "0.2", home=home, check=True)
    for other in (("--split", "cold-items", "--cold-share", "0.2", "--seed", "1"), ("--holdout", "0.3")):
        assert "events it trained on" in one_line_error(run_cli(*base, *other, home=home))
    assert "split it was trained for" in one_line_error(run_cli(*base, "--split", "random", home=home))


def _first_tulip() -> str:
    from tests.conftest import BUNDLED

    return sorted((BUNDLED / "tulip").glob("*.jpg"))[0].stem
