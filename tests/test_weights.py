"""Lite0: the torch-free reader, the conversion, and the model as an ImageNet classifier."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from recsys.embedders import lite0
from recsys.embedders.torch_pickle import TorchFileError, load_legacy_state_dict
from tests.conftest import BUNDLED, SHARED

REFERENCE = SHARED / "reference" / "efficientnet_lite0_imagenet_torchnames.npz"
IMAGENET_DAISY = 985  # ImageNet-1k class index of "daisy"


def test_reader_rejects_files_that_are_not_legacy_checkpoints(tmp_path):
    bad = tmp_path / "x.pth"
    bad.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(TorchFileError, match="bad magic"):
        load_legacy_state_dict(bad)
    bad.write_bytes(b"")
    with pytest.raises(TorchFileError):
        load_legacy_state_dict(bad)


def test_packaged_checkpoint_has_every_lite0_tensor():
    state = load_legacy_state_dict(lite0.packaged_weights_path())
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert len([k for k in state if k.startswith("_blocks.")]) > 0


@pytest.mark.skipif(not REFERENCE.exists(), reason="../shared/reference not present")
def test_reader_equals_reference_arrays():
    state = load_legacy_state_dict(lite0.packaged_weights_path())
    reference = np.load(REFERENCE)
    assert set(reference.files) == set(state)
    for name in reference.files:
        np.testing.assert_array_equal(state[name], reference[name], err_msg=name)


@pytest.mark.skipif(not REFERENCE.exists(), reason="../shared/reference not present")
def test_converted_keras_weights_equal_reference(models_cache):
    model = lite0.load(models_cache, include_top=True)
    reference = np.load(REFERENCE)
    stem = model.get_layer("conv_stem").get_weights()[0]
    np.testing.assert_array_equal(stem, reference["_conv_stem.weight"].transpose(2, 3, 1, 0))
    depthwise = model.get_layer("blocks_7_depthwise_conv").get_weights()[0]
    np.testing.assert_array_equal(
        depthwise, reference["_blocks.7._depthwise_conv.weight"].transpose(2, 3, 0, 1)
    )
    gamma, beta, mean, var = model.get_layer("blocks_15_bn2").get_weights()
    np.testing.assert_array_equal(var, reference["_blocks.15._bn2.running_var"])
    kernel, bias = model.get_layer("fc").get_weights()
    np.testing.assert_array_equal(kernel, reference["_fc.weight"].T)
    np.testing.assert_array_equal(bias, reference["_fc.bias"])
    assert model.count_params() == sum(
        reference[k].size for k in reference.files if not k.endswith("num_batches_tracked")
    )


def test_architecture_matches_published_facts():
    model = lite0.build(include_top=False)
    assert model.output_shape == (None, 1280)
    assert len({layer.name.split("_")[1] for layer in model.layers if layer.name.startswith("blocks_")}) == 16
    assert model.get_layer("bn0").epsilon == 1e-3
    # residual adds only where stride 1 and channels unchanged: 16 blocks, 7 stage starts -> 9
    assert len([ly for ly in model.layers if ly.name.endswith("_add")]) == 9


def test_cached_weights_load_identically(models_cache, tmp_path):
    fresh = tmp_path / "fresh"
    converted = lite0.load(fresh, include_top=True)  # converts and writes the cache
    assert (fresh / "efficientnet-lite0.weights.h5").is_file()
    cached = lite0.load(fresh, include_top=True)  # reads the cache
    for a, b in zip(converted.get_weights(), cached.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_classifier_names_daisy_for_bundled_daisy_photos(models_cache):
    import tensorflow as tf

    from recsys.embedders import decode_image

    model = lite0.load(models_cache, include_top=True)
    files = sorted((BUNDLED / "daisy").glob("*.jpg"))
    images = tf.stack([decode_image(tf.io.read_file(str(f))) for f in files])
    top1 = np.argmax(model(images, training=False).numpy(), axis=1)
    share = float(np.mean(top1 == IMAGENET_DAISY))
    assert share > 0.6, share
