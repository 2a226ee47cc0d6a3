"""Tests for keras_reid.evaluation.cir and verification."""

import numpy as np
import pytest

from keras_reid.evaluation import cir
from keras_reid.evaluation import ranking
from keras_reid.evaluation import verification


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(9, 6))
  q_pids = np.arange(1, 9)
  g_pids = np.concatenate([np.repeat(q_pids, 2), [0, 0, -1]])
  qf = (centres[q_pids] + rng.normal(size=(8, 6))).astype(np.float32)
  gf = (centres[np.maximum(g_pids, 0)]
        + rng.normal(size=(g_pids.size, 6))).astype(np.float32)
  return qf, gf, q_pids, g_pids, np.zeros(8, int), np.ones(g_pids.size, int)


def oracle_scorer(q_pids, g_pids):
  """Scores items that ARE the pids: p = 1 for the same person."""
  return lambda a, b: (a == b).astype(np.float32) * 0.9 + 0.05


def test_full_cir_with_perfect_scorer():
  qf, gf, qp, gp, qc, gc = _problem()
  report = cir.evaluate_cir(oracle_scorer(qp, gp), qp, gp, qp, gp, qc, gc,
                            query_features=qf, gallery_features=gf)
  assert report["mode"] == "full"
  assert report["pairs_scored"] == 8 * (gp != -1).sum()
  assert report["cir"]["rank1"] == 1.0 and report["cir"]["mAP"] == 1.0
  assert report["sir"]["mAP"] < 1.0
  assert report["cir_to_sir_time_ratio"] > 0


def test_top_k_rescoring_reorders_only_top_k():
  qf, gf, qp, gp, qc, gc = _problem(1)
  report = cir.evaluate_cir(oracle_scorer(qp, gp), qp, gp, qp, gp, qc, gc,
                            query_features=qf, gallery_features=gf, top_k=4)
  assert report["pairs_scored"] == 8 * 4
  # A true match within the SIR top-4 moves to rank 1.
  keep = gp != -1
  top = ranking.features_top_k(qf, gf[keep], 4)
  want = np.mean([(gp[keep][t] == p).any() for t, p in zip(top, qp)])
  assert report["cir"]["rank1"] == pytest.approx(want)
  assert report["cir"]["rank1"] >= report["sir"]["rank1"]


def test_cir_distances_shape_and_values():
  d = cir.cir_distances(lambda a, b: a * b, np.array([.5, 1.]),
                        np.array([0., .5, 1.]), batch_size=4)
  np.testing.assert_allclose(d, [[1, .75, .5], [1, .5, 0]])


def test_roc_report_eer_and_threshold():
  same = np.array([1, 1, 1, 1, 0, 0, 0, 0])
  prob = np.array([.9, .8, .7, .3, .6, .2, .1, .05])
  r = verification.roc_report(prob, same)
  assert r["eer"] == pytest.approx(0.25)
  assert 0.3 <= r["threshold"] <= 0.7
  assert r["auc"] == pytest.approx(15 / 16)
  dist = verification.roc_report(-prob, same, higher_means_same=False)
  assert dist["eer"] == pytest.approx(0.25)
  assert dist["threshold"] == pytest.approx(-r["threshold"])
  with pytest.raises(ValueError, match="both"):
    verification.roc_report(prob, np.ones(8))


def test_sir_pairs_all_and_sampled():
  feats = np.arange(12, dtype=np.float32).reshape(6, 2)
  pids = np.array([1, 1, 2, 2, 3, -1])
  d, same = verification.sir_pairs(feats, pids)
  assert d.size == 10 and same.sum() == 2
  np.testing.assert_allclose(d[0], np.sqrt(8))
  d2, same2 = verification.sir_pairs(np.zeros((300, 2)),
                                     np.repeat(np.arange(100), 3),
                                     max_pairs=500)
  assert same2.sum() == 300 and d2.size <= 500


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
