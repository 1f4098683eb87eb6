"""The Keras ranker: a deep & cross network (TFRS's ``Cross`` layer) scoring each candidate from
its features, trained with a listwise softmax over each person's candidates. Imports TensorFlow:
load it lazily."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from recsys.early_stopping import run_epochs
from recsys.metrics import mean_recall
from recsys.ranker import Lists, RankerConfig


class Ranker(keras.Model):
    """Features (lists, candidates, F) -> a score per candidate (lists, candidates).

    Args:
        n_features: F.
        mean: Per feature, the training mean (inputs are standardised inside the model, so a saved
            ranker carries its own scaling).
        std: Per feature, the training standard deviation.
        config: The hyper-parameters.
    """

    def __init__(self, n_features: int, mean: np.ndarray, std: np.ndarray, config: RankerConfig) -> None:
        super().__init__()
        self.config = config
        self.mean = tf.Variable(mean.astype(np.float32), trainable=False, name="mean")
        self.std = tf.Variable(np.maximum(std, 1e-6).astype(np.float32), trainable=False, name="std")
        self.cross = tfrs.layers.dcn.Cross()
        self.deep = keras.Sequential(
            [
                keras.layers.Dense(config.hidden, activation="relu"),
                keras.layers.Dense(config.hidden // 2, activation="relu"),
                keras.layers.Dense(1),
            ]
        )
        self.optimizer_ = keras.optimizers.Adam(config.learning_rate)
        self(tf.zeros((1, 1, n_features)))  # build every weight

    def call(self, features, training=False):
        x = (features - self.mean) / self.std
        return self.deep(self.cross(x), training=training)[..., 0]

    @tf.function(reduce_retracing=True)
    def train_step_(self, features, labels, mask):
        with tf.GradientTape() as tape:
            logits = tf.where(mask, self(features, training=True), -1e9)
            target = labels / tf.maximum(tf.reduce_sum(labels, axis=1, keepdims=True), 1e-9)
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(target, logits))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer_.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        return loss

    def epoch(self, features: list[np.ndarray], labels: list[np.ndarray], rng: np.random.Generator) -> float:
        """One pass over the lists (each with at least one positive) in a seeded order."""
        order = rng.permutation(len(features))
        losses = []
        for start in range(0, len(order), self.config.lists):
            batch = order[start : start + self.config.lists]
            x, y, mask = pad([features[i] for i in batch], [labels[i] for i in batch])
            losses.append(float(self.train_step_(tf.constant(x), tf.constant(y), tf.constant(mask))))
        return float(np.mean(losses)) if losses else float("nan")

    def scores(self, features: list[np.ndarray], chunk: int = 256) -> list[np.ndarray]:
        """Per list, a score per candidate."""
        out: list[np.ndarray] = []
        for start in range(0, len(features), chunk):
            part = features[start : start + chunk]
            x, _, _ = pad(part, [np.zeros(len(f), np.float32) for f in part])
            values = self(tf.constant(x), training=False).numpy()
            out.extend(values[n, : len(f)] for n, f in enumerate(part))
        return out


def pad(features: list[np.ndarray], labels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lists, longest, F) features, (lists, longest) labels and mask, zero-padded."""
    longest = max((len(f) for f in features), default=0)
    n_features = features[0].shape[1] if features else 0
    x = np.zeros((len(features), max(longest, 1), n_features), np.float32)
    y = np.zeros((len(features), max(longest, 1)), np.float32)
    mask = np.zeros((len(features), max(longest, 1)), bool)
    for n, (f, label) in enumerate(zip(features, labels, strict=True)):
        x[n, : len(f)], y[n, : len(f)], mask[n, : len(f)] = f, label, True
    return x, y, mask


def train_rankers(
    lists: Lists,
    labels: list[np.ndarray],
    relevant: list[set[int]],
    config: RankerConfig,
    rng: np.random.Generator,
    say=print,
) -> tuple[list[Ranker], list[dict]]:
    """``config.folds`` rankers, each learning from the lists outside its fold and stopping early on
    recall@10 of the lists inside it; and per fold, its best epoch and figure.

    Args:
        lists: The candidates and features, one list per person.
        labels: Per list, 1 for each candidate the person picked in the validation events.
        relevant: Per list, every item (catalogue row) the person picked there, candidate or not.
        config: The hyper-parameters.
        rng: Seeds the folds and the order of lists.
        say: Progress lines.
    """
    folds = np.array_split(rng.permutation(len(lists.rows)), config.folds)
    rankers, figures = [], []
    for fold, held in enumerate(folds):
        inside = set(held.tolist())
        fit_at = [n for n in range(len(lists.rows)) if n not in inside and labels[n].any()]
        stop_at = sorted(inside)
        stacked = np.vstack([lists.features[n] for n in fit_at])
        tf.keras.utils.set_random_seed(config.seed * 100 + fold)
        ranker = Ranker(stacked.shape[1], stacked.mean(axis=0), stacked.std(axis=0), config)

        def measure(ranker=ranker, stop_at=stop_at) -> float:
            scored = ranker.scores([lists.features[n] for n in stop_at])
            tops = [
                lists.rows[n][np.argsort(-s, kind="stable")[:10]].tolist()
                for n, s in zip(stop_at, scored, strict=True)
            ]
            return mean_recall(tops, [relevant[n] for n in stop_at])

        done = run_epochs(
            lambda ranker=ranker, fit_at=fit_at: ranker.epoch(
                [lists.features[n] for n in fit_at], [labels[n] for n in fit_at], rng
            ),
            measure,
            epochs=config.epochs,
            patience=config.patience,
            metric="val_recall@10",
            snapshot=ranker.get_weights,
            restore=ranker.set_weights,
            say=lambda line, fold=fold: say(f"ranker {fold + 1}/{config.folds}: {line}"),
        )
        rankers.append(ranker)
        figures.append({"fold": fold + 1, "epochs": done.best_epoch, "val_recall@10": round(done.best, 5)})
    return rankers, figures
