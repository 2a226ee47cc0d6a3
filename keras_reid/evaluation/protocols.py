"""Evaluation protocols: Market-1501 multi-query, CUHK03 classic
single-gallery-shot CMC, repeated-split averaging.

Cross-dataset evaluation needs nothing here: evaluate a model on another
dataset's query / gallery records.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from keras_reid.data import records
from keras_reid.evaluation import ranking


def pool_multi_query(query_features, query_pids, query_camids) -> np.ndarray:
  """Market-1501 multi-query: mean feature of an identity's images per camera.

  Every query image is replaced by the mean of all query-set images with the
  same pid and the same camera (itself included), so the query list, and
  therefore the evaluation's bookkeeping, stays the same. Images with an
  unknown camera (-1) are pooled with the other unknown-camera images of
  that pid.

  Args:
    query_features: [Q, D] float features.
    query_pids: [Q] ints.
    query_camids: [Q] ints.

  Returns:
    [Q, D] float32 pooled features.
  """
  qf = np.asarray(query_features, np.float32)
  pids = ranking.check_ids("query_pids", query_pids, qf.shape[0])
  cams = ranking.check_ids("query_camids", query_camids, qf.shape[0])
  _, group = np.unique(np.stack([pids, cams], 1), axis=0, return_inverse=True)
  group = group.reshape(-1)
  sums = np.zeros((group.max() + 1 if group.size else 0, qf.shape[1]),
                  np.float64)
  np.add.at(sums, group, qf)
  counts = np.bincount(group)
  return (sums / counts[:, None])[group].astype(np.float32)


def aggregate_splits(results: Sequence[dict]) -> dict:
  """Mean and standard deviation over repeated-split evaluations.

  Args:
    results: per-split dicts from `evaluate_features` (VIPeR, PRID, CUHK01,
      old CUHK03 protocols: typically 10 random splits).

  Returns:
    dict with the mean of every scalar metric and of the CMC curve (same keys
    as one result), "<key>_std" (population std over splits, ddof=0),
    "cmc_std", "num_splits", and "num_queries" / "num_skipped_queries" summed.
  """
  if not results:
    raise ValueError("aggregate_splits needs at least one per-split result.")
  out = {"num_splits": len(results)}
  for key in ranking.METRIC_KEYS:
    values = np.array([r[key] for r in results], np.float64)
    out[key] = float(values.mean())
    out[f"{key}_std"] = float(values.std())
  lengths = {len(r["cmc"]) for r in results}
  if len(lengths) != 1:
    raise ValueError(f"splits have CMC curves of different lengths {lengths};"
                     " evaluate every split with the same max_rank.")
  cmc = np.array([r["cmc"] for r in results], np.float64)
  out["cmc"] = cmc.mean(0).tolist()
  out["cmc_std"] = cmc.std(0).tolist()
  for key in ("num_queries", "num_skipped_queries"):
    out[key] = int(sum(r[key] for r in results))
  return out


# Random gallery draws averaged by the CUHK03 classic metric (as torchreid).
CUHK03_NUM_REPEATS = 10


def is_cuhk03_classic(dataset: str, options: dict) -> bool:
  """Whether a dataset read with these reader options is CUHK03's classic
  protocol (Li et al. 2014, 1,367 / 100 ids, 20 splits: protocol="old"),
  whose published numbers use the single-gallery-shot CMC."""
  return dataset == "cuhk03" and options.get("protocol", "new") == "old"


def single_gallery_shot_cmc(distances, query_pids, gallery_pids, query_camids,
                            gallery_camids, *, max_rank: int = 50,
                            num_repeats: int = CUHK03_NUM_REPEATS,
                            seed: int = 0) -> tuple[np.ndarray, int]:
  """CUHK03 classic CMC: one random gallery image per identity, repeated.

  For each query the gallery is the images of the other cameras (camid !=
  the query's; all images when the query's camera is unknown, -1), junk
  (pid -1) left out. Each repeat draws one image per gallery identity and
  ranks the drawn images by (distance, gallery index); the query's CMC is
  the mean over `num_repeats` draws, the result the mean over queries. A
  query whose identity has no image in its gallery is skipped. The draws
  of query q come from np.random.default_rng([seed, q]): the result is
  exact and reproducible. (torchreid's `use_metric_cuhk03` draws from the
  same-pid-other-camera and every other-pid image, both cameras; here the
  gallery is the other camera throughout, the classic single-shot setting.)

  Args:
    distances: [Q, G] float distances (smaller = more similar).
    query_pids, gallery_pids: [Q], [G] ints.
    query_camids, gallery_camids: [Q], [G] ints (-1 unknown).
    max_rank: CMC length.
    num_repeats: gallery draws per query.
    seed: seeds the draws.

  Returns:
    (cmc float64 [max_rank], number of queries used).
  """
  dist = np.asarray(distances, np.float64)
  num_q, num_g = dist.shape
  qp = ranking.check_ids("query_pids", query_pids, num_q)
  qc = ranking.check_ids("query_camids", query_camids, num_q)
  gp = ranking.check_ids("gallery_pids", gallery_pids, num_g)
  gc = ranking.check_ids("gallery_camids", gallery_camids, num_g)
  if max_rank < 1 or num_repeats < 1:
    raise ValueError(f"max_rank={max_rank} and num_repeats={num_repeats} "
                     "must be >= 1.")
  total = np.zeros(max_rank, np.float64)
  used = 0
  for q in range(num_q):
    valid = gp != records.JUNK_PID
    if qc[q] != records.UNKNOWN_CAMID:
      valid &= gc != qc[q]
    cols = np.nonzero(valid)[0]
    cols = cols[np.argsort(gp[cols], kind="stable")]  # grouped by pid
    pids, starts, sizes = np.unique(gp[cols], return_index=True,
                                    return_counts=True)
    own = np.searchsorted(pids, qp[q])
    if own == len(pids) or pids[own] != qp[q]:
      continue  # no true match in this query's gallery
    rng = np.random.default_rng([seed, q])
    drawn = cols[starts + rng.integers(0, sizes,
                                       size=(num_repeats, len(pids)))]
    d = dist[q, drawn]                                  # [R, num_pids]
    true_col = drawn[:, own:own + 1]
    true_d = d[:, own:own + 1]
    rank = np.sum((d < true_d) | ((d == true_d) & (drawn < true_col)), axis=1)
    hits = np.zeros(max_rank, np.float64)
    for r in rank[rank < max_rank]:
      hits[r:] += 1
    total += hits / num_repeats
    used += 1
  if not used:
    raise ranking.NoValidQueryError(
        f"all {num_q} queries skipped: none has an image of its identity "
        "from another camera in the gallery (CUHK03 single-gallery-shot).")
  return total / used, used


def evaluate_cuhk03(query_features, gallery_features, query_pids,
                    gallery_pids, query_camids, gallery_camids, *,
                    max_rank: int = 50, num_repeats: int = CUHK03_NUM_REPEATS,
                    seed: int = 0) -> dict:
  """SIR evaluation with the CUHK03 classic single-gallery-shot CMC.

  rank1..rank20 and "cmc" come from `single_gallery_shot_cmc` on Euclidean
  distances; mAP, mINP and the query counts from the full gallery
  (`ranking.evaluate_features`), as torchreid reports them.

  Returns:
    `ranking.evaluate_features`'s dict with the CMC keys replaced, plus
    "cuhk03_num_repeats".
  """
  result = ranking.evaluate_features(
      query_features, gallery_features, query_pids, gallery_pids,
      query_camids, gallery_camids, max_rank=max_rank)
  qf, gf, q_sq, g_sq = ranking.condition_features(query_features,
                                                  gallery_features)
  cmc, _ = single_gallery_shot_cmc(
      ranking.squared_euclidean(qf, gf, g_sq, q_sq), query_pids, gallery_pids,
      query_camids, gallery_camids, max_rank=max_rank,
      num_repeats=num_repeats, seed=seed)
  result.update({f"rank{k}": float(cmc[k - 1]) if k <= max_rank else
                 float("nan") for k in (1, 5, 10, 20)})
  result["cmc"] = [float(c) for c in cmc]
  result["cuhk03_num_repeats"] = num_repeats
  return result
