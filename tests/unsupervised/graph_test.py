"""Tests for keras_reid.unsupervised.graph (dense brute force as the oracle)."""

import numpy as np
import pytest

from keras_reid.unsupervised import graph


def dense_oracle(y, is_a, k, weighting="binary", heat_t=None, mutual=False):
  """Dense [N, N] cross-camera kNN graph from a full distance matrix."""
  n = y.shape[0]
  d2 = ((y[:, None, :] - y[None, :, :]) ** 2).sum(-1)
  chose = np.zeros((n, n), bool)
  for i in range(n):
    others = np.flatnonzero(is_a != is_a[i])
    nearest = others[np.argsort(d2[i, others], kind="stable")[:k]]
    chose[i, nearest] = True
  edges = (chose & chose.T) if mutual else (chose | chose.T)
  if weighting == "binary":
    return edges.astype(float)
  t = d2[chose].mean() if heat_t is None else heat_t
  return np.where(edges, np.exp(-d2 / t), 0.0)


def problem(seed=0, n=30, dim=5, cams=2):
  rng = np.random.default_rng(seed)
  y = rng.normal(size=(n, dim)).astype(np.float32)
  camids = np.arange(n) % cams
  return y, camids


@pytest.mark.parametrize("weighting", ["binary", "heat"])
@pytest.mark.parametrize("mutual", [False, True])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_graph_matches_dense_oracle(weighting, mutual, k):
  y, camids = problem(seed=k)
  is_a = graph.camera_a_mask(camids)
  w = graph.cross_camera_knn_graph(y, is_a, k, weighting=weighting,
                                   mutual=mutual)
  expected = dense_oracle(y.astype(np.float64), is_a, k, weighting,
                          mutual=mutual)
  np.testing.assert_allclose(w.toarray(), expected, rtol=1e-5, atol=1e-7)


def test_graph_is_symmetric_cross_camera_sparse():
  y, camids = problem(n=60, cams=3)
  is_a = graph.camera_a_mask(camids, camera_a=1)
  w = graph.cross_camera_knn_graph(y, is_a, 4)
  dense = w.toarray()
  np.testing.assert_array_equal(dense, dense.T)
  assert np.all(np.diag(dense) == 0)
  rows, cols = w.nonzero()
  assert np.all(is_a[rows] != is_a[cols])  # B = cameras 0 and 2 together
  assert w.nnz <= 2 * 4 * 60
  # Every image keeps at least its own k choices.
  assert np.all(np.diff(w.indptr) >= 4)


def test_heat_t_and_clipped_k():
  y, camids = problem(n=12)
  is_a = graph.camera_a_mask(camids)
  w = graph.cross_camera_knn_graph(y, is_a, 100, weighting="heat", heat_t=2.0)
  expected = dense_oracle(y.astype(np.float64), is_a, 6, "heat", heat_t=2.0)
  np.testing.assert_allclose(w.toarray(), expected, rtol=1e-5)
  # k >= camera size links every cross-camera pair.
  assert w.nnz == 2 * 6 * 6


def test_laplacian_identity():
  y, camids = problem(n=25)
  is_a = graph.camera_a_mask(camids)
  w = graph.cross_camera_knn_graph(y, is_a, 3, weighting="heat")
  lap = graph.laplacian(w)
  np.testing.assert_allclose(np.asarray(lap.sum(axis=1)).ravel(), 0,
                             atol=1e-12)
  z = np.random.default_rng(1).normal(size=(4, 25))  # columns are codes
  wd = w.toarray()
  direct = sum(wd[i, j] * np.sum((z[:, i] - z[:, j]) ** 2)
               for i in range(25) for j in range(25))
  np.testing.assert_allclose(direct, 2 * np.trace(z @ lap @ z.T), rtol=1e-10)


def test_camera_a_mask_errors():
  np.testing.assert_array_equal(graph.camera_a_mask([0, 1, 2, 0], 0),
                                [True, False, False, True])
  with pytest.raises(ValueError, match="unknown camera"):
    graph.camera_a_mask([0, 1, -1])
  with pytest.raises(ValueError, match="camera_a=3"):
    graph.camera_a_mask([0, 1, 1], camera_a=3)
  with pytest.raises(ValueError, match="weighting"):
    graph.cross_camera_knn_graph(np.zeros((4, 2)), [1, 1, 0, 0], 1,
                                 weighting="gauss")
  with pytest.raises(ValueError, match="is_a"):
    graph.cross_camera_knn_graph(np.zeros((4, 2)), [1, 1, 1, 1], 1)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
