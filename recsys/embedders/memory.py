"""The look-alike memory: the layer a `recsys finetune --interactions` embedder ends with.

Pooled Lite0 features -> the softmax-weighted mean of the vectors the two-tower learned for the
trained pictures they look most like, re-normalised: ``twotower.serve.borrowed_vectors`` as a Keras
layer, so the embedder is one model that any picture goes through.

Imports TensorFlow: load this module only where a fine-tuned model is built or loaded.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

#: The layer's name inside a saved embedder.
NAME = "look_alike_memory"


class LookAlikeMemory(keras.layers.Layer):
    """Pictures -> the mix of what was learned for the trained pictures they resemble.

    Args:
        items: Trained pictures remembered.
        features: Width of the pooled features.
        dim: Width of the learned vectors.
        neighbours: Look-alikes mixed per picture.
        temperature: Softmax temperature over their cosines.
    """

    def __init__(self, items: int, features: int, dim: int, neighbours: int, temperature: float, **kw):
        super().__init__(**kw)
        self.items, self.features, self.dim = items, features, dim
        self.neighbours, self.temperature = min(neighbours, items), temperature

    def build(self, input_shape) -> None:
        fixed = {"trainable": False, "initializer": "zeros"}
        self.center = self.add_weight(name="center", shape=(self.features,), **fixed)
        self.keys = self.add_weight(name="keys", shape=(self.items, self.features), **fixed)
        self.values = self.add_weight(name="values", shape=(self.items, self.dim), **fixed)
        super().build(input_shape)

    def call(self, pooled):
        x = tf.math.l2_normalize(tf.math.l2_normalize(pooled, axis=-1) - self.center, axis=-1)
        best = tf.math.top_k(tf.matmul(x, self.keys, transpose_b=True), k=self.neighbours)
        weights = tf.nn.softmax((best.values - best.values[:, :1]) / self.temperature, axis=-1)
        mixed = tf.einsum("nk,nkd->nd", weights, tf.gather(self.values, best.indices))
        return tf.math.l2_normalize(mixed, axis=-1)

    def get_config(self) -> dict:
        keys = ("items", "features", "dim", "neighbours", "temperature")
        return {**super().get_config(), **{k: getattr(self, k) for k in keys}}

    def describe(self) -> dict:
        """What a saved embedder's meta.json keeps to build the layer again."""
        return {
            "items": self.items,
            "dim": self.dim,
            "neighbours": self.neighbours,
            "temperature": self.temperature,
        }


def load_finetuned(folder, meta: dict):
    """The fine-tuned Keras model (RGB [0, 255] -> image vectors) saved in ``folder``."""
    from recsys.embedders import lite0

    model = lite0.build(include_top=False)
    memory = meta.get("memory")
    if memory:  # `--interactions`: what was learned of the trained pictures, mixed by look
        layer = LookAlikeMemory(
            memory["items"],
            lite0.HEAD_CHANNELS,
            memory["dim"],
            memory["neighbours"],
            memory["temperature"],
            name=NAME,
        )
        model = keras.Model(model.input, layer(model.output))
    model.load_weights(str(folder / "weights.h5"))
    return model
