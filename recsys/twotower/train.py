"""Training the two-tower: ``fit`` on given vectors and events (saved nowhere), and the ``train`` job
that reads the workspace, fits, and saves a registry version; ``load`` reads one back.

Training examples are "history before an event -> the event's item", in time order. The latest
events of each user are held out for validation with the same temporal split ``recsys evaluate``
uses (recorded with the model), so an evaluation on that split does not see its own answers.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np

from recsys import registry, store
from recsys.early_stopping import run_epochs
from recsys.errors import RecsysError
from recsys.events import Event, load_history
from recsys.metrics import mean_recall
from recsys.splits import for_training, new_items, temporal_split
from recsys.twotower import FILES, KIND, TrainReport, TwoTowerConfig
from recsys.twotower.data import Vocabulary, make_examples, recent_rows
from recsys.twotower.serve import image_inputs

#: The figure training stops on, as named in its epoch rows and the registry.
METRIC = "val_recall@10"
#: What must match for a version's weights to carry over into a new one (``--continue``).
ARCHITECTURE = ("dim", "hidden", "item_ids", "user_ids", "history_ids", "history_length")


def validation_recall(model, vocab: Vocabulary, train: Mapping, test: Mapping, k: int = 10) -> float:
    """Exact recall@k over the whole catalogue, training items excluded (as the evaluation does)."""
    import tensorflow as tf

    users = sorted(test)
    all_rows = np.arange(1, len(vocab.item_ids) + 1, dtype=np.int32)
    items = model.item_tower(tf.gather(model.image_table, all_rows), all_rows).numpy()
    tops = []
    for start in range(0, len(users), 2048):  # (users, history, 1280) inputs: a chunk at a time
        chunk = users[start : start + 2048]
        recent = recent_rows(
            [vocab.item_rows([e[0] for e in sorted(train.get(u, []), key=lambda e: e[3])]) for u in chunk],
            model.history_length,
        )
        user_rows = np.array([vocab.user_row(u) for u in chunk], dtype=np.int32)
        scores = model.user_tower(tf.gather(model.image_table, recent), recent, user_rows).numpy() @ items.T
        for n, user in enumerate(chunk):
            seen = vocab.item_rows([e[0] for e in train.get(user, [])])
            scores[n, seen[seen > 0] - 1] = -np.inf
            tops.append(vocab.item_ids[np.argpartition(-scores[n], k)[:k]].tolist())
    return mean_recall(tops, [test[u] for u in users])


def fit(
    ids: np.ndarray,
    raw: np.ndarray,
    history: Mapping[str, list[Event]],
    config: TwoTowerConfig,
    *,
    left_out: frozenset[int] = frozenset(),
    measure: Callable[[object, Vocabulary, Mapping, Mapping], float] = validation_recall,
    metric: str = METRIC,
    warm_from: tuple | None = None,
    log: Callable[[str], None] = print,
):
    """(model, vocabulary, report) of one training run, saved nowhere.

    Args:
        ids: Item ids with an image vector, ascending.
        raw: Their stored (unit, uncentred) image vectors.
        history: The events to learn from (user -> events), before ``config``'s cold share and
            holdout are taken out.
        config: The hyper-parameters, splits included.
        left_out: Items treated like the cold split's new ones: no events, no id row.
        measure: The validation figure to stop on, ``measure(model, vocab, train, test)``.
        metric: Its name in the epoch rows.
        warm_from: (model, vocabulary) of a version to start from (same architecture).
        log: Progress lines.
    """
    import tensorflow as tf

    from recsys.twotower.model import TwoTowerModel

    if len(ids) < 2:
        raise RecsysError("train needs embedded items: run `recsys embed`")
    new = set(left_out)
    if config.cold_share > 0:  # the cold-item split's new items: never seen, not even their ids
        new |= set(new_items(ids, config.cold_share, config.seed).tolist())
    trained = np.array([int(i) not in new for i in ids], dtype=bool)
    if new:
        history = {u: kept for u, evs in history.items() if (kept := [e for e in evs if e[0] not in new])}
    # the evaluation's held-out events: never trained on, never used to stop
    history_for_training, held_out = for_training(history, config.holdout, config.split, config.min_events)
    if config.val_fraction > 0:
        split = temporal_split(
            history_for_training, fraction=config.val_fraction, min_events=config.min_events
        )
        train_events, test = split.train, split.test
    else:
        train_events, test = history_for_training, {}
    vocab = Vocabulary(ids[trained], sorted(history))
    examples = make_examples(train_events, vocab, config.history_length)
    if len(examples["item"]) < config.batch_size // 4:
        raise RecsysError(
            f"too few interactions to train on ({len(examples['item'])} examples): "
            "record more, or `recsys simulate`"
        )
    center = raw.mean(axis=0) if config.center_inputs else None
    inputs = image_inputs(raw, center)
    image_table = np.vstack([np.zeros((1, raw.shape[1]), np.float32), inputs[trained]]).astype(np.float32)
    tf.keras.utils.set_random_seed(config.seed)
    model = TwoTowerModel(image_table, len(vocab.users), config, center)
    if warm_from is not None:
        _warm_start(model, vocab, *warm_from)
    ds = (
        tf.data.Dataset.from_tensor_slices(examples)
        .shuffle(len(examples["item"]), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    log(
        f"training on {len(examples['item'])} examples from {len(train_events)} users, {len(ids)} items; "
        f"validating on {len(test)} users' latest events"
    )
    epochs = run_epochs(
        lambda: float(model.fit(ds, epochs=1, verbose=0).history["loss"][-1]),
        lambda: measure(model, vocab, train_events, test) if test else float("nan"),
        epochs=config.epochs,
        patience=config.patience,
        metric=metric,
        snapshot=model.get_weights,
        restore=model.set_weights,
        say=log,
    )
    report = TrainReport(
        0,
        "",
        len(epochs.rows),
        epochs.best_epoch,
        epochs.rows,
        0.0,
        len(examples["item"]),
        sum(len(v) for v in test.values()),
        held_out,
    )
    return model, vocab, report


def _warm_start(model, vocab: Vocabulary, old, old_vocab: Vocabulary) -> None:
    """Copy the previous version's tower weights, and id rows of items/users both vocabularies know."""
    model.item_mlp.set_weights(old.item_mlp.get_weights())
    model.user_mlp.set_weights(old.user_mlp.get_weights())
    for layer, old_layer, new_keys, old_keys in (
        (model.item_id, old.item_id, list(vocab.item_ids), list(old_vocab.item_ids)),
        (model.history_id, old.history_id, list(vocab.item_ids), list(old_vocab.item_ids)),
        (model.user_id, old.user_id, vocab.users, old_vocab.users),
    ):
        if layer is None or old_layer is None:
            continue
        weights, old_weights = layer.get_weights()[0], old_layer.get_weights()[0]
        weights[0] = old_weights[0]
        index = {k: i + 1 for i, k in enumerate(old_keys)}
        for i, key in enumerate(new_keys):
            if key in index:
                weights[i + 1] = old_weights[index[key]]
        layer.set_weights([weights])


def train(
    workspace,
    config: TwoTowerConfig | None = None,
    *,
    warm_start: bool = False,
    log: Callable[[str], None] = print,
) -> TrainReport:
    """Train (or with ``warm_start`` fine-tune the latest) two-tower model on every stored event;
    save a new version."""
    config = config or TwoTowerConfig()
    start = time.perf_counter()
    previous = registry.latest(workspace, KIND) if warm_start else None
    if warm_start and previous is None:
        raise RecsysError("--continue needs a trained model: run `recsys train` first")
    warm_from = None
    if previous is not None:  # weights only carry over into the same architecture
        config = dataclasses.replace(config, **{k: previous.params.get(k, False) for k in ARCHITECTURE})
        warm_from = load(workspace, previous.version)[:2]
        log(f"warm start from two-tower v{previous.version}")
    base_model = workspace.settings.model
    with workspace.session() as s:
        ids, raw = store.load_embeddings(s, base_model)
    if len(ids) < 2:
        raise RecsysError(f"train needs embedded items: run `recsys embed` (model {base_model})")
    model, vocab, report = fit(ids, raw, load_history(workspace), config, warm_from=warm_from, log=log)
    report.seconds = time.perf_counter() - start
    report.version, report.path = save(workspace, model, vocab, base_model, report, previous)
    return report


def write_files(folder: Path, model, vocab: Vocabulary) -> None:
    """A trained model's files (``FILES``) into ``folder``."""
    model.save_weights(str(folder / "weights.weights.h5"))
    np.save(folder / "item_ids.npy", vocab.item_ids)
    (folder / "users.json").write_text(json.dumps(vocab.users))
    (folder / "config.json").write_text(json.dumps(asdict(model.config)))
    if model.center is not None:
        np.save(folder / "center.npy", model.center)


def read_files(folder: Path, ids: np.ndarray, raw: np.ndarray):
    """(model, vocabulary) from ``write_files``'s folder; ``ids``, ``raw``: the stored image vectors
    of the model's base embedder (the trained items' rows of its image table)."""
    from recsys.twotower.model import TwoTowerModel

    saved = json.loads((folder / "config.json").read_text())
    config = TwoTowerConfig(**{"recency_half_life": 0.0, **saved})  # older versions: the plain mean
    vocab = Vocabulary(np.load(folder / "item_ids.npy"), json.loads((folder / "users.json").read_text()))
    center = np.load(folder / "center.npy") if (folder / "center.npy").is_file() else None
    inputs = image_inputs(raw, center)
    rows = vocab.item_rows(ids)
    table = np.zeros((len(vocab.item_ids) + 1, raw.shape[1] if len(raw) else 1280), np.float32)
    table[rows[rows > 0]] = inputs[rows > 0]
    model = TwoTowerModel(table, len(vocab.users), config, center)
    model.load_weights(str(folder / "weights.weights.h5"))
    return model, vocab


def save(
    workspace, model, vocab: Vocabulary, base_model: str, report: TrainReport, previous=None
) -> tuple[int, str]:
    """Weights + vocabulary as a new registry version."""
    best = report.history[report.best_epoch - 1] if report.history else {}
    version, final = registry.save(
        workspace,
        KIND,
        lambda folder: write_files(folder, model, vocab),
        files=FILES,
        base_model=base_model,
        params={
            **asdict(model.config),
            **report.held_out,
            "warm_start_from": previous.version if previous else None,
        },
        metrics={
            "val_recall@10": best.get(METRIC),
            "best_epoch": report.best_epoch,
            "epochs": report.history,
            "examples": report.examples,
            "train_seconds": round(report.seconds, 1),
        },
    )
    return version, str(final)


def load(workspace, version: int | None = None):
    """(model, vocabulary, registry row) of a saved version (default: the latest)."""
    row = registry.get(workspace, KIND, version)
    folder = registry.path_of(workspace, row, FILES)
    with workspace.session() as s:
        ids, raw = store.load_embeddings(s, row.base_model)
    return (*read_files(folder, ids, raw), row)
