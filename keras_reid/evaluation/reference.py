"""The standard evaluator, written in NumPy: the oracle and the bench baseline.

This is the well-known `eval_market1501` logic of torchreid / deep-person-reid
(whose Cython version PyTorch Re-ID toolkits use): a full distance matrix,
a full argsort of every row, then per query the removal of same-pid
same-camera items, CMC, AP and INP. It is deliberately simple and slow; the
fast evaluator in `ranking.py` must give the same numbers.

Distances: by default the exact squared differences in float64, the
oracle also for features whose float32 GEMM form a^2 + b^2 - 2ab overflows
(magnitudes ~1e20) or cancels (a large common offset, e.g. the
near-identical features of a barely trained model); with dtype=np.float32
one float32 GEMM, as those toolkits compute them (the bench baseline).

Deviation from torchreid, so the oracle follows this package's rules: items
are removed for the query's camera only when the camera is known (camid >= 0),
and junk (pid -1) gallery items are dropped first (torchreid's readers drop
them at load time).
"""

from __future__ import annotations

import numpy as np

from keras_reid.data import records


def distance_matrix(query_features, gallery_features,
                    dtype=np.float64) -> np.ndarray:
  """Full [Q, G] squared Euclidean distances.

  Args:
    query_features: [Q, D] floats.
    gallery_features: [G, D] floats.
    dtype: np.float32: one float32 GEMM (a^2 + b^2 - 2ab, clipped at 0);
      np.float64: sum((a - b)^2) in float64, query by query (exact up to
      float64 rounding of each term; slow).

  Returns:
    [Q, G] distances of `dtype`.
  """
  if np.dtype(dtype) == np.float64:
    qf = np.asarray(query_features, np.float64)
    gf = np.asarray(gallery_features, np.float64)
    dist = np.empty((qf.shape[0], gf.shape[0]), np.float64)
    for i, q in enumerate(qf):
      diff = gf - q
      dist[i] = np.einsum("ij,ij->i", diff, diff)
    return dist
  qf = np.asarray(query_features, np.float32)
  gf = np.asarray(gallery_features, np.float32)
  dist = qf @ gf.T
  dist *= -2.0
  dist += np.einsum("ij,ij->i", gf, gf)[None, :]
  dist += np.einsum("ij,ij->i", qf, qf)[:, None]
  np.maximum(dist, 0.0, out=dist)
  return dist


def eval_market1501(distmat, q_pids, g_pids, q_camids, g_camids,
                    max_rank: int = 50, sort_kind: str = "stable") -> dict:
  """torchreid's evaluator on a full [Q, G] distance matrix.

  Args:
    distmat: [Q, G] distances.
    q_pids, g_pids, q_camids, g_camids: ids as in `ranking.evaluate_features`.
    max_rank: CMC length.
    sort_kind: argsort kind; "stable" orders ties by gallery index (the fast
      evaluator's rule); torchreid uses the default "quicksort".

  Returns:
    Same keys as `ranking.evaluate_features`.
  """
  q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
  q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
  keep_g = g_pids != records.JUNK_PID
  distmat = np.asarray(distmat)[:, keep_g]
  g_pids, g_camids = g_pids[keep_g], g_camids[keep_g]
  num_q, num_g = distmat.shape
  indices = np.argsort(distmat, axis=1, kind=sort_kind)
  matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)

  all_cmc, all_ap, all_inp = [], [], []
  num_valid_q = 0
  for q_idx in range(num_q):
    q_pid, q_camid = q_pids[q_idx], q_camids[q_idx]
    order = indices[q_idx]
    remove = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
    if q_camid < 0:  # unknown camera: nothing is same-camera
      remove[:] = False
    keep = np.invert(remove)
    raw_cmc = matches[q_idx][keep]
    if q_pid == records.JUNK_PID or not np.any(raw_cmc):
      continue
    cmc = raw_cmc.cumsum()
    pos_idx = np.where(raw_cmc == 1)[0]
    max_pos_idx = np.max(pos_idx)
    all_inp.append(cmc[max_pos_idx] / (max_pos_idx + 1.0))
    cmc[cmc > 1] = 1
    # Pad short rows (gallery smaller than max_rank) with their last value.
    cmc = cmc[:max_rank]
    all_cmc.append(np.pad(cmc, (0, max_rank - cmc.size), mode="edge"))
    num_valid_q += 1
    num_rel = raw_cmc.sum()
    tmp_cmc = raw_cmc.cumsum() / np.arange(1, raw_cmc.size + 1.0)
    tmp_cmc = tmp_cmc * raw_cmc
    all_ap.append(tmp_cmc.sum() / num_rel)

  if num_valid_q:
    cmc = np.asarray(all_cmc, np.float64).sum(0) / num_valid_q
  else:
    cmc = np.zeros(max_rank)
  result = {f"rank{k}": float(cmc[k - 1]) if k <= max_rank else float("nan")
            for k in (1, 5, 10, 20)}
  result.update(mAP=float(np.mean(all_ap)) if all_ap else 0.0,
                mINP=float(np.mean(all_inp)) if all_inp else 0.0,
                cmc=[float(c) for c in cmc], num_queries=num_valid_q,
                num_skipped_queries=num_q - num_valid_q)
  return result


def evaluate_features(query_features, gallery_features, q_pids, g_pids,
                      q_camids, g_camids, max_rank: int = 50,
                      sort_kind: str = "stable", dtype=np.float64) -> dict:
  """Drops junk, computes the full distance matrix, then the above.

  dtype: of the distances (`distance_matrix`): np.float64 for the exact
  oracle, np.float32 for the baseline of PyTorch toolkits.
  """
  g_pids = np.asarray(g_pids)
  keep = g_pids != records.JUNK_PID
  dist = distance_matrix(query_features, np.asarray(gallery_features)[keep],
                         dtype)
  return eval_market1501(dist, q_pids, g_pids[keep], q_camids,
                         np.asarray(g_camids)[keep], max_rank, sort_kind)
