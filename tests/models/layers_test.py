"""Tests of the Re-ID layers: pairwise-consistent dropout, ceil-mode and GeM pooling."""

import numpy as np
import pytest

import keras
import tensorflow as tf

from keras_reid.models import layers


def _pairs():
  features = np.random.default_rng(0).uniform(1, 2, (4, 256)).astype("float32")
  pair_i = np.array([0, 0, 1, 2, 3], "int32")
  pair_j = np.array([1, 2, 3, 3, 0], "int32")
  return features, pair_i, pair_j


def test_pairwise_mask_is_shared_by_both_members():
  features, pair_i, pair_j = _pairs()
  layer = layers.PairwiseConsistentDropout(0.5, seed=1, name="d")
  a, b = [np.asarray(t) for t in layer([features, pair_i, pair_j], training=True)]
  assert a.shape == b.shape == (5, 256)
  np.testing.assert_array_equal(a == 0, b == 0)
  kept = a != 0
  assert 0.35 < kept.mean() < 0.65
  # Kept units are scaled by 1 / (1 - rate).
  np.testing.assert_allclose(a[kept], 2 * features[pair_i][kept], rtol=1e-6)
  np.testing.assert_allclose(b[kept], 2 * features[pair_j][kept], rtol=1e-6)
  # Different pairs get different masks.
  assert (kept[0] != kept[1]).any()


def test_off_at_inference():
  features, pair_i, pair_j = _pairs()
  layer = layers.PairwiseConsistentDropout(0.5, seed=1, name="d")
  for training in (False, None):
    a, b = layer([features, pair_i, pair_j], training=training)
    np.testing.assert_array_equal(np.asarray(a), features[pair_i])
    np.testing.assert_array_equal(np.asarray(b), features[pair_j])


def test_independent_masks_differ():
  features, pair_i, pair_j = _pairs()
  layer = layers.PairwiseConsistentDropout(0.5, mode="independent", seed=1, name="d")
  a, b = [np.asarray(t) for t in layer([features, pair_i, pair_j], training=True)]
  assert ((a == 0) != (b == 0)).mean() > 0.3


def test_none_mode_only_gathers():
  features, pair_i, pair_j = _pairs()
  layer = layers.PairwiseConsistentDropout(0.5, mode="none", name="d")
  a, _ = layer([features, pair_i, pair_j], training=True)
  np.testing.assert_array_equal(np.asarray(a), features[pair_i])


def test_invalid_arguments_are_refused():
  with pytest.raises(ValueError, match="mode"):
    layers.PairwiseConsistentDropout(0.5, mode="per_image")
  with pytest.raises(ValueError, match="rate"):
    layers.PairwiseConsistentDropout(1.0)


@pytest.mark.parametrize("layer", [
    layers.PairwiseConsistentDropout(0.3, mode="independent", seed=4, name="x"),
    layers.CeilMaxPooling2D(3, 2, name="y"),
    layers.SameProbability(name="z"),
    layers.AdaptiveAveragePooling2D((4, 4), name="w"),
    layers.GeneralizedMeanPooling2D(2.5, trainable_p=False, epsilon=1e-5,
                                    name="v"),
    layers.GeneralizedMeanPooling2D(name="u"),
])
def test_get_config_round_trips(layer):
  config = layer.get_config()
  clone = type(layer).from_config(config)
  assert clone.get_config() == config
  restored = keras.saving.deserialize_keras_object(
      keras.saving.serialize_keras_object(layer))
  assert type(restored) is type(layer) and restored.get_config() == config


@pytest.mark.parametrize("shape", [(8, 4), (7, 3), (14, 14)])
def test_adaptive_pooling_matches_keras(shape):
  x = np.random.default_rng(0).normal(size=(2, *shape, 3)).astype("float32")
  np.testing.assert_allclose(
      layers.AdaptiveAveragePooling2D((4, 4))(x),
      keras.layers.AdaptiveAveragePooling2D((4, 4))(x), rtol=1e-5, atol=1e-6)


def test_adaptive_pooling_repeats_pixels_of_tiny_maps():
  x = np.arange(2 * 1 * 2, dtype="float32").reshape(1, 2, 1, 2)
  out = np.asarray(layers.AdaptiveAveragePooling2D((4, 4))(x))
  assert out.shape == (1, 4, 4, 2)
  np.testing.assert_array_equal(out[0, :2], np.broadcast_to(x[0, 0], (2, 4, 2)))
  np.testing.assert_array_equal(out[0, 2:], np.broadcast_to(x[0, 1], (2, 4, 2)))


def test_ceil_max_pooling_matches_pytorch_ceil_mode():
  x = np.random.default_rng(0).normal(size=(1, 6, 5, 2)).astype("float32")
  out = np.asarray(layers.CeilMaxPooling2D(3, 2)(x))
  # ceil((6 - 3) / 2) + 1 = 3 rows, ceil((5 - 3) / 2) + 1 = 2 columns; the
  # last row window covers rows 4..5 only.
  assert out.shape == (1, 3, 2, 2)
  for r in range(3):
    for c in range(2):
      window = x[0, 2 * r:2 * r + 3, 2 * c:2 * c + 3]
      np.testing.assert_allclose(out[0, r, c], window.max(axis=(0, 1)))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))


def _gem_oracle(x, p, eps=1e-6):
  """NumPy GeM: (mean over H, W of max(x, eps) ** p) ** (1 / p), float64."""
  x = np.maximum(np.asarray(x, np.float64), eps)
  return np.mean(x ** p, axis=(1, 2)) ** (1.0 / p)


@pytest.mark.parametrize("p", [3.0, 1.7, 6.0])
def test_gem_matches_numpy(p):
  # Negative values too: the clamp at epsilon must apply.
  x = np.random.default_rng(0).normal(1.0, 1.0, (2, 5, 3, 4)).astype("float32")
  for trainable in (True, False):
    out = layers.GeneralizedMeanPooling2D(p, trainable_p=trainable)(x)
    assert tuple(out.shape) == (2, 4)
    np.testing.assert_allclose(out, _gem_oracle(x, p), rtol=1e-5)
  # p = 1 is average pooling (of the clamped map), and GeM lies between the
  # mean and the max.
  positive = np.abs(x) + 0.1
  np.testing.assert_allclose(
      layers.GeneralizedMeanPooling2D(1.0, trainable_p=False)(positive),
      keras.layers.GlobalAveragePooling2D()(positive), rtol=1e-5)
  gem = np.asarray(layers.GeneralizedMeanPooling2D(p)(positive))
  assert np.all(gem >= positive.mean(axis=(1, 2)) - 1e-5)
  assert np.all(gem <= positive.max(axis=(1, 2)) + 1e-5)


def test_gem_p_is_a_trainable_weight_or_a_constant():
  x = np.random.default_rng(1).uniform(0, 2, (2, 4, 4, 3)).astype("float32")
  learned = layers.GeneralizedMeanPooling2D(3.0, name="gem")
  assert [(w.name, w.trainable) for w in learned.weights] == [("p", True)]
  with tf.GradientTape() as tape:
    y = tf.reduce_sum(learned(x))
  assert abs(float(tape.gradient(y, learned.p_weight))) > 0
  learned.p_weight.assign(4.5)  # the layer computes with its weight's value
  np.testing.assert_allclose(learned(x), _gem_oracle(x, 4.5), rtol=1e-5)
  assert layers.GeneralizedMeanPooling2D(3.0, trainable_p=False).weights == []


def test_gem_computes_in_float32_under_float16():
  # 60 ** 3 overflows float16; the layer built with dtype="float32" does not.
  x = np.full((1, 2, 2, 1), 60.0, "float16")
  out = layers.GeneralizedMeanPooling2D(3.0, dtype="float32")(x)
  assert out.dtype == "float32"
  np.testing.assert_allclose(out, [[60.0]], rtol=1e-5)


def test_gem_refuses_a_non_positive_p():
  with pytest.raises(ValueError, match="p=0"):
    layers.GeneralizedMeanPooling2D(0.0)
