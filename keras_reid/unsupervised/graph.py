"""Cross-camera k-nearest-neighbour graph W and its Laplacian L = Deg - W.

The graph of the co-training model: images are
nodes; W_ij != 0 only when i and j come from different cameras (A vs B) and
one of them is among the k nearest neighbours of the other in the other
camera. Neighbours come from scikit-learn's NearestNeighbors (brute force,
chunked distance GEMMs), so no dense [N, N] matrix is ever built; W is a
scipy.sparse CSR matrix with at most 2 k N stored entries.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors

from keras_reid.data import records as records_lib

WEIGHTINGS = ("binary", "heat")


def camera_a_mask(camids, camera_a: int = 0) -> np.ndarray:
  """Which images belong to camera A; camera B is every other camera.

  Args:
    camids: [N] int camera ids (0-based, as the dataset readers give them).
    camera_a: the camid that plays camera A.

  Returns:
    [N] bool, True for camera-A images.

  Raises:
    ValueError: when a camid is unknown (-1) or either side is empty.
  """
  camids = np.asarray(camids)
  if camids.ndim != 1:
    raise ValueError(f"camids must be 1-D [N], got shape {camids.shape}.")
  unknown = camids == records_lib.UNKNOWN_CAMID
  if unknown.any():
    raise ValueError(
        f"{int(unknown.sum())} images have an unknown camera (camid "
        f"{records_lib.UNKNOWN_CAMID}); "
        "co-training needs a camera id for every target image. Drop those "
        "images or use a dataset with camera ids.")
  is_a = camids == camera_a
  if not is_a.any() or is_a.all():
    raise ValueError(
        f"camera_a={camera_a} leaves camera A with {int(is_a.sum())} and "
        f"camera B with {int((~is_a).sum())} images; both need at least one. "
        f"Cameras present: {sorted(set(camids.tolist()))}.")
  return is_a


def check_features(features, is_a) -> tuple[np.ndarray, np.ndarray]:
  features = np.asarray(features)
  is_a = np.asarray(is_a, bool)
  if features.ndim != 2 or is_a.shape != (features.shape[0],):
    raise ValueError(
        f"Expected features [N, dim] and is_a [N]; got {features.shape} and "
        f"{is_a.shape}.")
  if not is_a.any() or is_a.all():
    raise ValueError(
        f"is_a must mark at least one camera-A and one camera-B image; it "
        f"marks {int(is_a.sum())} of {is_a.size}.")
  return features, is_a


def cross_camera_knn_graph(features, is_a, k: int = 10, *,
                           weighting: str = "binary",
                           heat_t: float | None = None,
                           mutual: bool = False) -> sp.csr_matrix:
  """Symmetric sparse kNN graph with cross-camera edges only.

  Each camera-A image is linked to its k nearest camera-B images and each
  camera-B image to its k nearest camera-A images (Euclidean distance).
  The directed links are then symmetrised: an edge exists when either end
  chose the other (union, default) or when both did (`mutual=True`).

  Args:
    features: [N, dim] float features, one row per image (Y^T in the
      paper's notation).
    is_a: [N] bool, True for camera A (see `camera_a_mask`).
    k: neighbours per image in the other camera; clipped to that camera's
      size.
    weighting: "binary" (W_ij = 1) or "heat" (W_ij = exp(-||y_i - y_j||^2
      / t)).
    heat_t: t of the heat kernel; default the mean squared distance over
      the kNN links.
    mutual: keep only links chosen from both ends.

  Returns:
    W: [N, N] scipy.sparse CSR float64, symmetric, zero diagonal, W_ij > 0
    only for i, j in different cameras.
  """
  features, is_a = check_features(features, is_a)
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}.")
  if weighting not in WEIGHTINGS:
    raise ValueError(f"Unknown weighting {weighting!r}; valid: {WEIGHTINGS}.")
  n = features.shape[0]
  idx_a, idx_b = np.flatnonzero(is_a), np.flatnonzero(~is_a)
  rows, cols, dists = [], [], []
  for src, dst in ((idx_a, idx_b), (idx_b, idx_a)):
    kk = min(k, dst.size)
    nn = NearestNeighbors(n_neighbors=kk, algorithm="brute").fit(features[dst])
    dist, nbr = nn.kneighbors(features[src])
    rows.append(np.repeat(src, kk))
    cols.append(dst[nbr.ravel()])
    dists.append(dist.ravel())
  rows, cols = np.concatenate(rows), np.concatenate(cols)
  d2 = np.concatenate(dists).astype(np.float64) ** 2
  if weighting == "binary":
    vals = np.ones_like(d2)
  else:
    t = float(np.mean(d2)) if heat_t is None else float(heat_t)
    if not t > 0:
      raise ValueError(
          f"heat_t must be > 0, got {t} (all kNN distances are zero when it "
          "defaults to their mean: pass heat_t or use weighting='binary').")
    vals = np.exp(-d2 / t)
  # Duplicates (i->j and j->i) get the same value, so max keeps it once.
  directed = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
  directed.sum_duplicates()
  w = directed.minimum(directed.T) if mutual else directed.maximum(directed.T)
  w = sp.csr_matrix(w, dtype=np.float64)
  w.eliminate_zeros()
  w.sort_indices()
  return w


def laplacian(w: sp.spmatrix) -> sp.csr_matrix:
  """Graph Laplacian L = Deg - W of a symmetric W (CSR float64, [N, N]).

  For symmetric W, sum_ij W_ij ||z_i - z_j||^2 = 2 tr(Z L Z^T) with codes
  z_i as the columns of Z.
  """
  w = sp.csr_matrix(w, dtype=np.float64)
  deg = np.asarray(w.sum(axis=1)).ravel()
  return sp.csr_matrix(sp.diags(deg) - w)
