"""`recsys finetune --labels`: Lite0's last blocks trained to classify the catalogue's labels.

Only the last ``unfreeze`` MBConv blocks and the head convolution learn, so it stays fast on a
2-core CPU: the frozen part runs once per picture (and per augmented view) and is cached;
batch-norm statistics stay as ImageNet left them. Imports TensorFlow: load it lazily.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras
from sqlalchemy import select

from recsys import store
from recsys.early_stopping import run_epochs
from recsys.embedders import decode_image, lite0

LITE0_BLOCKS = 16
#: What the task stops on, as named in its epoch rows and report.
METRIC = "held-out 1-NN label accuracy"


def split_model(model, unfreeze: int):
    """(lower, upper): the frozen part up to the last ``unfreeze`` blocks, and the rest."""
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


def views(images, augment: int, rng: np.random.Generator):
    """The plain batch, then ``augment`` randomly cropped, flipped and brightened copies."""
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


def cache_frozen(
    workspace, lower, item_ids: list[int], augment: int, seed: int, progress: bool
) -> np.ndarray:
    """(views, items, h, w, c) float16 outputs of the frozen part, from the stored pictures."""
    from tqdm import tqdm

    with workspace.session() as s:
        paths = dict(
            s.execute(select(store.Item.id, store.Item.image_path).where(store.Item.id.in_(item_ids))).all()
        )
    rng = np.random.default_rng(seed)
    infer = tf.function(lambda x: lower(x, training=False), reduce_retracing=True)
    out = None
    batch = 64
    for start in tqdm(
        range(0, len(item_ids), batch), desc="caching frozen layers", unit="batch", disable=not progress
    ):
        chunk = item_ids[start : start + batch]
        images = tf.stack([decode_image(tf.io.read_file(str(workspace.image_file(paths[i])))) for i in chunk])
        for v, view in enumerate(views(images, augment, rng)):
            features = infer(view).numpy().astype(np.float16)
            if out is None:
                out = np.zeros((augment + 1, len(item_ids), *features.shape[1:]), np.float16)
            out[v, start : start + len(chunk)] = features
    return out


def embed_cached(upper, cached: np.ndarray) -> np.ndarray:
    """Unit pooled features of the plain view of every cached item."""
    out = []
    for start in range(0, cached.shape[0], 256):
        out.append(upper(cached[start : start + 256].astype(np.float32), training=False).numpy())
    vectors = np.concatenate(out)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def nn_accuracy(vectors: np.ndarray, labels: np.ndarray, val: np.ndarray) -> float:
    """1-NN label accuracy of the held-out items, queried against the training items (centred
    by the training items' mean, as the retrieval space is)."""
    train = ~val
    x = vectors - vectors[train].mean(axis=0)
    space = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    nearest = np.argmax(space[val] @ space[train].T, axis=1)
    return float(np.mean(labels[train][nearest] == labels[val]))


def train_labels(workspace, config, model, ids, labels, classes, val, rng, say, progress: bool):
    """(frozen figure, epochs run) of ``--labels``; ``model`` ends up holding the best epoch's
    weights (its upper layers are trained in place)."""
    optimizer = keras.optimizers.Adam(config.learning_rate)
    lower, upper = split_model(model, config.unfreeze)
    cache = cache_frozen(workspace, lower, ids.tolist(), config.augment, config.seed, progress)
    plain = cache[0]
    index = {c: n for n, c in enumerate(classes)}
    targets = np.array([index[label] for label in labels], dtype=np.int32)
    head = keras.layers.Dense(len(classes), name="finetune_classes")
    dropout = keras.layers.Dropout(0.2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    train_rows = np.where(~val)[0]
    head.build((None, lite0.HEAD_CHANNELS))
    variables = upper.trainable_variables + head.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = head(dropout(upper(x, training=True), training=True))
            loss = loss_fn(y, logits)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    def measure() -> float:
        return nn_accuracy(embed_cached(upper, plain), targets, val)

    def epoch() -> float:
        order = rng.permutation(train_rows)
        losses = []
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            picked = rng.integers(0, cache.shape[0], len(rows))
            losses.append(float(step(cache[picked, rows].astype(np.float32), targets[rows])))
        return float(np.mean(losses))

    frozen = measure()
    say(f"frozen {lite0.NAME}: {METRIC} {frozen:.4f}")
    done = run_epochs(
        epoch,
        measure,
        epochs=config.epochs,
        patience=config.patience,
        metric=METRIC,
        snapshot=upper.get_weights,  # the layers ``model`` shares: it now holds the best epoch
        restore=upper.set_weights,
        initial=frozen,
        say=say,
    )
    return frozen, done
