"""FusedBatchNormalization against Keras' BatchNormalization (the oracle).

Guaranteed (keras_reid/models/fused_batchnorm.py, backbones.build_backbone):
  * in training, outputs, input / gamma / beta gradients and the moving
    mean and variance equal Keras' to float32 rounding, with and without
    scale / center, and the moving variance gets the biased variance;
  * inference and other shapes take Keras' path (identical);
  * model.fused_batchnorm rebuilds a backbone with the fused layer in place
    of every BatchNormalization, same weights, same outputs, and its
    checkpoint's variables are the plain backbone's.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import default
from keras_reid.models import backbones
from keras_reid.models import builders
from keras_reid.models.fused_batchnorm import FusedBatchNormalization


def _pair(**kwargs):
  shape = (4, 5, 3, 6)
  plain = keras.layers.BatchNormalization(**kwargs)
  fused = FusedBatchNormalization(**kwargs)
  rng = np.random.default_rng(1)
  for layer in (plain, fused):
    layer.build(shape)
  for plain_w, fused_w in zip(plain.weights, fused.weights):
    value = rng.normal(size=plain_w.shape).astype(np.float32)
    if "variance" in plain_w.path:
      value = np.abs(value) + 0.5
    plain_w.assign(value)
    fused_w.assign(value)
  return plain, fused, shape


def _train_step(layer, x, upstream):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x, training=True)
    loss = tf.reduce_sum(y * upstream)
  grads = tape.gradient(loss, [x] + layer.trainable_weights)
  return [y] + grads + [layer.moving_mean, layer.moving_variance]


@pytest.mark.parametrize("kwargs", [
    dict(momentum=0.9, epsilon=1e-3),
    dict(momentum=0.99, epsilon=1e-5, scale=False),
    dict(momentum=0.5, epsilon=1e-3, center=False),
])
def test_training_equals_keras(kwargs):
  plain, fused, shape = _pair(**kwargs)
  rng = np.random.default_rng(0)
  for step in range(2):  # the second step starts from updated statistics
    x = tf.constant(rng.normal(2.0, 3.0, shape).astype(np.float32))
    upstream = tf.constant(rng.normal(size=shape).astype(np.float32))
    want = _train_step(plain, x, upstream)
    got = _train_step(fused, x, upstream)
    assert len(got) == len(want)
    for w, g in zip(want, got):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5,
                                 atol=1e-5, err_msg=f"step {step}")


def test_moving_variance_gets_the_biased_variance():
  _, fused, shape = _pair(momentum=0.0, epsilon=1e-3)
  x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
  fused(tf.constant(x), training=True)
  np.testing.assert_allclose(fused.moving_variance.numpy(),
                             x.reshape(-1, shape[-1]).var(axis=0), rtol=1e-5)
  np.testing.assert_allclose(fused.moving_mean.numpy(),
                             x.reshape(-1, shape[-1]).mean(axis=0),
                             rtol=1e-5, atol=1e-6)


def test_inference_and_other_shapes_take_keras_path():
  plain, fused, shape = _pair(momentum=0.9)
  x = tf.constant(np.random.default_rng(3).normal(size=shape), tf.float32)
  np.testing.assert_array_equal(fused(x, training=False).numpy(),
                                plain(x, training=False).numpy())
  flat_plain = keras.layers.BatchNormalization()
  flat_fused = FusedBatchNormalization()
  v = tf.constant(np.random.default_rng(4).normal(size=(8, 6)), tf.float32)
  np.testing.assert_array_equal(flat_fused(v, training=True).numpy(),
                                flat_plain(v, training=True).numpy())


def test_config_round_trips():
  layer = FusedBatchNormalization(momentum=0.8, epsilon=1e-4, name="bn")
  again = keras.saving.deserialize_keras_object(
      keras.saving.serialize_keras_object(layer))
  assert type(again) is FusedBatchNormalization
  assert again.get_config() == layer.get_config()


@pytest.mark.parametrize("name", ["mobilenet_v1", "googlenet"])
def test_backbone_option_swaps_every_batchnorm_keeping_weights(name):
  size = (96, 48, 3) if name == "googlenet" else (64, 32, 3)
  keras.utils.set_random_seed(0)
  plain = backbones.build_backbone(name, input_shape=size, alpha=0.25).model
  keras.utils.set_random_seed(0)
  fused = backbones.build_backbone(name, input_shape=size, alpha=0.25,
                                   fused_batchnorm=True).model

  def batchnorms(model):
    return [layer for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)]
  assert batchnorms(plain)
  assert not any(isinstance(layer, FusedBatchNormalization)
                 for layer in batchnorms(plain))
  assert len(batchnorms(fused)) == len(batchnorms(plain))
  assert all(type(layer) is FusedBatchNormalization
             for layer in batchnorms(fused))
  # Same variables in the same order (checkpoints load either way), same
  # values.
  assert [w.path for w in fused.weights] == [w.path for w in plain.weights]
  for a, b in zip(plain.weights, fused.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  x = np.random.default_rng(5).normal(size=(4,) + size).astype(np.float32)
  for training in (False, True):
    want = plain(x, training=training)
    got = fused(x, training=training)
    for key in want:
      np.testing.assert_allclose(got[key].numpy(), want[key].numpy(),
                                 rtol=1e-4, atol=1e-4)



def _layers(model):
  for layer in model.layers:
    yield layer
    if isinstance(layer, keras.Model):
      yield from _layers(layer)


def test_config_key_reaches_the_training_model():
  config = default.get_config().model
  config.fused_batchnorm = True
  model = builders.build_training_model(config, num_classes=3,
                                        input_shape=(64, 32, 3), seed=0)
  kinds = [type(layer) for layer in _layers(model)
           if isinstance(layer, keras.layers.BatchNormalization)]
  assert kinds and set(kinds) == {FusedBatchNormalization}


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
