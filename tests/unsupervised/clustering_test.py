"""Tests for keras_reid.unsupervised.clustering on hand-built feature sets."""

import itertools

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



def _mutual_pairs_oracle(x, camids):
  """Cross-camera mutual nearest neighbours by brute force (sets of pairs)."""
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  def nearest(i):
    best, best_sim = None, -np.inf
    for j in range(len(x)):
      if camids[j] != camids[i] and unit[i] @ unit[j] > best_sim:
        best, best_sim = j, unit[i] @ unit[j]
    return best
  near = [nearest(i) for i in range(len(x))]
  return {(i, j) for i, j in enumerate(near) if i < j and near[j] == i}


def _pairs_of(labels):
  return {tuple(np.flatnonzero(labels == c)) for c in np.unique(labels)
          if c >= 0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mutual_nn_equals_brute_force_pairs(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(40, 8)).astype(np.float32)
  camids = rng.integers(0, 3, size=40)
  labels = clustering.mutual_nearest_pairs(x, camids)
  assert labels.dtype == np.int64
  assert _pairs_of(labels) == _mutual_pairs_oracle(x, camids)
  paired = labels >= 0
  assert (np.bincount(labels[paired]) == 2).all()
  # Clusters numbered by their first image's order.
  firsts = [np.flatnonzero(labels == c)[0] for c in range(labels.max() + 1)]
  assert firsts == sorted(firsts)


def _offset_camera_pairs(seed=0, num_ids=30, dim=32, offset=4.0):
  """One image per identity and camera; camera 1 adds a large shared
  vector to every image (what a camera does to all its images)."""
  rng = np.random.default_rng(seed)
  people = rng.normal(size=(num_ids, dim))
  camera_shift = offset * rng.normal(size=dim)
  x = np.concatenate([people + 0.1 * rng.normal(size=people.shape),
                      people + 0.1 * rng.normal(size=people.shape)
                      + camera_shift]).astype(np.float32)
  pids = np.tile(np.arange(num_ids), 2)
  camids = np.repeat([0, 1], num_ids)
  return x, pids, camids


def test_camera_centring_recovers_pairs_a_camera_shift_hides():
  x, pids, camids = _offset_camera_pairs()
  plain = clustering.cluster_features(x, camids, eps=0.5, min_samples=2,
                                      method="mutual_nn")
  centred = clustering.cluster_features(x, camids, eps=0.5, min_samples=2,
                                        method="mutual_nn",
                                        camera_centring=True)
  plain_q = clustering.cluster_quality(plain.labels, pids)
  centred_q = clustering.cluster_quality(centred.labels, pids)
  assert centred_q["num_clusters"] == 30
  assert centred_q["pairwise_precision"] == 1.0
  assert plain_q["num_clusters"] * plain_q["pairwise_precision"] < 15
  # The memory starts from the model's own (uncentred) features.
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  mean = unit[centred.labels == 0].mean(0)
  np.testing.assert_allclose(centred.centroids[0], mean / np.linalg.norm(mean),
                             atol=1e-6)


def test_camera_centred_against_per_camera_oracle():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(12, 5)).astype(np.float32)
  camids = np.array([7, 7, 9, 9, 9, 7, 2, 2, 9, 7, 2, 9])
  out = clustering.camera_centred(x, camids)
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  for i in range(12):
    expected = unit[i] - unit[camids == camids[i]].mean(0)
    np.testing.assert_allclose(out[i], expected / np.linalg.norm(expected),
                               atol=1e-6)
  with pytest.raises(ValueError, match=r"camids has shape \(3,\)"):
    clustering.camera_centred(x, camids[:3])


def test_mutual_nn_needs_two_cameras_and_a_known_method():
  x, _ = _blobs()
  with pytest.raises(ValueError, match="all 27 training images have camera"):
    clustering.cluster_features(x, np.zeros(len(x), int), eps=0.5,
                                min_samples=2, method="mutual_nn")
  with pytest.raises(ValueError, match=r"'kmeans': expected one of"):
    clustering.cluster_features(x, eps=0.5, min_samples=2, method="kmeans")


def _margin_oracle(x, camids, pairs):
  """{pair: s(i, j) - max(second best of i, of j)} by brute force."""
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  def second(i):
    sims = sorted((unit[i] @ unit[j] for j in range(len(x))
                   if camids[j] != camids[i]), reverse=True)
    return sims[1] if len(sims) > 1 else -np.inf
  return {(i, j): unit[i] @ unit[j] - max(second(i), second(j))
          for i, j in pairs}


@pytest.mark.parametrize("seed,fraction", [(0, 0.5), (1, 0.25), (2, 0.8)])
def test_keep_fraction_keeps_the_largest_margin_pairs(seed, fraction):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(60, 8)).astype(np.float32)
  camids = rng.integers(0, 3, size=60)
  every = _mutual_pairs_oracle(x, camids)
  margin = _margin_oracle(x, camids, every)
  keep = max(1, round(fraction * len(every)))
  expected = set(sorted(every, key=lambda p: -margin[p])[:keep])
  labels = clustering.mutual_nearest_pairs(x, camids, keep_fraction=fraction)
  assert _pairs_of(labels) == expected
  assert len(expected) < len(every)
  firsts = [np.flatnonzero(labels == c)[0] for c in range(labels.max() + 1)]
  assert firsts == sorted(firsts)
  np.testing.assert_array_equal(
      clustering.mutual_nearest_pairs(x, camids, keep_fraction=1.0),
      clustering.mutual_nearest_pairs(x, camids))


def test_keep_fraction_drops_the_ambiguous_pair_first():
  # Two clear people across cameras 0 / 1 and an ambiguous pair whose
  # images each have a near rival: the half kept must be the clear ones.
  x = np.array([[1, 0, 0, 0], [1, 0.05, 0, 0],        # person A
                [0, 1, 0, 0], [0.05, 1, 0, 0],        # person B
                [0, 0, 1, 1], [0, 0, 1, 0.9],         # ambiguous C
                [0, 0, 0.9, 1], [0, 0, 1, 0.95]],     # its rivals
               np.float32)
  camids = np.array([0, 1, 0, 1, 0, 1, 1, 0])
  every = _pairs_of(clustering.mutual_nearest_pairs(x, camids))
  assert {(0, 1), (2, 3)} <= every and len(every) == 4
  kept = _pairs_of(clustering.mutual_nearest_pairs(x, camids,
                                                   keep_fraction=0.5))
  assert kept == {(0, 1), (2, 3)}


def test_keep_fraction_is_checked():
  x, _ = _blobs()
  camids = np.arange(len(x)) % 2
  for bad in (0.0, 1.5, -0.1):
    with pytest.raises(ValueError, match=rf"keep_fraction={bad}: expected"):
      clustering.mutual_nearest_pairs(x, camids, keep_fraction=bad)
  with pytest.raises(ValueError,
                     match="only mutual_nn and assignment keep a fraction"):
    clustering.cluster_features(x, camids, eps=0.5, min_samples=2,
                                keep_fraction=0.5)
  for bad in (0.0, 1.5):
    with pytest.raises(ValueError, match=rf"keep_fraction={bad}: expected"):
      clustering.cross_camera_assignment(x, camids, keep_fraction=bad)


def _assignment_oracle(x, camids):
  """The one-to-one cross-camera pairing of the largest summed cosine
  similarity, by trying every injection of the smaller camera's images."""
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  cams = np.unique(camids)
  small, large = sorted((np.flatnonzero(camids == c) for c in cams), key=len)
  best, best_sum = None, -np.inf
  for chosen in itertools.permutations(large, len(small)):
    total = sum(unit[i] @ unit[j] for i, j in zip(small, chosen))
    if total > best_sum + 1e-9:
      best, best_sum = chosen, total
  return {tuple(sorted((int(i), int(j)))) for i, j in zip(small, best)}


@pytest.mark.parametrize("seed,num_a,num_b", [(0, 5, 6), (1, 6, 6), (2, 6, 4)])
def test_assignment_equals_brute_force_pairing(seed, num_a, num_b):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(num_a + num_b, 8)).astype(np.float32)
  camids = rng.permutation(np.repeat([3, 8], [num_a, num_b]))
  labels = clustering.cross_camera_assignment(x, camids)
  assert labels.dtype == np.int64
  assert _pairs_of(labels) == _assignment_oracle(x, camids)
  # Every image of the smaller camera is paired; the rest are outliers.
  assert (labels >= 0).sum() == 2 * min(num_a, num_b)
  firsts = [np.flatnonzero(labels == c)[0] for c in range(labels.max() + 1)]
  assert firsts == sorted(firsts)


def test_assignment_pairs_what_mutual_nn_leaves_alone():
  # a1, a2 (camera 0) both prefer b1 (camera 1); b1 prefers a1. Mutual
  # nearest neighbours pair only (a1, b1); one-to-one, a2 goes with b2
  # (0.95 + 0.70 > 0.50 + 0.82).
  x = np.array([[1, 0, 0], [0.8, 0.6, 0],
                [0.95, 0.1, 0.3], [0.5, 0.5, 0.7]], np.float32)
  camids = np.array([0, 0, 1, 1])
  assert _pairs_of(clustering.mutual_nearest_pairs(x, camids)) == {(0, 2)}
  clusters = clustering.cluster_features(x, camids, eps=0.5, min_samples=2,
                                         method="assignment")
  assert _pairs_of(clusters.labels) == {(0, 2), (1, 3)}
  assert clusters.num_clusters == 2


def _other_margin_oracle(x, camids, pairs):
  """{pair: s(i, j) - max(best non-partner of i, of j)} by brute force."""
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  def best_other(i, partner):
    sims = [unit[i] @ unit[j] for j in range(len(x))
            if camids[j] != camids[i] and j != partner]
    return max(sims) if sims else -np.inf
  return {(i, j): unit[i] @ unit[j] - max(best_other(i, j), best_other(j, i))
          for i, j in pairs}


@pytest.mark.parametrize("seed,fraction", [(0, 0.5), (1, 0.25)])
def test_assignment_keeps_the_largest_margin_pairs(seed, fraction):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(14, 8)).astype(np.float32)
  camids = np.repeat([0, 1], 7)
  every = _assignment_oracle(x, camids)
  margin = _other_margin_oracle(x, camids, every)
  keep = max(1, round(fraction * len(every)))
  expected = set(sorted(every, key=lambda p: -margin[p])[:keep])
  labels = clustering.cross_camera_assignment(x, camids,
                                              keep_fraction=fraction)
  assert _pairs_of(labels) == expected
  assert len(expected) < len(every)


def test_assignment_needs_exactly_two_cameras():
  x, _ = _blobs()
  with pytest.raises(ValueError, match="all 27 training images have camera"):
    clustering.cross_camera_assignment(x, np.zeros(len(x), int))
  with pytest.raises(ValueError, match=r"3 cameras \[0, 1, 2\]: use "
                     "cluster_method='mutual_nn'"):
    clustering.cluster_features(x, np.arange(len(x)) % 3, eps=0.5,
                                min_samples=2, method="assignment")


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
