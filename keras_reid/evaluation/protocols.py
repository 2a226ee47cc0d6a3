"""Evaluation protocols: Market-1501 multi-query, repeated-split averaging.

Cross-dataset evaluation needs nothing here: evaluate a model on another
dataset's query / gallery records.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

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
  pids = ranking._as_1d_int("query_pids", query_pids, qf.shape[0])
  cams = ranking._as_1d_int("query_camids", query_camids, qf.shape[0])
  _, group = np.unique(np.stack([pids, cams], 1), axis=0, return_inverse=True)
  group = group.reshape(-1)
  sums = np.zeros((group.max() + 1 if group.size else 0, qf.shape[1]),
                  np.float64)
  np.add.at(sums, group, qf)
  counts = np.bincount(group)
  return (sums / counts[:, None])[group].astype(np.float32)


def evaluate_multi_query(query_features, gallery_features, query_pids,
                         gallery_pids, query_camids, gallery_camids,
                         **kwargs) -> dict:
  """`ranking.evaluate_features` with multi-query pooled query features."""
  pooled = pool_multi_query(query_features, query_pids, query_camids)
  return ranking.evaluate_features(pooled, gallery_features, query_pids,
                                   gallery_pids, query_camids, gallery_camids,
                                   **kwargs)


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
  for key in ranking.rank_keys():
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
