"""Tests of the backbone registry: shapes, taps, weights handling, real weights."""

import os

import numpy as np
import pytest

import keras

from keras_reid.models import backbones

DATA_ROOT = os.environ.get("REID_DATA_ROOT", "")
WEIGHTS = os.path.join(DATA_ROOT, "weights")
needs_data = pytest.mark.skipif(
    not DATA_ROOT or not os.path.isdir(WEIGHTS),
    reason="REID_DATA_ROOT with weights/ not available")


@pytest.mark.parametrize("name, size, dim, normalization", [
    ("mobilenet_v1", 32, 256, "tf"),
    ("mobilenet_v2", 32, 1280, "tf"),
    ("resnet50", 32, 2048, "caffe"),
    ("inception_v3", 75, 2048, "tf"),
    ("efficientnetv2_b0", 32, 1280, "tf"),
])
def test_keras_application_backbones(name, size, dim, normalization):
  backbone = backbones.build_backbone(name, input_shape=(size, size, 3), alpha=0.25)
  assert backbone.feature_dim == dim
  assert backbone.normalization == normalization
  assert backbone.model.name == "backbone"
  outputs = backbone.model(np.zeros((2, size, size, 3), "float32"))
  assert tuple(outputs["feature"].shape) == (2, dim)
  for key in ("aux1", "aux2"):
    assert len(outputs[key].shape) == 4 and outputs[key].shape[0] == 2


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


@needs_data
@pytest.mark.slow
def test_real_mobilenet_with_top_classifies_the_cat():
  model = keras.applications.MobileNet(
      input_shape=(224, 224, 3), alpha=0.25, include_top=True,
      weights=os.path.join(WEIGHTS, "mobilenet_v1_0.25_imagenet_bn.weights.h5"))
  image = keras.utils.load_img(os.path.join(WEIGHTS, "samples", "cat.bmp"),
                               target_size=(224, 224))
  x = keras.applications.mobilenet.preprocess_input(
      keras.utils.img_to_array(image)[None])  # pixels to [-1, 1]
  assert x.min() >= -1 and x.max() <= 1
  k = int(np.argmax(model(x, training=False)[0]))
  with open(os.path.join(WEIGHTS, "imagenet_labels.txt")) as f:
    labels = f.read().splitlines()
  assert "cat" in labels[k + 1].lower()  # line 0 is "background"


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
