"""Tests for keras_reid.training.cluster_memory against NumPy computations."""

import numpy as np
import pytest
import tensorflow as tf

from keras_reid.training import cluster_memory


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_update(centroids, embeddings, labels, momentum):
  """Cluster Contrast's ClusterMemory backward, image by image."""
  memory = _unit(centroids)
  for x, y in zip(_unit(embeddings), labels):
    memory[y] = _unit(momentum * memory[y] + (1.0 - momentum) * x)
  return memory


@pytest.mark.parametrize("traced", [False, True])
def test_update_matches_numpy_image_by_image(traced):
  rng = np.random.default_rng(0)
  centroids = rng.normal(size=(5, 8))
  embeddings = rng.normal(size=(7, 8)).astype(np.float32)
  # Cluster 1 three times: the order of its updates matters.
  labels = np.array([1, 3, 1, 0, 1, 4, 3])
  memory = cluster_memory.ClusterMemory(centroids, momentum=0.2)
  np.testing.assert_allclose(memory.centroids.numpy(), _unit(centroids),
                             atol=1e-6)
  update = tf.function(memory.update) if traced else memory.update
  update(tf.constant(embeddings), tf.constant(labels))
  want = _numpy_update(centroids, embeddings, labels, 0.2)
  np.testing.assert_allclose(memory.centroids.numpy(), want, atol=1e-5)
  assert not np.allclose(want, _unit(centroids))  # it moved
  # Cluster 2 had no image: unchanged.
  np.testing.assert_allclose(want[2], _unit(centroids)[2])


def test_similarities_are_cosines_without_gradient_into_the_memory():
  rng = np.random.default_rng(1)
  centroids = rng.normal(size=(3, 4))
  x = tf.constant(rng.normal(size=(2, 4)).astype(np.float32))
  memory = cluster_memory.ClusterMemory(centroids, momentum=0.1)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    s = memory.similarities(x)
  np.testing.assert_allclose(s.numpy(), _unit(x.numpy()) @ _unit(centroids).T,
                             atol=1e-6)
  assert tape.gradient(s, memory.centroids) is None
  assert tape.gradient(s, x) is not None
  assert not memory.trainable_variables


@pytest.mark.parametrize("kwargs,match", [
    (dict(centroids=np.zeros((0, 4)), momentum=0.2), "num_clusters >= 1"),
    (dict(centroids=np.ones((2, 4)), momentum=1.0), "memory_momentum"),
])
def test_bad_memory_is_refused(kwargs, match):
  with pytest.raises(ValueError, match=match):
    cluster_memory.ClusterMemory(**kwargs)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
