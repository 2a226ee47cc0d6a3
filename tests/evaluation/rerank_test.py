"""Tests for keras_reid.evaluation.rerank against the dense reference."""

import numpy as np
import pytest

from keras_reid.evaluation import ranking
from keras_reid.evaluation import rerank


def _problem(seed=0, num_ids=12, dim=8):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_ids + 1, dim))
  q_pids = np.arange(1, num_ids + 1)
  g_pids = np.concatenate([np.repeat(q_pids, 4), [0] * 6, [-1] * 4])
  noise = lambda n: 0.9 * rng.normal(size=(n, dim))
  qf = (centres[q_pids] + noise(q_pids.size)).astype(np.float32)
  gf = (centres[np.maximum(g_pids, 0)] + noise(g_pids.size)).astype(np.float32)
  q_cams = np.zeros(q_pids.size, int)
  g_cams = rng.integers(0, 3, g_pids.size)
  return qf, gf, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("k1,k2", [(6, 3), (4, 1)])
def test_matches_dense_reference(k1, k2):
  qf, gf, *_ = _problem()
  want = rerank.reference_rerank(qf, gf, k1=k1, k2=k2, lambda_value=0.3)
  fn = rerank.reranked_distance_fn(qf, gf, k1=k1, k2=k2, lambda_value=0.3,
                                   chunk_size=7)
  got = np.concatenate([fn(0, 5), fn(5, qf.shape[0])], 0)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k1,k2", [(6, 3), (4, 1)])
def test_jaccard_distance_matches_dense_reference(k1, k2):
  qf, gf, *_ = _problem(seed=2)
  want = rerank.reference_rerank(qf, gf, k1=k1, k2=k2, lambda_value=0.0)
  got = rerank.jaccard_distance(np.concatenate([qf, gf]), k1=k1, k2=k2,
                                chunk_size=7)
  nq = qf.shape[0]
  np.testing.assert_allclose(got[:nq, nq:], want, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(got, got.T)
  np.testing.assert_array_equal(np.diag(got), 0.0)
  assert got.min() >= 0 and got.max() <= 1


def test_evaluate_reranked_matches_reference_and_helps():
  data = _problem(seed=1)
  got = rerank.evaluate_reranked(*data, k1=6, k2=3)
  want = rerank.reference_evaluate_reranked(*data, k1=6, k2=3)
  for key in ranking.METRIC_KEYS:
    assert got[key] == pytest.approx(want[key]), key
  plain = ranking.evaluate_features(*data)
  assert got["num_queries"] == plain["num_queries"] > 0
  assert got["mAP"] >= plain["mAP"] - 0.05  # re-ranking should not collapse


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
