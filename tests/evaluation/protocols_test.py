"""Tests for keras_reid.evaluation.protocols."""

import numpy as np
import pytest

from keras_reid.evaluation import protocols


def test_pool_multi_query_means_per_pid_and_camera():
  feats = np.array([[0., 0.], [2., 4.], [10., 10.], [5., 5.]], np.float32)
  pids = [1, 1, 1, 2]
  cams = [0, 0, 1, 0]
  pooled = protocols.pool_multi_query(feats, pids, cams)
  np.testing.assert_allclose(pooled, [[1, 2], [1, 2], [10, 10], [5, 5]])


def test_multi_query_helps_noisy_queries():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(6, 8)).astype(np.float32)
  q_pids = np.repeat(np.arange(6), 4)
  q_cams = np.zeros(24, int)
  qf = centres[q_pids] + 1.5 * rng.normal(size=(24, 8)).astype(np.float32)
  g_pids = np.arange(6)
  gf = centres
  single = protocols.ranking.evaluate_features(qf, gf, q_pids, g_pids, q_cams,
                                               np.ones(6, int))
  multi = protocols.evaluate_multi_query(qf, gf, q_pids, g_pids, q_cams,
                                         np.ones(6, int))
  assert multi["num_queries"] == single["num_queries"] == 24
  assert multi["mAP"] > single["mAP"]


def test_aggregate_splits_mean_and_std():
  a = dict(rank1=.5, rank5=.6, rank10=.7, rank20=.8, mAP=.4, mINP=.1,
           cmc=[.5, .6], num_queries=10, num_skipped_queries=1)
  b = dict(rank1=.7, rank5=.8, rank10=.9, rank20=1., mAP=.6, mINP=.3,
           cmc=[.7, .8], num_queries=10, num_skipped_queries=0)
  out = protocols.aggregate_splits([a, b])
  assert out["num_splits"] == 2
  assert out["rank1"] == pytest.approx(.6)
  assert out["rank1_std"] == pytest.approx(.1)
  assert out["mAP_std"] == pytest.approx(.1)
  np.testing.assert_allclose(out["cmc"], [.6, .7])
  assert out["num_queries"] == 20 and out["num_skipped_queries"] == 1
  with pytest.raises(ValueError, match="at least one"):
    protocols.aggregate_splits([])


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
