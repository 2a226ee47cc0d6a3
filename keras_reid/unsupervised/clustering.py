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

NumPy / SciPy / scikit-learn only; `cluster_quality` is the only function
that reads identities (monitoring, never training).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn import cluster as sk_cluster
from sklearn.metrics import cluster as sk_metrics

from keras_reid.evaluation import rerank

OUTLIER = -1


class NoClusterError(ValueError):
  """DBSCAN left every image an outlier (no class to train on)."""


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
                     camera_weight: float = 0.0) -> Clusters:
  """Clusters the training features (see module doc).

  Args:
    features: [N, dim] SIR features of the training images.
    camids: [N] camera ids (camera_weight > 0 only).
    eps, min_samples: DBSCAN's (eps in Jaccard distance, min_samples
      counting the image itself).
    k1, k2, camera_weight: see `cluster_distance`.

  Returns:
    Clusters.

  Raises:
    NoClusterError: DBSCAN found no cluster; names eps and min_samples.
  """
  distance = cluster_distance(features, camids, k1=k1, k2=k2,
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
