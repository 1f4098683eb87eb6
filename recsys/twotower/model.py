"""The two-tower Keras model (TensorFlow Recommenders). Imports TensorFlow: load it lazily."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from recsys.twotower import TwoTowerConfig


def _mlp(config: TwoTowerConfig, name: str) -> keras.Sequential:
    return keras.Sequential(
        [keras.layers.Dense(config.hidden, activation="relu"), keras.layers.Dense(config.dim)], name=name
    )


class TwoTowerModel(tfrs.Model):
    """Item and user towers over a frozen image table, trained with TFRS's retrieval task.

    Args:
        image_table: The towers' image inputs, row 0 = padding / unknown, rows 1.. = the
            vocabulary's items.
        n_users: Users of the vocabulary (rows 1..n of the user-id embedding).
        config: The hyper-parameters.
        center: The catalogue mean the image inputs were centred on (None: as stored); kept with
            the model so that serving centres items added later the same way.
    """

    def __init__(
        self, image_table: np.ndarray, n_users: int, config: TwoTowerConfig, center: np.ndarray | None = None
    ) -> None:
        super().__init__()
        n_items = image_table.shape[0] - 1
        self.config = config
        self.center = center
        self.image_table = tf.constant(image_table, dtype=tf.float32)
        self.item_mlp = _mlp(config, "item_mlp")
        self.user_mlp = _mlp(config, "user_mlp")
        self.item_id = (
            keras.layers.Embedding(n_items + 1, config.dim, name="item_id") if config.item_ids else None
        )
        self.user_id = (
            keras.layers.Embedding(n_users + 1, config.dim, name="user_id") if config.user_ids else None
        )
        self.history_id = (
            keras.layers.Embedding(n_items + 1, config.dim, name="history_id") if config.history_ids else None
        )
        self.task = tfrs.tasks.Retrieval(temperature=config.temperature, remove_accidental_hits=True)
        self.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
        # every layer built once, so weights exist (for saving, loading and warm starts)
        self.item_tower(tf.zeros((1, image_table.shape[1])), tf.zeros((1,), tf.int32))
        self.user_tower(
            tf.zeros((1, 1, image_table.shape[1])), tf.zeros((1, 1), tf.int32), tf.zeros((1,), tf.int32)
        )

    @property
    def history_length(self) -> int:
        return self.config.history_length

    @property
    def dim(self) -> int:
        return self.config.dim

    def item_tower(self, image_vectors, id_rows):
        x = self.item_mlp(image_vectors)
        if self.item_id is not None:
            x = x + self.item_id(id_rows)
        return tf.math.l2_normalize(x, axis=-1)

    def user_tower(self, history_vectors, history_rows, user_rows):
        """``history_vectors``: (B, H, D) image inputs of the history rows (oldest first,
        zero-padded after the latest), taken from the caller so that items the vocabulary
        does not know (added after training) still count by their pixels."""
        x = self.user_mlp(self.history_mean(history_vectors))
        if self.history_id is not None:  # the mean id embedding of the history (row 0: padding)
            mask = tf.cast(history_rows > 0, tf.float32)[..., None]
            ids = tf.reduce_sum(self.history_id(history_rows) * mask, axis=1)
            x = x + ids / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        if self.user_id is not None:
            x = x + self.user_id(user_rows)
        return tf.math.l2_normalize(x, axis=-1)

    def history_mean(self, vectors):
        """The history's image mean, the latest items weighing most (``recency_half_life``)."""
        present = tf.cast(tf.reduce_any(vectors != 0, axis=-1), tf.float32)  # (B, H); 0: padding
        weights = present
        half_life = self.config.recency_half_life
        if half_life > 0:
            count = tf.reduce_sum(present, axis=1, keepdims=True)
            age = count - 1.0 - tf.range(tf.shape(vectors)[1], dtype=tf.float32)[None, :]
            weights = weights * tf.pow(0.5, tf.maximum(age, 0.0) / half_life)
        total = tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1e-9)
        return tf.reduce_sum(vectors * weights[..., None], axis=1) / total

    def compute_loss(self, features, training=False):
        history = features["history"]
        users = self.user_tower(tf.gather(self.image_table, history), history, features["user"])
        id_rows = features["item"]
        if training and self.config.id_dropout > 0:  # some items must be recognised by pixels alone
            dropped = tf.random.uniform(tf.shape(id_rows)) < self.config.id_dropout
            id_rows = tf.where(dropped, tf.zeros_like(id_rows), id_rows)
        items = self.item_tower(tf.gather(self.image_table, features["item"]), id_rows)
        probability = features["probability"] if self.config.logq else None
        return self.task(
            users,
            items,
            candidate_ids=features["item"],
            candidate_sampling_probability=probability,
            compute_metrics=False,
        )

    def item_vectors(self, inputs: np.ndarray, rows: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Item-tower vectors of image inputs with their id rows (0: unknown), a chunk at a time."""
        out = [
            self.item_tower(inputs[start : start + chunk], rows[start : start + chunk]).numpy()
            for start in range(0, len(rows), chunk)
        ]
        return np.vstack(out) if out else np.zeros((0, self.dim), np.float32)
