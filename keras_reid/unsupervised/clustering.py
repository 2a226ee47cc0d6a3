"""Clustering-based pseudo labels: DBSCAN on the k-reciprocal Jaccard distance.

The labelling of modern unsupervised Re-ID (SSG, MMT, SpCL, Cluster
Contrast, Dai et al. 2021): every round the target's training features are
L2-normalised, their all-pairs k-reciprocal Jaccard distance is computed
(keras_reid.evaluation.rerank.jaccard_distance, the Jaccard part of
re-ranking) and DBSCAN (scikit-learn, metric="precomputed") clusters them;
each cluster is a class and the images DBSCAN calls noise are outliers
(label -1), left out of the round's training set.

Camera-aware distance (optional, `camera_weight` > 0, default 0 = off): the
distance of two different images from the same camera is raised by
`camera_weight` before DBSCAN, so that clusters have to be joined across
cameras rather than grow inside one (on VIPeR-like targets, one image per
identity and camera, two images of one camera are never the same person).
With one camera the term shifts every pair alike: clustering needs no
second camera.

Cross-camera mutual nearest neighbours (`cluster_method="mutual_nn"`): two
images of different cameras form a cluster when each is the other's most
similar image (cosine) among the other cameras' images; every other image
is an outlier. Meant for targets with one or two images per identity and
camera (VIPeR, PRID, GRID), where DBSCAN on the Jaccard distance chains
identities together: the k-reciprocal neighbourhoods that the Jaccard
distance compares are mostly other people when an identity has two
images. Needs two cameras. Optionally only the most confident pairs are
kept (`keep_fraction` < 1): those whose similarity stands out most above
either image's second most similar image across cameras (the margin; on
VIPeR from the strong reid_pool model, keeping the half with the largest
margin raised the share of right pairs from 33 to 43 %,
bench/cotraining_labels.py --clustering).

Cross-camera one-to-one assignment (`cluster_method="assignment"`): for a
target of exactly two cameras, every image of the smaller camera is paired
with one image of the other so that the pairs' summed cosine similarity is
the largest any one-to-one pairing reaches (the linear assignment problem,
scipy.optimize.linear_sum_assignment). Where each identity has one image
per camera (VIPeR), the right pairing is one-to-one, and the assignment uses
that: an image whose nearest neighbour is taken by a better-matching image
gets its next best, where mutual nearest neighbours leave both unpaired.
`keep_fraction` keeps the pairs of the largest margin, as for mutual_nn.

Camera centring (optional, `camera_centring`): before either method, each
camera's mean L2-normalised feature is subtracted from its images' (then
normalised again), which takes out what a camera adds to every image
(lighting, viewpoint, colour cast) and leaves what tells people apart.
Camera ids are part of an unlabelled Re-ID set, as in camera-aware
methods; identities are not read.

NumPy / SciPy / scikit-learn only; `cluster_quality` is the only function
that reads identities (monitoring, never training).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import optimize
from sklearn import cluster as sk_cluster
from sklearn.metrics import cluster as sk_metrics

from keras_reid.evaluation import rerank

OUTLIER = -1

# How the features are grouped (stages.<name>.unsupervised.cluster_method).
METHODS = ("dbscan", "mutual_nn", "assignment")
# The methods that pair images across cameras (and can keep a fraction).
PAIR_METHODS = ("mutual_nn", "assignment")


class NoClusterError(ValueError):
  """Every image is an outlier: DBSCAN found no cluster, or no two images
  are mutual nearest neighbours (no class to train on)."""


@dataclasses.dataclass
class Clusters:
  """One clustering of the training features.

  Attributes:
    labels: int64 [N] cluster ids 0..C-1 (DBSCAN's numbering), OUTLIER (-1)
      for noise.
    centroids: float32 [C, dim] L2-normalised mean of each cluster's
      L2-normalised features (the cluster memory's initial value).
  """
  labels: np.ndarray
  centroids: np.ndarray

  @property
  def num_clusters(self) -> int:
    return int(self.centroids.shape[0])


def l2_normalize(features) -> np.ndarray:
  """[N, dim] float32 rows divided by their norm (a zero row stays zero)."""
  x = np.asarray(features, np.float32)
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.maximum(norms, 1e-12)


def camera_centred(features, camids) -> np.ndarray:
  """float32 [N, dim]: L2-normalised features minus their camera's mean
  L2-normalised feature, normalised again (see module doc)."""
  x = l2_normalize(features)
  camids = np.asarray(camids)
  if camids.shape != (x.shape[0],):
    raise ValueError(f"camids has shape {camids.shape}: expected "
                     f"[{x.shape[0]}], one camera id per feature row.")
  centred = x.copy()
  for cam in np.unique(camids):
    rows = camids == cam
    centred[rows] -= x[rows].mean(axis=0)
  return l2_normalize(centred)


def _cross_camera_similarity(features, camids, method: str):
  """(float32 [N, N] cosine similarity with -inf between images of one
  camera, int [N] camera ids); checks the cameras `method` needs."""
  x = l2_normalize(features)
  camids = np.asarray(camids)
  cameras = np.unique(camids)
  if len(cameras) < 2:
    raise ValueError(
        f"cluster_method={method!r} pairs images across cameras, but all "
        f"{camids.size} training images have camera {camids[0]!r}: use "
        "cluster_method='dbscan' for a one-camera set.")
  if method == "assignment" and len(cameras) > 2:
    raise ValueError(
        f"cluster_method='assignment' pairs the images of two cameras one "
        f"to one, but the training images have {len(cameras)} cameras "
        f"{cameras.tolist()}: use cluster_method='mutual_nn'.")
  similarity = x @ x.T
  similarity[camids[:, None] == camids[None, :]] = -np.inf  # same camera
  return similarity, camids


def _check_keep_fraction(keep_fraction: float) -> None:
  """Raises ValueError unless 0 < keep_fraction <= 1 (before any work)."""
  if not 0.0 < keep_fraction <= 1.0:
    raise ValueError(f"keep_fraction={keep_fraction!r}: expected a fraction "
                     "of the pairs in (0, 1] (1 keeps all).")


def _pair_labels(similarity, lower, upper, keep_fraction: float) -> np.ndarray:
  """int64 [N] cluster ids of the pairs (lower[k], upper[k]), lower[k] <
  upper[k] ascending: with keep_fraction < 1 only round(keep_fraction *
  pairs) (at least one) stay, those of the largest margin s(i, j) -
  max(s'(i), s'(j)), s'(x) the similarity of x's most similar image across
  cameras other than its partner (+inf margin when there is none); ties
  keep the lower index. Clusters are numbered in lower index order.
  keep_fraction is checked by the callers (`_check_keep_fraction`)."""
  if keep_fraction < 1.0 and lower.size:
    others = similarity.copy()
    others[lower, upper] = others[upper, lower] = -np.inf  # the partner
    best_other = others.max(axis=1)  # -inf: no other image across cameras
    margin = similarity[lower, upper] - np.maximum(best_other[lower],
                                                   best_other[upper])
    keep = max(1, int(round(keep_fraction * lower.size)))
    # Stable sort: equal margins keep index order.
    order = np.argsort(-margin, kind="stable")[:keep]
    lower, upper = lower[order], upper[order]
    by_index = np.argsort(lower)
    lower, upper = lower[by_index], upper[by_index]
  labels = np.full(similarity.shape[0], OUTLIER, np.int64)
  labels[lower] = labels[upper] = np.arange(lower.size)
  return labels


def mutual_nearest_pairs(features, camids,
                         keep_fraction: float = 1.0) -> np.ndarray:
  """int64 [N] cluster ids of cross-camera mutual nearest neighbours.

  Image i and j (different cameras) form a cluster when j is i's most
  cosine-similar image among the images of other cameras than i's, and i
  is j's. With keep_fraction < 1 only round(keep_fraction * pairs) pairs
  (at least one) stay: those of the largest margin s(i, j) - max(s2(i),
  s2(j)), s2(x) the similarity of x's second most similar image across
  cameras (+inf margin when there is none); ties keep the lower index.
  Clusters are numbered by their lower image index's order; everything
  else is OUTLIER.

  Raises:
    ValueError: fewer than two cameras, or keep_fraction not in (0, 1].
  """
  _check_keep_fraction(keep_fraction)
  similarity, _ = _cross_camera_similarity(features, camids, "mutual_nn")
  nearest = similarity.argmax(axis=1)
  index = np.arange(similarity.shape[0])
  # Each pair once, from its lower index (in index order: the numbering).
  lower = np.flatnonzero((nearest[nearest] == index) & (index < nearest))
  return _pair_labels(similarity, lower, nearest[lower], keep_fraction)


def cross_camera_assignment(features, camids,
                            keep_fraction: float = 1.0) -> np.ndarray:
  """int64 [N] cluster ids of the one-to-one pairing of two cameras' images
  with the largest summed cosine similarity.

  Every image of the camera with fewer images gets a partner in the other
  camera (min(n_a, n_b) pairs); the rest of the larger camera's images are
  OUTLIER. With keep_fraction < 1, only the pairs of the largest margin stay
  (s(i, j) - max(s'(i), s'(j)), s'(x) x's most similar image across cameras
  other than its partner; see `mutual_nearest_pairs`). Clusters are numbered
  by their lower image index's order.

  Raises:
    ValueError: not exactly two cameras, or keep_fraction not in (0, 1].
  """
  _check_keep_fraction(keep_fraction)
  similarity, camids = _cross_camera_similarity(features, camids,
                                                "assignment")
  first, second = np.unique(camids)
  rows, cols = np.flatnonzero(camids == first), np.flatnonzero(camids == second)
  # The solver works in float64: convert the block once, here.
  cross = similarity[np.ix_(rows, cols)].astype(np.float64)
  picked_rows, picked_cols = optimize.linear_sum_assignment(cross,
                                                            maximize=True)
  a, b = rows[picked_rows], cols[picked_cols]
  lower, upper = np.minimum(a, b), np.maximum(a, b)
  order = np.argsort(lower)
  return _pair_labels(similarity, lower[order], upper[order], keep_fraction)


def cluster_distance(features, camids=None, *, k1: int = 30, k2: int = 6,
                     camera_weight: float = 0.0) -> np.ndarray:
  """[N, N] float32 distance DBSCAN clusters on.

  Args:
    features: [N, dim] training features (L2-normalised here).
    camids: [N] camera ids; read only when camera_weight > 0.
    k1, k2: k-reciprocal neighbours and query expansion of the Jaccard
      distance (Cluster Contrast: 30, 6).
    camera_weight: added to the distance of two different images of the
      same camera (0 = off).

  Returns:
    Symmetric, 0 on the diagonal, in [0, 1 + camera_weight].
  """
  features = np.asarray(features)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"features has shape {features.shape}: expected "
                     "[N, dim] with N >= 2 training images to cluster.")
  distance = rerank.jaccard_distance(l2_normalize(features), k1=k1, k2=k2)
  if camera_weight > 0:
    camids = np.asarray(camids)
    same = camids[:, None] == camids[None, :]
    np.fill_diagonal(same, False)
    distance = distance + np.float32(camera_weight) * same
  return distance


def dbscan_labels(distance: np.ndarray, *, eps: float,
                  min_samples: int) -> np.ndarray:
  """int64 [N] DBSCAN cluster ids of a precomputed distance, -1 = outlier.

  Deterministic: clusters are numbered in the order DBSCAN reaches their
  first core point (image order).
  """
  model = sk_cluster.DBSCAN(eps=eps, min_samples=min_samples,
                            metric="precomputed", n_jobs=1)
  return model.fit_predict(distance).astype(np.int64)


def centroids(features, labels) -> np.ndarray:
  """float32 [C, dim]: L2-normalised mean of each cluster's L2-normalised
  features (labels 0..C-1; outliers ignored)."""
  x = l2_normalize(features)
  labels = np.asarray(labels)
  num = int(labels.max()) + 1 if labels.size else 0
  sums = np.zeros((num, x.shape[1]), np.float64)
  kept = labels >= 0
  np.add.at(sums, labels[kept], x[kept])
  return l2_normalize(sums)


def cluster_features(features, camids=None, *, eps: float, min_samples: int,
                     k1: int = 30, k2: int = 6,
                     camera_weight: float = 0.0, method: str = "dbscan",
                     camera_centring: bool = False,
                     keep_fraction: float = 1.0) -> Clusters:
  """Clusters the training features (see module doc).

  Args:
    features: [N, dim] SIR features of the training images.
    camids: [N] camera ids (camera_weight > 0, mutual_nn or camera_centring).
    eps, min_samples: DBSCAN's (eps in Jaccard distance, min_samples
      counting the image itself).
    k1, k2, camera_weight: see `cluster_distance`.
    method: "dbscan", "mutual_nn" or "assignment" (METHODS; eps,
      min_samples, k1, k2 and camera_weight are DBSCAN's only).
    camera_centring: subtract each camera's mean feature first.
    keep_fraction: mutual_nn and assignment only (PAIR_METHODS): the
      fraction of the pairs kept, those of the largest margin
      (`mutual_nearest_pairs`).

  Returns:
    Clusters.

  Raises:
    NoClusterError: no cluster; for DBSCAN names eps and min_samples.
  """
  if method not in METHODS:
    raise ValueError(f"cluster method {method!r}: expected one of "
                     f"{list(METHODS)}.")
  if method not in PAIR_METHODS and keep_fraction != 1.0:
    raise ValueError(f"keep_fraction={keep_fraction!r} with method "
                     f"{method!r}: only {' and '.join(PAIR_METHODS)} keep a "
                     "fraction of their pairs; use 1.0.")
  # The cluster memory starts from centroids of the model's own features
  # (it is updated with them), whatever space the grouping used.
  grouped = camera_centred(features, camids) if camera_centring else features
  if method == "assignment":
    labels = cross_camera_assignment(grouped, camids, keep_fraction)
    return Clusters(labels, centroids(features, labels))
  if method == "mutual_nn":
    labels = mutual_nearest_pairs(grouped, camids, keep_fraction)
    if (labels == OUTLIER).all():
      raise NoClusterError(
          f"no two of the {labels.size} training images are each other's "
          "nearest neighbour across cameras (cluster_method='mutual_nn'): "
          "the set is too small or the features carry nothing; use "
          "cluster_method='dbscan'.")
    return Clusters(labels, centroids(features, labels))
  distance = cluster_distance(grouped, camids, k1=k1, k2=k2,
                              camera_weight=camera_weight)
  labels = dbscan_labels(distance, eps=eps, min_samples=min_samples)
  if (labels == OUTLIER).all():
    positive = distance[distance > 0]
    nearest = float(positive.min()) if positive.size else float("nan")
    raise NoClusterError(
        f"DBSCAN found no cluster among {labels.size} training images with "
        f"eps={eps} and min_samples={min_samples} (every image is an "
        f"outlier; the smallest Jaccard distance between two images is "
        f"{nearest:.3f}): raise stages.<name>.unsupervised.cluster_eps or "
        "lower unsupervised.cluster_min_samples.")
  return Clusters(labels, centroids(features, labels))


def cluster_quality(labels, pids) -> dict:
  """How well clusters match the hidden identities (monitoring only).

  Args:
    labels: [N] cluster ids, OUTLIER for noise.
    pids: [N] the true identities.

  Returns:
    {"num_clusters", "num_outliers", "outlier_fraction",
     "pairwise_precision": of the pairs put in one cluster, the fraction of
       the same identity,
     "pairwise_recall": of the same-identity pairs (outliers included, as
       missed), the fraction put in one cluster,
     "pairwise_f1", "purity": the fraction of clustered images whose
       identity is their cluster's most common one,
     "num_ids"}. Ratios with an empty denominator are 0.
  """
  labels = np.asarray(labels)
  pids = np.asarray(pids)
  if labels.shape != pids.shape:
    raise ValueError(f"labels has shape {labels.shape}, pids {pids.shape}: "
                     "expected one label per image.")
  kept = labels != OUTLIER
  num_clusters = len(np.unique(labels[kept]))
  # Same-cluster pairs and their true ones among the clustered images.
  if kept.sum() >= 2:
    pairs = sk_metrics.pair_confusion_matrix(pids[kept], labels[kept]) // 2
    true_together, together = int(pairs[1, 1]), int(pairs[:, 1].sum())
    table = sk_metrics.contingency_matrix(pids[kept], labels[kept])
    purity = float(table.max(axis=0).sum() / kept.sum())
  else:
    true_together = together = 0
    purity = 0.0 if not kept.any() else 1.0
  _, counts = np.unique(pids, return_counts=True)
  same_identity = int((counts * (counts - 1) // 2).sum())

  def ratio(a, b):
    return float(a / b) if b else 0.0
  precision = ratio(true_together, together)
  recall = ratio(true_together, same_identity)
  return {
      "num_clusters": int(num_clusters),
      "num_outliers": int((~kept).sum()),
      "outlier_fraction": ratio(int((~kept).sum()), labels.size),
      "pairwise_precision": precision,
      "pairwise_recall": recall,
      "pairwise_f1": ratio(2 * precision * recall, precision + recall),
      "purity": purity,
      "num_ids": int(counts.size),
  }
