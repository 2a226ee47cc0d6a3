"""Pseudo labels for an unlabelled two-camera target, and their accuracy.

Classes are the camera-A images: camera-A image number c (in index order,
c = 0 .. num_A - 1) is class c. A camera-A image is its own class; a
camera-B image takes the class of its nearest camera-A image (hard) or a
distribution over its top-m camera-A neighbours (soft). The space decides
the method: the model's features Y for self-training, the GRDL codes Z for
co-training.

`label_accuracy` compares labels with the hidden true identities: for
monitoring (TensorBoard) only, never for training.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from keras_reid.unsupervised import graph


def _nearest_a(features, is_a, m: int):
  """[N_B, m] camera-A class ids and squared distances, nearest first."""
  features, is_a = graph.check_features(features, is_a)
  if m < 1:
    raise ValueError(f"top_m must be >= 1, got {m}.")
  feats_a = features[is_a]
  m = min(m, feats_a.shape[0])
  nn = NearestNeighbors(n_neighbors=m, algorithm="brute").fit(feats_a)
  dist, cls = nn.kneighbors(features[~is_a])
  return cls, dist.astype(np.float64) ** 2


def hard_pseudo_labels(features, is_a) -> np.ndarray:
  """Nearest-camera-A labels.

  Args:
    features: [N, dim] (Y^T for self-training, codes Z^T for co-training).
    is_a: [N] bool, True for camera A (graph.camera_a_mask).

  Returns:
    [N] int64 class ids in [0, num_A): camera-A image c has class c (index
    order among the camera-A images); camera-B images the class of their
    nearest camera-A image (Euclidean).
  """
  is_a = np.asarray(is_a, bool)
  cls, _ = _nearest_a(features, is_a, 1)
  labels = np.empty(is_a.shape[0], np.int64)
  labels[is_a] = np.arange(int(is_a.sum()))
  labels[~is_a] = cls[:, 0]
  return labels


def soft_pseudo_labels(features, is_a, *, top_m: int = 5,
                       temperature: float = 1.0) -> np.ndarray:
  """Distributions over camera-A classes for a soft-label classifier.

  A camera-B image b with top-m camera-A neighbours a_1..a_m gets
  p(a_j) proportional to exp(-(d_j^2 - d_1^2) / (temperature * s)), where
  d_j = ||y_b - y_{a_j}|| and s is the mean over camera-B images of d_1^2
  (the squared nearest-neighbour distance), so the temperature does not
  depend on the feature scale; classes outside the top m get 0. As the
  temperature goes to 0 (or top_m = 1) this becomes the hard label.

  Args:
    features: [N, dim] (see `hard_pseudo_labels`).
    is_a: [N] bool, True for camera A.
    top_m: camera-A neighbours sharing each camera-B image's mass.
    temperature: > 0; larger spreads the mass more evenly.

  Returns:
    [N, num_A] float32 rows summing to 1: one-hot for camera-A images
    (their own class), the distribution above for camera-B images.
  """
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  is_a = np.asarray(is_a, bool)
  cls, d2 = _nearest_a(features, is_a, top_m)
  num_a = int(is_a.sum())
  scale = float(np.mean(d2[:, 0]))
  if scale <= 0:  # every camera-B image coincides with a camera-A image
    scale = 1.0
  logits = -(d2 - d2[:, :1]) / (temperature * scale)
  weights = np.exp(logits)
  weights /= weights.sum(axis=1, keepdims=True)
  out = np.zeros((is_a.shape[0], num_a), np.float32)
  out[np.flatnonzero(is_a), np.arange(num_a)] = 1.0
  rows_b = np.flatnonzero(~is_a)
  np.add.at(out, (np.repeat(rows_b, cls.shape[1]), cls.ravel()),
            weights.ravel().astype(np.float32))
  return out


def label_accuracy(labels, pids, is_a) -> dict[str, float]:
  """How often camera-B pseudo labels name an image of the same person.

  For monitoring only (the pids are the hidden truth of the target).

  Args:
    labels: [N] int (hard) or [N, num_A] float (soft) pseudo labels.
    pids: [N] true identities.
    is_a: [N] bool, True for camera A.

  Returns:
    accuracy: fraction of camera-B images whose label (argmax when soft)
      is a camera-A image of their own identity.
    soft_mass: mean probability mass on camera-A images of their own
      identity (equals accuracy for hard labels).
    reachable: fraction of camera-B images whose identity appears in
      camera A at all (the accuracy's upper bound).
  """
  is_a = np.asarray(is_a, bool)
  pids = np.asarray(pids)
  labels = np.asarray(labels)
  if pids.shape != is_a.shape or labels.shape[0] != is_a.shape[0]:
    raise ValueError(
        f"labels {labels.shape}, pids {pids.shape} and is_a {is_a.shape} "
        "must describe the same N images.")
  pids_a, pids_b = pids[is_a], pids[~is_a]
  same = pids_b[:, None] == pids_a[None, :]  # [N_B, num_A]
  if labels.ndim == 1:
    hard_b = labels[~is_a]
    accuracy = float(np.mean(pids_a[hard_b] == pids_b))
    soft_mass = accuracy
  else:
    probs_b = labels[~is_a].astype(np.float64)
    accuracy = float(np.mean(pids_a[probs_b.argmax(axis=1)] == pids_b))
    soft_mass = float(np.mean(np.sum(probs_b * same, axis=1)))
  return {"accuracy": accuracy, "soft_mass": soft_mass,
          "reachable": float(np.mean(same.any(axis=1)))}
