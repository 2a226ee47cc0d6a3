"""Tests of the GoogLeNet port and its auxiliary heads."""

import numpy as np
import pytest
import tensorflow as tf

from configs import default
from keras_reid import losses
from keras_reid.models import builders
from keras_reid.models import googlenet


def _trainable(weights):
  return sum(int(np.prod(w.shape)) for w in weights)


def test_parameter_count_matches_torchvision():
  model = googlenet.build_googlenet((64, 64, 3), include_top=True)
  total = _trainable(model.trainable_weights)
  fc = _trainable(model.get_layer("fc").trainable_weights)
  assert total == 6_624_904
  assert total - fc == 5_599_904
  # The "5x5" branch is 3x3 as in torchvision's weights.
  assert model.get_layer("inception3a_branch3_1_conv").kernel.shape == (3, 3, 16, 32)


@pytest.mark.parametrize("shape, aux_hw", [((128, 64, 3), (8, 4)), ((33, 17, 3), (2, 1))])
def test_endpoints(shape, aux_hw):
  model = googlenet.build_googlenet(shape)
  outputs = model(np.zeros((1, *shape), "float32"))
  assert tuple(outputs["feature"].shape) == (1, 1024)
  assert tuple(outputs["aux1"].shape) == (1, *aux_hw, 512)
  assert tuple(outputs["aux2"].shape) == (1, *aux_hw, 528)


def test_training_model_has_six_losses():
  config = default.get_config().model
  config.update(backbone="googlenet", aux_heads=True)
  model = builders.build_training_model(config, num_classes=2, input_shape=(32, 16, 3),
                                        seed=0)
  images = np.random.default_rng(0).uniform(-1, 1, (4, 32, 16, 3)).astype("float32")
  inputs = {"images": images, "pair_i": np.array([0, 1, 0, 2], "int32"),
            "pair_j": np.array([1, 0, 2, 3], "int32")}

  @tf.function  # Graph mode, as in training (static-shape checks differ).
  def forward(inputs):
    with tf.GradientTape() as tape:
      outputs = model(inputs, training=True)
      terms = losses.compute_losses(outputs, np.array([0, 0, 1, 1]),
                                    np.array([1.0, 1.0, 0.0, 0.0]))
    gradients = tape.gradient(terms["total"], model.trainable_variables)
    return outputs, terms, gradients

  outputs, terms, gradients = forward(inputs)
  assert tuple(outputs["aux2_verification_logits"].shape) == (4, 2)
  assert all(g is not None for g in gradients)
  assert sorted(terms) == ["aux1_cls", "aux1_ver", "aux2_cls", "aux2_ver", "cls",
                           "total", "ver"]
  assert np.isfinite(float(terms["total"]))
  assert builders.normalization_for(config) == "tf"


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
