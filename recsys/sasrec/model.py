"""The SASRec Keras model. Imports TensorFlow: load it lazily."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from recsys.sasrec import SasrecConfig


class Block(keras.layers.Layer):
    """Pre-norm causal self-attention, then a position-wise feed-forward, each with a residual."""

    def __init__(self, config: SasrecConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.attention = keras.layers.MultiHeadAttention(
            config.heads, config.dim // config.heads, dropout=config.dropout
        )
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-6)
        self.feed = keras.Sequential(
            [
                keras.layers.Dense(config.dim, activation="relu"),
                keras.layers.Dropout(config.dropout),
                keras.layers.Dense(config.dim),
                keras.layers.Dropout(config.dropout),
            ]
        )

    def call(self, x, mask, training=False):
        h = self.norm1(x)
        x = x + self.attention(h, h, attention_mask=mask, training=training)
        return x + self.feed(self.norm2(x), training=training)


class Sasrec(keras.Model):
    """Item ids (B, L), 0 for padding, oldest first -> one vector per position (B, L, dim); a
    position's logits over the catalogue are its vector times the item embeddings (shared).

    Args:
        n_items: Items of the catalogue (rows 1..n; row 0 is padding).
        config: The hyper-parameters.
    """

    def __init__(self, n_items: int, config: SasrecConfig) -> None:
        super().__init__()
        self.config = config
        self.items = keras.layers.Embedding(n_items + 1, config.dim, name="items")
        self.positions = keras.layers.Embedding(config.length, config.dim, name="positions")
        self.dropout = keras.layers.Dropout(config.dropout)
        self.stack = [Block(config, name=f"block{n}") for n in range(config.blocks)]
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6)
        self.optimizer_ = keras.optimizers.Adam(config.learning_rate)
        self(tf.zeros((1, config.length), tf.int32))  # build every weight

    def call(self, rows, training=False):
        present = tf.cast(rows > 0, tf.float32)[..., None]
        x = self.items(rows) * (self.config.dim**0.5) + self.positions(tf.range(tf.shape(rows)[1]))[None]
        x = self.dropout(x, training=training) * present
        steps = tf.shape(rows)[1]
        causal = tf.linalg.band_part(tf.ones((steps, steps), tf.bool), -1, 0)[None]  # see the past only
        mask = tf.logical_and(causal, (rows > 0)[:, None, :])  # and never a padding position
        for block in self.stack:
            x = block(x, mask, training=training) * present
        return self.norm(x)

    def logits(self, hidden):
        return tf.matmul(hidden, self.items.embeddings[1:], transpose_b=True)

    @tf.function(reduce_retracing=True)
    def train_step_(self, inputs, targets):
        with tf.GradientTape() as tape:
            present = targets > 0  # logits only where there is a next item (a third are padding)
            hidden = tf.boolean_mask(self(inputs, training=True), present)
            logits = tf.matmul(hidden, self.items.embeddings[1:], transpose_b=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(tf.boolean_mask(targets, present) - 1, logits)
            )
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer_.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        return loss

    def epoch(self, inputs: np.ndarray, targets: np.ndarray, rng: np.random.Generator) -> float:
        """One pass over the windows in a seeded order; the mean loss."""
        order = rng.permutation(len(inputs))
        losses = []
        for start in range(0, len(order), self.config.batch_size):
            batch = order[start : start + self.config.batch_size]
            losses.append(float(self.train_step_(tf.constant(inputs[batch]), tf.constant(targets[batch]))))
        return float(np.mean(losses)) if losses else float("nan")

    def scores(self, inputs: np.ndarray, chunk: int = 512) -> np.ndarray:
        """Logits over the catalogue after each row's latest item: (N, n_items)."""
        out = []
        for start in range(0, len(inputs), chunk):
            hidden = self(tf.constant(inputs[start : start + chunk]), training=False)[:, -1]
            out.append(self.logits(hidden[:, None])[:, 0].numpy())
        return np.vstack(out) if out else np.zeros((0, self.items.input_dim - 1), np.float32)
