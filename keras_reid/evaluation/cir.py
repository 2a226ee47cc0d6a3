"""CIR: rank by a pair scorer (the verification head), fully or on the SIR top-k.

A pair scorer maps two aligned batches (images, or anything the scorer
accepts such as embeddings) to same-person probabilities [B]; for a trained
model it is `builders.build_pair_scorer(model)` wrapped as
`lambda a, b: model({"images_a": a, "images_b": b})`. CIR distance = 1 - p.

SIR embeds each image once and costs one GEMM; CIR runs the scorer on every
pair, so the functions here time both and report the ratio.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional

import numpy as np

from keras_reid import progress
from keras_reid.data import records
from keras_reid.evaluation import ranking

# (items_a [B, ...], items_b [B, ...]) -> same-person probability [B].
PairScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def score_pairs(scorer: PairScorer, query_items, gallery_items,
                query_index: np.ndarray, gallery_index: np.ndarray, *,
                batch_size: int = 256) -> np.ndarray:
  """Probabilities [P] of the pairs (query_items[qi], gallery_items[gi]).

  Reports its progress on stderr when it takes more than a few seconds
  (full CIR runs the scorer on every query-gallery pair).
  """
  out = np.empty(len(query_index), np.float32)
  bar = progress.make_progress(len(query_index), "pairs", rate_unit="pair",
                               label="Scoring pairs", stream=sys.stderr,
                               delay=progress.SLOW_SECONDS)
  for s in range(0, len(query_index), batch_size):
    qi, gi = query_index[s:s + batch_size], gallery_index[s:s + batch_size]
    prob = np.asarray(scorer(query_items[qi], gallery_items[gi]), np.float32)
    out[s:s + len(qi)] = prob.reshape(-1)
    bar.update(s + len(qi))
  return out


def cir_distances(scorer: PairScorer, query_items, gallery_items, *,
                  batch_size: int = 256) -> np.ndarray:
  """Full CIR: [Q, G] float32 distances 1 - p over every pair (small sets)."""
  nq, ng = len(query_items), len(gallery_items)
  qi = np.repeat(np.arange(nq), ng)
  gi = np.tile(np.arange(ng), nq)
  prob = score_pairs(scorer, query_items, gallery_items, qi, gi,
                     batch_size=batch_size)
  return (1.0 - prob).reshape(nq, ng)


def rescore_top_k_fn(query_features, gallery_features, scorer: PairScorer,
                     query_items, gallery_items, *, k: int,
                     batch_size: int = 256):
  """SIR distances with each query's top-k re-ordered by the pair scorer.

  The re-scored top-k get distances in [-1, 0] (-p), below every SIR
  (squared Euclidean, >= 0) distance, so they stay ahead of the rest in the
  scorer's order; the rest keep the SIR order.

  Returns:
    (DistanceChunkFn over the gallery, number of scored pairs).
  """
  qf, gf, q_sq, g_sq = ranking.condition_features(query_features,
                                                  gallery_features)
  sir = lambda s, e: ranking.squared_euclidean(qf[s:e], gf, g_sq, q_sq[s:e])
  top = ranking.top_k(sir, qf.shape[0], k)
  qi = np.repeat(np.arange(qf.shape[0]), top.shape[1])
  prob = score_pairs(scorer, query_items, gallery_items, qi, top.ravel(),
                     batch_size=batch_size).reshape(top.shape)

  def dist_fn(start: int, stop: int) -> np.ndarray:
    dist = sir(start, stop)
    np.put_along_axis(dist, top[start:stop], -prob[start:stop], axis=1)
    return dist

  return dist_fn, qi.size


def _drop_junk(gallery_features, gallery_items, gallery_pids, gallery_camids):
  gallery_pids = np.asarray(gallery_pids)
  keep = gallery_pids != records.JUNK_PID
  items = gallery_items[keep] if gallery_items is not None else None
  return (np.asarray(gallery_features)[keep] if gallery_features is not None
          else None, items, gallery_pids[keep],
          np.asarray(gallery_camids)[keep])


def evaluate_cir(scorer: PairScorer, query_items, gallery_items, query_pids,
                 gallery_pids, query_camids, gallery_camids, *,
                 query_features=None, gallery_features=None,
                 top_k: Optional[int] = None, max_rank: int = 50,
                 batch_size: int = 256) -> dict:
  """CIR evaluation, full (top_k None) or re-scoring the SIR top-k.

  Args:
    scorer: the pair scorer.
    query_items, gallery_items: arrays indexed per image ([N, ...]) that the
      scorer takes (images or embeddings).
    query_pids ... gallery_camids: as in `ranking.evaluate_features`.
    query_features, gallery_features: SIR features; needed for top_k, and
      when given the SIR evaluation is also run and timed.
    top_k: re-score only this many SIR neighbours per query.
    max_rank: CMC length.
    batch_size: pairs per scorer call.

  Returns:
    {"cir": result dict, "sir": result dict or absent, "cir_seconds",
    "sir_seconds", "pairs_scored", "cir_to_sir_time_ratio"}.
  """
  gallery_features, gallery_items, gallery_pids, gallery_camids = _drop_junk(
      gallery_features, gallery_items, gallery_pids, gallery_camids)
  ids = (query_pids, gallery_pids, query_camids, gallery_camids)
  report = {}
  if query_features is not None:
    t0 = time.perf_counter()
    report["sir"] = ranking.evaluate_features(query_features, gallery_features,
                                              *ids, max_rank=max_rank)
    report["sir_seconds"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  if top_k:
    if query_features is None:
      raise ValueError("top_k re-scoring needs query_features and "
                       "gallery_features for the SIR ranking.")
    dist_fn, pairs = rescore_top_k_fn(
        query_features, gallery_features, scorer, query_items, gallery_items,
        k=top_k, batch_size=batch_size)
    report["cir"] = ranking.evaluate_distance_fn(
        dist_fn, len(query_items), *ids, max_rank=max_rank)
  else:
    dist = cir_distances(scorer, query_items, gallery_items,
                         batch_size=batch_size)
    pairs = dist.size
    report["cir"] = ranking.evaluate_distances(dist, *ids, max_rank=max_rank)
  report["cir_seconds"] = time.perf_counter() - t0
  report["pairs_scored"] = int(pairs)
  report["mode"] = f"top{top_k}" if top_k else "full"
  if "sir_seconds" in report:
    report["cir_to_sir_time_ratio"] = report["cir_seconds"] / max(
        report["sir_seconds"], 1e-9)
  return report
