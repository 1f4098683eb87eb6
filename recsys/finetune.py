"""`recsys finetune`: a new embedding model, Lite0 with its top layers trained on your catalogue.

Two tasks:

- ``labels``: classify the catalogue's labels; the pooled features then separate them better.
- ``interactions``: "fine-tuning for a task", the task being the average profile itself. A linear
  projection is learned on top of Lite0's pooled features so that the centred mean of what a user
  picked so far points at what they pick next (full softmax over the catalogue, the items already
  picked excluded, exactly as the average profile ranks). ImageNet features say what is *in* a
  picture; the projection says what the people who pick it have in common. It starts as the
  identity (the frozen model) and trains in seconds on the stored vectors.

Training ``labels`` on a 2-core CPU stays fast because only the last ``unfreeze`` MBConv blocks and
the head convolution learn: the frozen part runs once per picture (and per augmented view) and its
output is cached; batch-norm statistics stay as ImageNet left them. (Measured on MovieLens posters:
pulling co-interacted posters together through the last block, with in-batch negatives, barely
moved the loss and left the average profile where it was; the projection multiplied it ~10x.)
The result is registered under a new
name (``<home>/models/embedders/<name>/``, written to a temporary folder and renamed, so a killed
run leaves nothing usable half-written), and ``recsys embed --model NAME`` re-embeds with it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select

from recsys import store
from recsys.errors import RecsysError

BASE_MODEL = "efficientnet-lite0"
PROJECTION = "finetune_projection"  # the layer `--interactions` adds on top of the pooled features
VALIDATION_EVENTS = 0.1  # interactions: each user's latest share of training events, to stop on
LITE0_BLOCKS = 16
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True)
class FinetuneConfig:
    """What to train, and how.

    Attributes:
        mode: "labels" or "interactions".
        name: The new model's name (default: ``lite0-<mode>``, numbered if taken).
        unfreeze: labels: MBConv blocks trained besides the head convolution (0: the head only).
        epochs: At most this many passes; training stops earlier when the validation figure has
            not improved for ``patience`` epochs, and the best epoch's weights are kept.
        patience: See ``epochs``.
        learning_rate: Adam's step size.
        batch_size: Pictures (labels) or histories (interactions) per step.
        augment: labels: augmented views cached per training picture besides the plain one
            (random crop of 70 to 100% of the area, horizontal flip, brightness); 0 turns it off.
        val_share: Share of items held out to measure (and stop on); seeded by ``seed``.
        seed: Seed of the held-out items, the cold items, the views and the training.
        holdout: interactions: each user's latest share of events, never trained on (the
            temporal split of `recsys evaluate --holdout`).
        cold_share: interactions: share of items playing new arrivals, never trained on (the
            cold-item split of `recsys evaluate --split cold-items --cold-share`).
        temperature: interactions: softmax temperature over the profile's cosines.
        examples_per_user: interactions: at most this many (history, next item) examples per
            user and epoch, drawn at random, so that heavy users do not dominate (nor the memory).
    """

    mode: str = "labels"
    name: str | None = None
    unfreeze: int = 1
    epochs: int = 12
    patience: int = 3
    learning_rate: float = 1e-3
    batch_size: int = 64
    augment: int = 2
    val_share: float = 0.2
    seed: int = 0
    holdout: float = 0.2
    cold_share: float = 0.0
    temperature: float = 0.05
    examples_per_user: int = 200


@dataclass
class FinetuneReport:
    model: str
    mode: str
    frozen_accuracy: float
    finetuned_accuracy: float
    metric: str
    seconds: float
    epochs_run: int
    best_epoch: int
    params: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


# -- the registry of fine-tuned embedders -------------------------------------------------------


def folder(models_dir: Path) -> Path:
    return Path(models_dir) / "embedders"


def registered(models_dir: Path) -> dict[str, dict]:
    """name -> its meta.json, for every complete fine-tuned model in the workspace."""
    found = {}
    root = folder(models_dir)
    if root.is_dir():
        for meta in sorted(root.glob("*/meta.json")):
            if not meta.parent.name.startswith(".") and (meta.parent / "weights.h5").is_file():
                found[meta.parent.name] = json.loads(meta.read_text())
    return found


def load_model(models_dir: Path, name: str):
    """The fine-tuned Keras model (RGB [0, 255] -> pooled features) registered as ``name``."""
    from recsys.embedders import lite0

    path = folder(models_dir) / name / "weights.h5"
    meta = json.loads((path.parent / "meta.json").read_text())
    model = lite0.build(include_top=False)
    if meta.get("projection"):  # `--interactions`: a learned projection of the pooled features
        import tf_keras as keras

        layer = keras.layers.Dense(lite0.HEAD_CHANNELS, use_bias=False, name=PROJECTION)
        model = keras.Model(model.input, layer(model.output))
    model.load_weights(str(path))
    return model


def _clear_leftovers(models_dir: Path) -> None:
    """Temporary folders of runs that were killed (their process is gone)."""
    from recsys.atomic import _alive

    root = folder(models_dir)
    for tmp in root.glob(".*.tmp-*") if root.is_dir() else []:
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _name(models_dir: Path, config: FinetuneConfig) -> str:
    from recsys.embedders import MODELS

    taken = set(registered(models_dir)) | set(MODELS)
    if config.name is not None:
        name = config.name
        if not name or set(name.lower()) - NAME_CHARS or name[0] in ".-_" or len(name) > 64:
            raise RecsysError(f"model name {name!r}: 1 to 64 letters, digits, '-', '_' or '.'")
        if name in taken:
            raise RecsysError(f"a model called {name!r} exists: pick another --name")
        return name
    n, name = 1, f"lite0-{config.mode}"
    while name in taken:
        n += 1
        name = f"lite0-{config.mode}-{n}"
    return name


# -- the split model and its cache --------------------------------------------------------------


def _split(model, unfreeze: int):
    """(lower, upper): the frozen part up to the last ``unfreeze`` blocks, and the rest."""
    import tf_keras as keras

    first = LITE0_BLOCKS - unfreeze
    names = [layer.name for layer in model.layers]
    cut = f"blocks_{first - 1}_add" if f"blocks_{first - 1}_add" in names else f"blocks_{first - 1}_bn2"
    lower = keras.Model(model.input, model.get_layer(cut).output)
    start = keras.Input(model.get_layer(cut).output.shape[1:])
    tensors = {cut: start}
    for layer in model.layers[names.index(cut) + 1 :]:
        parents = layer._inbound_nodes[0].inbound_layers
        parents = parents if isinstance(parents, list) else [parents]
        args = [tensors[p.name] for p in parents]
        tensors[layer.name] = layer(args if len(args) > 1 else args[0])
    upper = keras.Model(start, tensors[model.layers[-1].name])
    for layer in upper.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization) and bool(layer.weights)
    return lower, upper


def _views(images, augment: int, rng: np.random.Generator):
    """The plain batch, then ``augment`` randomly cropped, flipped and brightened copies."""
    import tensorflow as tf

    out = [images]
    n, size = images.shape[0], images.shape[1]
    for _ in range(augment):
        scale = rng.uniform(0.7, 1.0, n)
        side = np.sqrt(scale)
        y0 = rng.uniform(0, 1 - side)
        x0 = rng.uniform(0, 1 - side)
        boxes = np.stack([y0, x0, y0 + side, x0 + side], axis=1).astype(np.float32)
        flipped = np.where(rng.random(n) < 0.5)[0]
        crops = tf.image.crop_and_resize(images, boxes, np.arange(n, dtype=np.int32), (size, size))
        crops = tf.tensor_scatter_nd_update(
            crops, flipped[:, None], tf.image.flip_left_right(tf.gather(crops, flipped))
        )
        crops = tf.clip_by_value(crops * rng.uniform(0.85, 1.15, (n, 1, 1, 1)).astype(np.float32), 0, 255)
        out.append(crops)
    return out


def _cache(workspace, lower, item_ids: list[int], augment: int, seed: int, log) -> np.ndarray:
    """(views, items, h, w, c) float16 outputs of the frozen part, from the stored pictures."""
    import tensorflow as tf
    from tqdm import tqdm

    from recsys.embedders import decode_image

    with workspace.session() as s:
        paths = dict(
            s.execute(select(store.Item.id, store.Item.image_path).where(store.Item.id.in_(item_ids))).all()
        )
    rng = np.random.default_rng(seed)
    infer = tf.function(lambda x: lower(x, training=False), reduce_retracing=True)
    out = None
    batch = 64
    for start in tqdm(
        range(0, len(item_ids), batch), desc="caching frozen layers", unit="batch", disable=log is None
    ):
        chunk = item_ids[start : start + batch]
        images = tf.stack([decode_image(tf.io.read_file(str(workspace.image_file(paths[i])))) for i in chunk])
        for v, view in enumerate(_views(images, augment, rng)):
            features = infer(view).numpy().astype(np.float16)
            if out is None:
                out = np.zeros((augment + 1, len(item_ids), *features.shape[1:]), np.float16)
            out[v, start : start + len(chunk)] = features
    return out


def _embed(upper, cached: np.ndarray) -> np.ndarray:
    """Unit pooled features of the plain view of every cached item."""
    out = []
    for start in range(0, cached.shape[0], 256):
        out.append(upper(cached[start : start + 256].astype(np.float32), training=False).numpy())
    vectors = np.concatenate(out)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _centred(vectors: np.ndarray, center: np.ndarray) -> np.ndarray:
    x = vectors - center
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# -- the two tasks --------------------------------------------------------------------------------


def _nn_accuracy(vectors: np.ndarray, labels: np.ndarray, val: np.ndarray) -> float:
    """1-NN label accuracy of the held-out items, queried against the training items (centred
    by the training items' mean, as the retrieval space is)."""
    train = ~val
    space = _centred(vectors, vectors[train].mean(axis=0))
    nearest = np.argmax(space[val] @ space[train].T, axis=1)
    return float(np.mean(labels[train][nearest] == labels[val]))


def profile_examples(
    history: dict[str, list], row_of: dict[int, int], n_rows: int, per_user: int, rng: np.random.Generator
):
    """(weights, targets) for the average profile's task: for events on an item new to the user
    (at most ``per_user`` per user, drawn at random), the history before it as profile weights over
    rows (sparse, weighed as the average profile weighs events) and the item's row. Items without
    a row (new items, held-out items) are left out on both sides."""
    from scipy import sparse

    from recsys.strategies.base import event_weight

    indptr, cols, vals, targets = [0], [], [], []
    for events in history.values():
        events = sorted((e for e in events if e[0] in row_of), key=lambda e: e[3])
        firsts, seen = [], set()
        for t, event in enumerate(events):
            if event[0] not in seen:
                if seen:
                    firsts.append(t)
                seen.add(event[0])
        if len(firsts) > per_user:
            firsts = sorted(rng.choice(firsts, size=per_user, replace=False).tolist())
        totals: dict[int, float] = {}
        done = 0
        for t in firsts:
            for item, event, weight, _ in events[done:t]:
                totals[row_of[item]] = totals.get(row_of[item], 0.0) + event_weight(event, weight)
            done = t
            cols.extend(totals)
            vals.extend(totals.values())
            indptr.append(len(cols))
            targets.append(row_of[events[t][0]])
    weights = sparse.csr_matrix(
        (np.array(vals, np.float32), np.array(cols, np.int64), np.array(indptr, np.int64)),
        shape=(len(targets), n_rows),
    )
    return weights, np.array(targets, dtype=np.int64)


def _profile_recall(space: np.ndarray, weights, relevant: list[set[int]], k: int = 10) -> float:
    """Mean recall@k of average profiles (``weights`` over rows of ``space``), the profile's own
    items excluded, as the average strategy ranks."""
    total = 0.0
    for start in range(0, weights.shape[0], 256):
        w = weights[start : start + 256]
        profiles = w @ space
        profiles /= np.maximum(np.linalg.norm(profiles, axis=1, keepdims=True), 1e-12)
        scores = profiles @ space.T
        scores[w.nonzero()] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        for n, row in enumerate(top):
            total += len(relevant[start + n] & set(row.tolist())) / len(relevant[start + n])
    return total / max(len(relevant), 1)


def _profile_task(workspace, config, ids, cold, val, history, projection, optimizer, rng, say):
    """(epoch, measure, metric) of the interactions task: the projection is trained so that the
    average profile of a history (centred, weighted mean, cosine) ranks the next item first among
    the trained items (full softmax, the history's items excluded). The validation figure is the
    average profile's recall@10 on each user's latest training events, over every item that is
    not new, the held-out items included (they never appear in training)."""
    import tensorflow as tf
    from scipy import sparse

    from recsys.evaluate import temporal_split
    from recsys.strategies.average import history_weights

    with workspace.session() as s:
        known, raw = store.load_embeddings(s, BASE_MODEL)
    at = {int(i): n for n, i in enumerate(known)}
    missing = [int(i) for i in ids if int(i) not in at]
    if missing:
        raise RecsysError(
            f"finetune --interactions starts from the stored {BASE_MODEL} vectors: {len(missing)} "
            f"items have none (e.g. item {missing[0]}); run `recsys embed --model {BASE_MODEL}`"
        )
    features = raw[[at[int(i)] for i in ids]].astype(np.float32)
    split = temporal_split(history, fraction=VALIDATION_EVENTS, min_events=3)
    train_rows = np.where(~cold & ~val)[0]  # new items are never trained on, nor measured on here
    row_of = {int(ids[r]): n for n, r in enumerate(train_rows)}
    weights, targets = profile_examples(split.train, row_of, len(train_rows), config.examples_per_user, rng)
    if len(targets) < config.batch_size:
        raise RecsysError(
            f"only {len(targets)} (history, next item) examples to train on: record more events, "
            "or `recsys simulate`"
        )
    measured_rows = np.where(~cold)[0]
    measured_at = {int(ids[r]): n for n, r in enumerate(measured_rows)}
    users = [u for u in split.test if u in split.train]
    rows_, cols_, vals_ = [], [], []
    for n, user in enumerate(users):
        for item, w in history_weights(split.train[user]).items():
            if item in measured_at:
                rows_.append(n)
                cols_.append(measured_at[item])
                vals_.append(w)
    val_weights = sparse.csr_matrix((vals_, (rows_, cols_)), shape=(len(users), len(measured_rows)))
    relevant = [{measured_at[i] for i in split.test[u] if i in measured_at} or {-1} for u in users]
    say(
        f"{len(targets)} (history, next item) examples over {len(train_rows)} items; "
        f"measuring on {len(users)} users' latest events"
    )
    train_features = tf.constant(features[train_rows])
    temperature = config.temperature

    def space(x):  # as the retrieval space: unit vectors, centred on their mean, unit again
        z = tf.math.l2_normalize(projection(x), axis=1)
        return tf.math.l2_normalize(z - tf.reduce_mean(z, axis=0), axis=1)

    @tf.function(reduce_retracing=True)
    def step(profile_weights, target):
        with tf.GradientTape() as tape:
            items = space(train_features)
            profiles = tf.math.l2_normalize(profile_weights @ items, axis=1)
            logits = profiles @ tf.transpose(items) / temperature
            logits -= 1e9 * tf.cast(profile_weights > 0, tf.float32)  # already picked: not ranked
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(target, logits))
        variables = projection.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    def epoch() -> float:
        order = rng.permutation(len(targets))
        losses = []
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            losses.append(float(step(weights[batch].toarray(), targets[batch])))
        return float(np.mean(losses))

    def measure() -> float:
        vectors = space(tf.constant(features[measured_rows])).numpy()
        return _profile_recall(vectors, val_weights, relevant)

    return epoch, measure, "held-out recall@10 of the average profile"


def finetune(
    workspace, config: FinetuneConfig, *, log: Callable[[str], None] | None = print
) -> FinetuneReport:
    """Train, keep the best epoch, register the model; returns what was measured."""
    import tensorflow as tf
    import tf_keras as keras

    from recsys.embedders import lite0

    if config.mode not in ("labels", "interactions"):
        raise RecsysError(f"finetune mode {config.mode!r}: use --labels or --interactions")
    if not 0 < config.val_share < 1:
        raise RecsysError(f"--val-share must be between 0 and 1, got {config.val_share}")
    if not 0 <= config.unfreeze <= 8:
        raise RecsysError(f"--unfreeze must be 0 to 8 blocks, got {config.unfreeze}")
    models_dir = workspace.settings.models_dir
    _clear_leftovers(models_dir)
    name = _name(models_dir, config)
    started = time.perf_counter()
    say = log or (lambda _: None)
    rng = np.random.default_rng(config.seed)

    with workspace.session() as s:
        rows = s.execute(select(store.Item.id, store.Item.label).order_by(store.Item.id)).all()
    if len(rows) < 10:
        raise RecsysError("finetune needs a catalogue of at least 10 items: run `recsys ingest`")
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    if config.mode == "labels":
        labels = np.array([r[1] for r in rows], dtype=object)
        keep = np.array([label is not None for label in labels])
        ids, labels = ids[keep], labels[keep]
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise RecsysError("finetune --labels needs items with at least two different labels")
        cold = np.zeros(len(ids), dtype=bool)
    else:
        from recsys.evaluate import load_history, new_items, temporal_split

        new = set(new_items(ids, config.cold_share, config.seed).tolist()) if config.cold_share > 0 else set()
        cold = np.array([int(i) in new for i in ids])
        history = load_history(workspace)
        if config.holdout > 0:  # the evaluation's held-out events are never trained on
            history = temporal_split(history, fraction=config.holdout).train
    val = np.zeros(len(ids), dtype=bool)
    candidates = np.where(~cold)[0]
    val[
        rng.choice(candidates, size=max(1, int(round(len(candidates) * config.val_share))), replace=False)
    ] = True

    tf.keras.utils.set_random_seed(config.seed)
    model = lite0.load(models_dir, include_top=False)
    optimizer = keras.optimizers.Adam(config.learning_rate)
    if config.mode == "interactions":
        projection = keras.layers.Dense(
            lite0.HEAD_CHANNELS, use_bias=False, kernel_initializer="identity", name=PROJECTION
        )
        model = keras.Model(model.input, projection(model.output))
        trained = projection
        epoch, measure, metric = _profile_task(
            workspace, config, ids, cold, val, history, projection, optimizer, rng, say
        )
    else:
        lower, upper = _split(model, config.unfreeze)
        trainable = ~cold  # cold items are never even run through the frozen part for training
        cache = _cache(workspace, lower, ids[trainable].tolist(), config.augment, config.seed, log)
        row_in_cache = np.full(len(ids), -1)
        row_in_cache[trainable] = np.arange(int(trainable.sum()))
        plain = cache[0]
        val_t = val[trainable]
        index = {c: n for n, c in enumerate(classes)}
        targets = np.array([index[label] for label in labels[trainable]], dtype=np.int32)
        head = keras.layers.Dense(len(classes), name="finetune_classes")
        dropout = keras.layers.Dropout(0.2)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        train_rows = np.where(~val_t)[0]
        variables = None

        @tf.function(reduce_retracing=True)
        def step(x, y):
            with tf.GradientTape() as tape:
                logits = head(dropout(upper(x, training=True), training=True))
                loss = loss_fn(y, logits)
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return loss

        def measure() -> float:
            return _nn_accuracy(_embed(upper, plain), targets, val_t)

        metric = "held-out 1-NN label accuracy"
        head.build((None, lite0.HEAD_CHANNELS))
        variables = upper.trainable_variables + head.trainable_variables

        def epoch() -> float:
            order = rng.permutation(train_rows)
            losses = []
            for start in range(0, len(order), config.batch_size):
                rows_ = order[start : start + config.batch_size]
                views = rng.integers(0, cache.shape[0], len(rows_))
                x = cache[views, rows_].astype(np.float32)
                losses.append(float(step(x, targets[rows_])))
            return float(np.mean(losses))

        trained = upper

    frozen = measure()
    say(f"frozen {BASE_MODEL}: {metric} {frozen:.4f}")
    best, best_epoch, best_weights, history_rows, waited = frozen, 0, trained.get_weights(), [], 0
    for n in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        loss = epoch()
        score = measure()
        history_rows.append({"epoch": n, "loss": round(loss, 4), metric: round(score, 4)})
        say(
            f"epoch {n}/{config.epochs}: loss {loss:.4f}, {metric} {score:.4f} "
            f"({time.perf_counter() - t0:.0f} s)"
        )
        if score > best:
            best, best_epoch, best_weights, waited = score, n, trained.get_weights(), 0
        else:
            waited += 1
            if waited >= config.patience:
                say(f"no gain for {config.patience} epochs: stopping, keeping epoch {best_epoch}")
                break
    trained.set_weights(best_weights)  # the shared layers: ``model`` now holds the best epoch
    params = {k: v for k, v in asdict(config).items() if k != "name"}
    report = FinetuneReport(
        name,
        config.mode,
        frozen,
        best,
        metric,
        round(time.perf_counter() - started, 1),
        len(history_rows),
        best_epoch,
        params,
        history_rows,
    )
    _save(models_dir, name, model, report)
    return report


def _save(models_dir: Path, name: str, model, report: FinetuneReport) -> None:
    """Write weights and meta.json into a temporary folder, then rename it into place."""
    root = folder(models_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model.save_weights(str(tmp / "weights.h5"))
        meta = {
            "name": name,
            "base": BASE_MODEL,
            "projection": any(layer.name == PROJECTION for layer in model.layers),
            "created_at": store.utcnow().isoformat(),
            **report.as_dict(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        os.replace(tmp, root / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
