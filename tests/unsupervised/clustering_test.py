"""Tests for keras_reid.unsupervised.clustering on hand-built feature sets."""

import numpy as np
import pytest

from keras_reid.evaluation import rerank
from keras_reid.unsupervised import clustering


def _blobs(seed=0, num_blobs=4, per_blob=6, num_outliers=3, dim=16):
  """Tight, far-apart blobs and scattered outliers, shuffled.

  Returns:
    (features [N, dim], blob ids [N] with -1 for the outliers).
  """
  rng = np.random.default_rng(seed)
  centres = 3.0 * rng.normal(size=(num_blobs, dim))
  blob = np.concatenate([np.repeat(np.arange(num_blobs), per_blob),
                         np.full(num_outliers, -1)])
  x = np.where(blob[:, None] >= 0, centres[np.maximum(blob, 0)], 0.0)
  x[blob >= 0] += 0.05 * rng.normal(size=((blob >= 0).sum(), dim))
  x[blob < 0] = 3.0 * rng.normal(size=(num_outliers, dim))
  order = rng.permutation(blob.size)
  return x[order].astype(np.float32), blob[order]


def _by_first_appearance(labels):
  """Renumbers clusters 0, 1, ... in order of first appearance (-1 kept):
  DBSCAN numbers clusters in the order it reaches them."""
  out, names = np.full(len(labels), -1), {}
  for i, label in enumerate(labels):
    if label >= 0:
      out[i] = names.setdefault(label, len(names))
  return out


def test_blobs_are_clusters_and_outliers_are_unlabelled():
  x, blob = _blobs()
  # k1 + 1 = blob size: each image's k-reciprocal set is its blob.
  clusters = clustering.cluster_features(x, eps=0.5, min_samples=3, k1=5,
                                         k2=1)
  np.testing.assert_array_equal(clusters.labels, _by_first_appearance(blob))
  assert clusters.labels.dtype == np.int64
  # Oracle: each centroid is the normalised mean of its blob's unit vectors.
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  for c in range(4):
    mean = unit[clusters.labels == c].mean(0)
    np.testing.assert_allclose(clusters.centroids[c],
                               mean / np.linalg.norm(mean), atol=1e-6)


def test_camera_weight_raises_same_camera_distances_only():
  # Two identities, each one image per camera.
  x, _ = _blobs(num_blobs=2, per_blob=2, num_outliers=0)
  camids = np.array([0, 1, 0, 1])
  plain = clustering.cluster_distance(x, camids, k1=3, k2=1)
  aware = clustering.cluster_distance(x, camids, k1=3, k2=1,
                                      camera_weight=0.5)
  same = (camids[:, None] == camids[None, :]) & ~np.eye(4, dtype=bool)
  np.testing.assert_allclose(aware, plain + 0.5 * same)
  np.testing.assert_array_equal(np.diag(aware), 0.0)
  # The distance is re-ranking's Jaccard part of the normalised features.
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  np.testing.assert_allclose(plain, rerank.jaccard_distance(unit, k1=3, k2=1))


def test_one_camera_clusters():
  x, blob = _blobs(num_outliers=0)
  clusters = clustering.cluster_features(
      x, np.zeros(len(x), int), eps=0.5, min_samples=3, k1=5, k2=1,
      camera_weight=0.3)
  np.testing.assert_array_equal(clusters.labels, _by_first_appearance(blob))


def test_no_cluster_is_an_error_naming_eps_and_min_samples():
  x, _ = _blobs()
  with pytest.raises(clustering.NoClusterError,
                     match=r"eps=0.5 and min_samples=7.*cluster_eps.*"
                           r"cluster_min_samples"):
    clustering.cluster_features(x, eps=0.5, min_samples=7, k1=5, k2=1)


def test_cluster_quality_against_hand_counts():
  pids = np.array([1, 1, 1, 2, 2, 3, 3])
  labels = np.array([0, 0, 1, 1, 1, -1, 2])
  q = clustering.cluster_quality(labels, pids)
  # Same-cluster pairs: (0,1) true, (2,3) false, (2,4) false, (3,4) true.
  # Same-identity pairs: 3 of pid 1, 1 of pid 2, 1 of pid 3 = 5.
  assert q["pairwise_precision"] == pytest.approx(2 / 4)
  assert q["pairwise_recall"] == pytest.approx(2 / 5)
  assert q["pairwise_f1"] == pytest.approx(2 * 0.5 * 0.4 / 0.9)
  # Majorities: cluster 0 -> 2 of pid 1, cluster 1 -> 2 of pid 2, 2 -> 1.
  assert q["purity"] == pytest.approx(5 / 6)
  assert (q["num_clusters"], q["num_outliers"], q["num_ids"]) == (3, 1, 3)
  assert q["outlier_fraction"] == pytest.approx(1 / 7)
  perfect = clustering.cluster_quality(pids - 1, pids)
  assert perfect["pairwise_precision"] == perfect["pairwise_recall"] == 1.0


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
