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
  multi = protocols.ranking.evaluate_features(
      protocols.pool_multi_query(qf, q_pids, q_cams), gf, q_pids, g_pids,
      q_cams, np.ones(6, int))
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


def _cuhk03_case():
  """One query (pid 1, camera 0) and a hand-made gallery of distances.

  Other camera: pid 1 at 0.5 or 2.0, pid 2 at 1.0, pid 3 at 3.0 or 0.1;
  pid 2 also at 0.0 in the query's own camera (never drawn) and a junk
  image at 0.0. Drawing one image per identity uniformly, the true match
  ranks 0 with probability 1/4 (0.5 and 3.0), 1 with 1/2 ((0.5, 0.1) or
  (2.0, 3.0)) and 2 with 1/4 ((2.0, 0.1)): CMC = [0.25, 0.75, 1.0].
  """
  dist = np.array([[0.5, 2.0, 1.0, 3.0, 0.1, 0.0, 0.0]])
  g_pids = [1, 1, 2, 3, 3, 2, -1]
  g_cams = [1, 1, 1, 1, 1, 0, 1]
  return dist, [1], g_pids, [0], g_cams


def test_single_gallery_shot_cmc_matches_the_hand_computed_expectation():
  cmc, used = protocols.single_gallery_shot_cmc(
      *_cuhk03_case(), max_rank=4, num_repeats=40000, seed=0)
  assert used == 1
  np.testing.assert_allclose(cmc, [0.25, 0.75, 1.0, 1.0], atol=0.01)
  # Seeded: the same draws give the same curve; 10 draws are exact
  # multiples of 1/10.
  a, _ = protocols.single_gallery_shot_cmc(*_cuhk03_case(), max_rank=3, seed=5)
  b, _ = protocols.single_gallery_shot_cmc(*_cuhk03_case(), max_rank=3, seed=5)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(a * 10, np.round(a * 10), atol=1e-9)


def test_single_gallery_shot_with_one_image_per_identity_is_plain_cmc():
  # One other-camera image per identity: no randomness; the query's rank is
  # fixed (pid 3 at 0.1 beats pid 1 at 0.5): CMC = [0, 1, 1].
  dist = np.array([[0.5, 1.0, 0.1, 0.0]])
  cmc, _ = protocols.single_gallery_shot_cmc(
      dist, [1], [1, 2, 3, 1], [0], [1, 1, 1, 0], max_rank=3, num_repeats=3)
  np.testing.assert_array_equal(cmc, [0.0, 1.0, 1.0])
  with pytest.raises(ValueError, match="single-gallery-shot"):
    protocols.single_gallery_shot_cmc(dist, [4], [1, 2, 3, 1], [0],
                                      [1, 1, 1, 0])


def test_evaluate_cuhk03_on_features_with_query_equal_gallery():
  # Old-protocol layout: query = gallery = the test images, camid = view.
  feats = np.array([[0.], [0.2], [1.], [1.1], [5.], [5.3]], np.float32)
  pids = [1, 1, 2, 2, 3, 3]
  cams = [0, 1, 0, 1, 0, 1]
  result = protocols.evaluate_cuhk03(feats, feats, pids, pids, cams, cams,
                                     max_rank=3)
  assert result["rank1"] == 1.0 and result["num_queries"] == 6
  assert result["cuhk03_num_repeats"] == protocols.CUHK03_NUM_REPEATS
  assert protocols.is_cuhk03_classic("cuhk03", {"protocol": "old"})
  assert not protocols.is_cuhk03_classic("cuhk03", {})
  assert not protocols.is_cuhk03_classic("market1501", {"protocol": "old"})


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
