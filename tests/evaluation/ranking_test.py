"""Tests for keras_reid.evaluation.ranking (with reference.py as the oracle)."""

import tracemalloc

import numpy as np
import pytest

from keras_reid.evaluation import ranking
from keras_reid.evaluation import reference

INF = 9.0

# Gallery: pid, camid. g2 is junk, g4 a distractor.
G_PIDS = np.array([1, 2, -1, 1, 0, 1, 3])
G_CAMS = np.array([0, 1, 1, 1, 2, 2, 1])
Q_PIDS = np.array([1, 2, 3, 2])
Q_CAMS = np.array([0, 1, -1, -1])
DIST = np.array([
    # g0 (same pid+cam: ignored), g1 wrong, g2 junk, g3 match, g4 distractor,
    # g5 match, g6 wrong -> valid order g1 g3 g4 g5 g6: matches at ranks 1, 3.
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    # pid 2 cam 1: its only gallery image g1 is same camera -> skipped.
    [0.5, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7],
    # pid 3, unknown camera: nothing removed; g2 junk ignored -> g6 at rank 1.
    [0.5, 0.1, 0.05, 0.9, 0.3, 0.8, 0.2],
    # pid 2, unknown camera: g1 (cam 1) is NOT dropped -> rank 0.
    [0.5, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7],
], np.float32)


def market_like(rng, num_ids=30, dim=16, noise=1.0, num_cams=4,
                num_distractors=20, num_junk=15):
  """Small Market-like problem: ids with images in several cameras."""
  centers = rng.normal(size=(num_ids + 1, dim)).astype(np.float32)
  q_f, q_p, q_c, g_f, g_p, g_c = [], [], [], [], [], []
  for pid in range(1, num_ids + 1):
    cams = rng.choice(num_cams, size=rng.integers(2, num_cams + 1),
                      replace=False)
    for cam in cams:
      q_f.append(centers[pid] + noise * rng.normal(size=dim))
      q_p.append(pid)
      q_c.append(cam)
      for _ in range(rng.integers(1, 4)):
        g_f.append(centers[pid] + noise * rng.normal(size=dim))
        g_p.append(pid)
        g_c.append(cam)
  for pid, n in ((0, num_distractors), (-1, num_junk)):
    for _ in range(n):
      g_f.append(rng.normal(size=dim) * 1.5)
      g_p.append(pid)
      g_c.append(rng.integers(num_cams))
  f32 = lambda x: np.asarray(x, np.float32)
  return (f32(q_f), f32(g_f), np.array(q_p), np.array(g_p), np.array(q_c),
          np.array(g_c))


def assert_same(a, b, exact=True):
  assert a.keys() == b.keys()
  for key in a:
    if exact:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    else:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-12, err_msg=key)


def test_hand_computed_distance_matrix():
  r = ranking.evaluate_distances(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS,
                                 max_rank=5)
  assert r["num_queries"] == 3
  assert r["num_skipped_queries"] == 1
  np.testing.assert_allclose(r["cmc"], [1 / 3, 1, 1, 1, 1])
  assert r["rank1"] == pytest.approx(1 / 3)
  assert r["rank5"] == pytest.approx(1.0)
  assert np.isnan(r["rank10"])  # beyond max_rank
  # APs: q0 (1/2 + 2/4) / 2 = .5, q2 1/2, q3 1 ; INPs: 2/4, 1/2, 1.
  assert r["mAP"] == pytest.approx(2 / 3)
  assert r["mINP"] == pytest.approx(2 / 3)
  assert_same(r, reference.eval_market1501(DIST, Q_PIDS, G_PIDS, Q_CAMS,
                                           G_CAMS, max_rank=5), exact=False)


def test_unknown_gallery_camera_keeps_match():
  dist = np.array([[0.3, 0.1, 0.2]], np.float32)
  r = ranking.evaluate_distances(dist, [5], [5, 7, 5], [0], [-1, 1, 0],
                                 max_rank=3)
  # g2 (same pid, same cam 0) ignored; g0 (cam unknown) is a match at rank 1.
  assert r["num_queries"] == 1
  assert r["cmc"] == [0.0, 1.0, 1.0]
  assert r["mAP"] == pytest.approx(0.5)


def test_perfect_features_give_one():
  rng = np.random.default_rng(0)
  qf, gf, qp, gp, qc, gc = market_like(rng, noise=0.0, num_distractors=0,
                                       num_junk=0)
  r = ranking.evaluate_features(qf, gf, qp, gp, qc, gc)
  assert r["num_queries"] > 0
  assert r["rank1"] == 1.0 and r["mAP"] == 1.0 and r["mINP"] == 1.0


@pytest.mark.parametrize("seed", [1, 2])
def test_matches_reference_evaluator(seed):
  rng = np.random.default_rng(seed)
  data = market_like(rng, noise=1.2)
  got = ranking.evaluate_features(*data, max_rank=50)
  want = reference.evaluate_features(*data, max_rank=50)
  assert 0.05 < got["rank1"] < 1.0  # a non-trivial problem
  assert_same(got, want, exact=False)


def test_chunked_equals_unchunked_and_threads():
  rng = np.random.default_rng(3)
  data = market_like(rng, noise=1.2)
  full = ranking.evaluate_features(*data, chunk_size=10_000, num_threads=1)
  for chunk, threads in ((1, 1), (7, 2), (32, 2)):
    assert_same(ranking.evaluate_features(*data, chunk_size=chunk,
                                          num_threads=threads), full)


def test_block_size_fits_the_memory_budget():
  # 1 MiB over 2 threads of 1,000-wide float32 rows: 131 rows a thread,
  # 5 of them the ranking's scratch.
  assert ranking.block_size(1000, 2, memory_budget_mb=1.0) == 126
  assert ranking.block_size(1000, 2, chunk_size=100, memory_budget_mb=1.0) == 100
  assert ranking.block_size(1000, 1, memory_budget_mb=1.0) == 256
  # MSMT17's gallery on 64 threads: 512 MiB hold 20 rows a block, not 256.
  assert ranking.block_size(82161, 64) == 20
  # Below one row per thread: one row (the budget cannot be met).
  assert ranking.block_size(10**6, 8, memory_budget_mb=1.0) == 1
  for bad in (0, -1.0, float("nan")):
    with pytest.raises(ValueError, match="memory_budget_mb"):
      ranking.block_size(1000, 2, memory_budget_mb=bad)
  with pytest.raises(ValueError, match="chunk_size"):
    ranking.block_size(1000, 2, chunk_size=0)


def test_last_round_of_blocks_is_shared_by_the_threads():
  # Market on 2 threads: 12 blocks of 256, then 296 queries in 2 halves
  # (not 256 + 40, which leaves one thread idle at the end).
  starts = ranking._block_starts(3368, 256, 2)  # pylint: disable=protected-access
  assert np.diff(starts).tolist() == [256] * 12 + [148, 148]
  assert np.diff(ranking._block_starts(3368, 256, 1)).tolist() == (  # pylint: disable=protected-access
      [256] * 13 + [40])
  for num_queries, chunk, threads in ((5, 256, 2), (91, 5, 3), (600, 256, 16),
                                      (11659, 97, 16), (1, 1, 3)):
    sizes = np.diff(ranking._block_starts(num_queries, chunk, threads))  # pylint: disable=protected-access
    assert sizes.sum() == num_queries and 1 <= sizes.min()
    assert sizes.max() <= chunk  # within the memory budget


@pytest.mark.parametrize("threads", [1, 3])
def test_memory_budget_bounds_the_blocks_not_the_scores(threads):
  rng = np.random.default_rng(6)
  qf, gf, qp, gp, qc, gc = market_like(rng, noise=1.2)
  keep = gp != -1
  gf, gp, gc = gf[keep], gp[keep], gc[keep]
  dist_fn = ranking.features_distance_fn(qf, gf)
  blocks = []

  def recording_fn(start, stop):
    blocks.append(stop - start)
    return dist_fn(start, stop)

  one_block = ranking.evaluate_distance_fn(
      dist_fn, len(qp), qp, gp, qc, gc, chunk_size=10_000, num_threads=1)
  row_mb = gp.size * 4 / 2**20
  for rows in (1, 5):
    blocks.clear()
    got = ranking.evaluate_distance_fn(
        recording_fn, len(qp), qp, gp, qc, gc, num_threads=threads,
        memory_budget_mb=(rows + 5.5) * threads * row_mb)
    assert max(blocks) == rows and sum(blocks) == len(qp)
    assert_same(got, one_block)  # bit-identical
  assert_same(one_block, reference.evaluate_features(qf, gf, qp, gp, qc, gc),
              exact=False)


def test_peak_memory_follows_the_budget_not_the_gallery():
  # A wide gallery and 2 threads: 256-query blocks would hold 2 x 256 x
  # 20,000 x 4 B = 41 MB of distances; a 1 MiB budget keeps the whole
  # evaluation's NumPy allocations (features checks, norms, match lists,
  # blocks) under 4 MB.
  rng = np.random.default_rng(7)
  num_ids, num_gallery = 100, 20_000
  g_pids = rng.integers(0, num_ids + 1, num_gallery)
  gf = rng.normal(size=(num_gallery, 8)).astype(np.float32)
  q_pids = rng.integers(1, num_ids + 1, 300)
  qf = rng.normal(size=(300, 8)).astype(np.float32)
  args = (qf, gf, q_pids, g_pids, rng.integers(0, 4, 300),
          rng.integers(0, 4, num_gallery))
  tracemalloc.start()
  try:
    got = ranking.evaluate_features(*args, num_threads=2, memory_budget_mb=1)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB"
  assert_same(got, ranking.evaluate_features(*args, num_threads=1,
                                             chunk_size=10_000))


def test_near_ties_are_ordered_as_the_float64_reference():
  # A wide gallery of near-identical distances: float32 GEMMs of different
  # block shapes round differently and reorder near-tied items; the
  # metric follows the float64 distances wherever float32 cannot tell.
  rng = np.random.default_rng(7)
  num_gallery, num_queries = 20_000, 300
  args = (rng.normal(size=(num_queries, 8)).astype(np.float32),
          rng.normal(size=(num_gallery, 8)).astype(np.float32),
          rng.integers(1, 101, num_queries), rng.integers(0, 101, num_gallery),
          rng.integers(0, 4, num_queries), rng.integers(0, 4, num_gallery))
  want = reference.evaluate_features(*args)
  one_block = ranking.evaluate_features(*args, chunk_size=10_000,
                                        num_threads=1)
  assert_same(one_block, want, exact=False)
  for chunk, threads in ((1, 1), (7, 2)):
    assert_same(ranking.evaluate_features(*args, chunk_size=chunk,
                                          num_threads=threads), one_block)


def near_tie_cluster(eps=4e-5):
  """Queries at the origin and six gallery items at squared distances
  1 + (j eps)^2, j = 0..5: distinct in float64, all 1.0 in float32 (below
  half its ulp at 1), their gallery indices in the reverse of their
  float64 order. In float64 order their pids are 1 2 1 2 2 1, so true
  matches and other items alternate inside the tie. Items at distance 4
  around the origin keep the features' mean near 0 (no shift by
  `condition_features`)."""
  near = np.zeros((6, 3), np.float32)
  near[:, 0] = 1
  near[:, 1] = np.arange(6)[::-1] * np.float32(eps)  # index 0 is j = 5
  far = np.array([[-2, 0, 0], [-2, 0, 0], [0, -2, 0], [0, 0, -2], [0, 2, 0],
                  [0, 0, 2]], np.float32)
  gf = np.concatenate([near, far])
  gp = np.array([1, 2, 1, 2, 2, 1][::-1] + [3, 3, 4, 5, 6, 7])
  gc = np.ones(gp.size, np.int64)
  return (np.zeros((3, 3), np.float32), gf, np.array([1, 1, 2]), gp,
          np.array([0, -1, 0]), gc)


def test_near_ties_straddling_true_matches_follow_float64():
  qf, gf, qp, gp, qc, gc = near_tie_cluster()
  want = reference.evaluate_features(qf, gf, qp, gp, qc, gc, max_rank=10)
  # float64 ranks: pid 1 matches at 0, 2, 5; pid 2 at 1, 3, 4.
  ap1, ap2 = (1 + 2 / 3 + 3 / 6) / 3, (1 / 2 + 2 / 4 + 3 / 5) / 3
  assert want["mAP"] == pytest.approx((2 * ap1 + ap2) / 3)
  # The premise: float32 cannot tell the six apart, so ranking by it (ties
  # by gallery index: ranks 0, 3, 5 and 1, 2, 4) scores differently.
  float32 = ranking.features_distance_fn(qf, gf)(0, len(qf))
  assert np.unique(float32[:, :6]).size == 1
  by_float32 = ranking.evaluate_distances(float32, qp, gp, qc, gc, max_rank=10)
  assert by_float32["mAP"] != pytest.approx(want["mAP"])
  for chunk, threads in ((10_000, 1), (1, 1), (2, 2)):
    got = ranking.evaluate_features(qf, gf, qp, gp, qc, gc, max_rank=10,
                                    chunk_size=chunk, num_threads=threads)
    assert_same(got, want, exact=False)


def test_random_near_tie_clusters_equal_the_reference():
  # Integer points in 2 dimensions plus offsets of 1e-4 x small integers in
  # 2 more: squared distances are integers + ~1e-8, distinct in float64
  # and exactly tied in float32, true matches and other items among them.
  rng = np.random.default_rng(11)

  def points(n):
    return np.concatenate([rng.integers(-1, 2, (n, 2)),
                           1e-4 * rng.integers(-3, 4, (n, 2))], 1)

  for _ in range(40):
    nq, ng = rng.integers(1, 30), rng.integers(2, 80)
    qf, gf = points(nq).astype(np.float32), points(ng).astype(np.float32)
    qp, gp = rng.integers(1, 4, nq), rng.integers(-1, 4, ng)
    qc, gc = rng.integers(-1, 3, nq), rng.integers(-1, 3, ng)
    if not any(m.size for m in ranking.true_matches(qp, qc, gp, gc)):
      continue
    got = ranking.evaluate_features(qf, gf, qp, gp, qc, gc, max_rank=10,
                                    chunk_size=int(rng.integers(1, 8)),
                                    num_threads=int(rng.integers(1, 3)))
    assert_same(got, reference.evaluate_features(qf, gf, qp, gp, qc, gc,
                                                 max_rank=10), exact=False)


def test_invariant_to_gallery_order():
  rng = np.random.default_rng(4)
  qf, gf, qp, gp, qc, gc = market_like(rng, noise=1.2)
  base = ranking.evaluate_features(qf, gf, qp, gp, qc, gc)
  perm = rng.permutation(len(gp))
  shuffled = ranking.evaluate_features(qf, gf[perm], qp, gp[perm], qc,
                                       gc[perm])
  assert_same(base, shuffled, exact=False)


def test_ties_are_ordered_by_gallery_index_like_stable_sort():
  rng = np.random.default_rng(5)
  # Integer features in a tiny range: many exactly tied distances.
  qf = rng.integers(0, 2, size=(40, 3)).astype(np.float32)
  gf = rng.integers(0, 2, size=(120, 3)).astype(np.float32)
  qp, gp = rng.integers(1, 6, 40), rng.integers(-1, 6, 120)
  qc, gc = rng.integers(-1, 3, 40), rng.integers(-1, 3, 120)
  got = ranking.evaluate_features(qf, gf, qp, gp, qc, gc, max_rank=20,
                                  chunk_size=9)
  want = reference.evaluate_features(qf, gf, qp, gp, qc, gc, max_rank=20,
                                     sort_kind="stable")
  assert_same(got, want, exact=False)


def test_top_k_orders_by_distance_then_index():
  dist = np.array([[0.3, 0.1, 0.1, 0.0, 0.5]], np.float32)
  np.testing.assert_array_equal(ranking.top_k(dist, 1, 3), [[3, 1, 2]])
  np.testing.assert_array_equal(ranking.top_k(dist, 1, 9), [[3, 1, 2, 0, 4]])


def test_errors_name_the_problem():
  with pytest.raises(ValueError, match="gallery_pids"):
    ranking.evaluate_features(np.zeros((2, 3)), np.zeros((4, 3)), [1, 2],
                              [1, 2, 3], [0, 0], [0, 0, 0, 0])
  with pytest.raises(ValueError, match="dimension"):
    ranking.evaluate_features(np.zeros((2, 3)), np.zeros((4, 5)), [1, 2],
                              [1, 2, 3, 4], [0, 0], [0, 0, 0, 0])


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
