"""Benchmark: SIR evaluation on a Market-1501-sized synthetic problem.

3,368 queries x (15,913 gallery + 3,819 junk) images, Market-like ids
(750 test ids, 6 cameras, 2,798 distractors), features = identity centre +
noise (tuned to a Market-like Rank-1). Each method runs in its own
subprocess so that its peak RSS is its own:

  fast       keras_reid.evaluation.ranking.evaluate_features
  fast_serial_gemm
             the same ranking scheduled as before 2026-11-27: one chunk's
             GEMM at a time on every BLAS thread, the ranking of a chunk
             overlapping the next GEMM (now: each thread computes and ranks
             its own chunks, BLAS on one thread)
  baseline   float32 GEMM distance matrix + full argsort + torchreid's
             eval_market1501 loop (keras_reid.evaluation.reference), i.e. what
             PyTorch Re-ID toolkits do, in NumPy instead of Cython
  rerank     k-reciprocal re-ranking (keras_reid.evaluation.rerank) + evaluation

Usage:
  python bench/eval_market.py [--dim 1024] [--methods fast,baseline]
      [--scale 1.0] [--repeats 1]

In one process, alternating (ratios to the GEMM measured side by side):
  python bench/eval_market.py --alternate 7 [--before_root DIR]
      [--check_reference] [--single_thread]
runs gemm and fast (and, with --before_root, the evaluator of a checkout
of the package in DIR, e.g. `git archive <commit> keras_reid | tar -x -C
DIR`) in turn, `--alternate` rounds, and prints their medians and the
medians' ratios to the GEMM's; --check_reference also compares fast with
the float64 reference evaluator (slow at full size: use --scale 0.25).

  python bench/eval_market.py --phases 3 [--before_root DIR]
prints where fast's CPU time goes (one thread; `phases`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import os
import resource
import subprocess
import sys
import threading
import time

import numpy as np
import threadpoolctl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from keras_reid.data import records  # pylint: disable=g-import-not-at-top,wrong-import-position
from keras_reid.evaluation import ranking  # pylint: disable=g-import-not-at-top,wrong-import-position
from keras_reid.evaluation import reference  # pylint: disable=g-import-not-at-top,wrong-import-position
from keras_reid.evaluation import rerank  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_QUERY, NUM_GALLERY, NUM_JUNK, NUM_DISTRACTORS, NUM_IDS, NUM_CAMS = (
    3368, 15913, 3819, 2798, 750, 6)


def market_like(dim: int, scale: float = 1.0, seed: int = 0, noise=2.7):
  """Synthetic Market-sized features; `scale` shrinks every count."""
  rng = np.random.default_rng(seed)
  nq, ng = int(NUM_QUERY * scale), int(NUM_GALLERY * scale)
  nj, nd, ni = int(NUM_JUNK * scale), int(NUM_DISTRACTORS * scale), max(
      2, int(NUM_IDS * scale))
  centres = rng.standard_normal((ni + 1, dim), dtype=np.float32)
  # Queries: random ids in random cameras (an id may repeat, even in one
  # camera). Gallery: every id once, then random ids, each in a random
  # camera; then distractors (pid 0) and junk (pid -1); shuffled.
  q_pids = rng.integers(1, ni + 1, nq)
  q_cams = rng.integers(0, NUM_CAMS, nq)
  g_pids_id = np.concatenate([np.arange(1, ni + 1),
                              rng.integers(1, ni + 1, ng - nd - ni)])
  g_cams_id = rng.integers(0, NUM_CAMS, g_pids_id.size)
  g_pids = np.concatenate([g_pids_id, np.zeros(nd, np.int64),
                           np.full(nj, records.JUNK_PID, np.int64)])
  g_cams = np.concatenate([g_cams_id, rng.integers(0, NUM_CAMS, nd + nj)])
  perm = rng.permutation(g_pids.size)
  g_pids, g_cams = g_pids[perm], g_cams[perm]

  def feats(pids):
    out = rng.standard_normal((pids.size, dim), dtype=np.float32)
    out *= noise
    id_rows = pids > 0
    out[id_rows] += centres[pids[id_rows]]
    out[~id_rows] *= 1.2
    return out

  return feats(q_pids), feats(g_pids), q_pids, g_pids, q_cams, g_cams


def rss_mb() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _serial_gemm_evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids):
  """ranking.evaluate_features with the GEMMs serialised on all BLAS threads."""
  keep = g_pids != records.JUNK_PID
  gf, g_pids, g_camids = gf[keep], g_pids[keep], g_camids[keep]
  g_sq = np.einsum("ij,ij->i", gf, gf)
  matches, removed = ranking._match_lists(q_pids, q_camids, g_pids, g_camids)  # pylint: disable=protected-access
  lock = threading.Lock()

  def run(start):
    stop = min(start + 256, qf.shape[0])
    with lock:
      dist = ranking.squared_euclidean(qf[start:stop], gf, g_sq)
    return ranking._evaluate_chunk(dist, matches[start:stop],  # pylint: disable=protected-access
                                   removed[start:stop])

  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    per_chunk = list(pool.map(run, range(0, qf.shape[0], 256)))
  return ranking._summarize([r for c in per_chunk for r in c], 50)  # pylint: disable=protected-access


def run_one(method: str, dim: int, scale: float, repeats: int) -> dict:
  data = market_like(dim, scale)
  before = rss_mb()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    if method == "fast":
      result = ranking.evaluate_features(*data)
    elif method == "fast_serial_gemm":
      result = _serial_gemm_evaluate(*data)
    elif method == "baseline":
      result = reference.evaluate_features(*data, sort_kind="quicksort",
                                           dtype=np.float32)
    elif method == "gemm":
      keep = data[3] != records.JUNK_PID
      reference.distance_matrix(data[0], data[1][keep], np.float32)
      result = {}
    elif method == "gemm_argsort":
      keep = data[3] != records.JUNK_PID
      np.argsort(reference.distance_matrix(data[0], data[1][keep],
                                           np.float32), axis=1)
      result = {}
    elif method == "rerank":
      result = rerank.evaluate_reranked(*data)
    elif method == "rerank_reference":
      result = rerank.reference_evaluate_reranked(*data)
    else:
      raise ValueError(f"unknown method {method!r}")
    times.append(time.perf_counter() - t0)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return dict(method=method, dim=dim, scale=scale, seconds=min(times),
              all_seconds=times, peak_rss_mb=peak, rss_before_mb=before,
              peak_increase_mb=peak - before,
              metrics={k: result[k] for k in ("rank1", "mAP", "mINP",
                                               "num_queries")
                       if k in result})


def _load_before(root: str):
  """keras_reid.evaluation.ranking of the package checked out in `root`."""
  path = os.path.join(root, "keras_reid", "evaluation", "ranking.py")
  if not os.path.isfile(path):
    raise SystemExit(
        f"--before_root {root!r}: no {path}; unpack the package there, e.g. "
        f"`git archive <commit> keras_reid | tar -x -C {root}`.")
  spec = importlib.util.spec_from_file_location("ranking_before", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def alternate(dim: int, scale: float, rounds: int, before_root: str,
              check_reference: bool, single_thread: bool = False) -> dict:
  """gemm / fast (/ fast_before) in turn in this process, `rounds` times.

  single_thread: BLAS on one thread and num_threads=1, so that the CPU
  seconds compare the work alone (no parallel loss, no spinning BLAS
  threads).
  """
  data = market_like(dim, scale)
  keep = data[3] != records.JUNK_PID
  threads = 1 if single_thread else None
  runs = {
      "gemm": lambda: reference.distance_matrix(data[0], data[1][keep],
                                                np.float32),
      "fast": lambda: ranking.evaluate_features(*data, num_threads=threads),
  }
  if before_root:
    before = _load_before(before_root)
    runs["fast_before"] = lambda: before.evaluate_features(
        *data, num_threads=threads)
  if single_thread:
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
      return _alternate(runs, rounds, data, check_reference)
  return _alternate(runs, rounds, data, check_reference)


def _alternate(runs: dict, rounds: int, data, check_reference: bool) -> dict:
  names = list(runs)
  times = {name: [] for name in names}
  cpu = {name: [] for name in names}
  metrics = {}
  for r in range(rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      t0, c0 = time.perf_counter(), time.process_time()
      out = runs[name]()
      times[name].append(time.perf_counter() - t0)
      cpu[name].append(time.process_time() - c0)
      if isinstance(out, dict):
        metrics[name] = {k: out[k] for k in ranking.METRIC_KEYS}
  gemm = float(np.median(times["gemm"]))
  gemm_cpu = float(np.median(cpu["gemm"]))
  # CPU seconds (all threads) say what each costs when other jobs take
  # the cores; wall seconds what it takes when they do not.
  summary = {name: dict(median_s=float(np.median(t)),
                        best_s=float(np.min(t)),
                        median_over_gemm=float(np.median(t)) / gemm,
                        median_cpu_s=float(np.median(cpu[name])),
                        median_cpu_over_gemm=float(np.median(cpu[name]))
                        / gemm_cpu,
                        all_s=[round(x, 3) for x in t])
             for name, t in times.items()}
  summary["metrics"] = metrics
  if check_reference:
    want = reference.evaluate_features(*data)
    metrics["reference_float64"] = {k: want[k] for k in ranking.METRIC_KEYS}
    summary["fast_equals_reference"] = all(
        np.isclose(metrics["fast"][k], want[k], rtol=1e-12, atol=0)
        for k in ranking.METRIC_KEYS)
  return summary


def phases(dim: int, scale: float, rounds: int, before_root: str) -> dict:
  """Where fast's CPU time goes, one thread (BLAS too), median of rounds.

  Thread CPU seconds of: the distance GEMMs (`_FeatureDistances.__call__`:
  the GEMM and its element-wise passes), the float64 distances of near
  ties (`.exact`), the rest of ranking the blocks (`_block_ranks` less
  `.exact`), and everything else (feature checks, conditioning, match
  lists, metrics).
  """
  data = market_like(dim, scale)
  modules = {"fast": ranking}
  if before_root:
    modules["fast_before"] = _load_before(before_root)
  out = {}
  with threadpoolctl.threadpool_limits(1, user_api="blas"):
    for name, module in modules.items():
      spent = {}

      def timed(key, fn, spent=spent):
        def wrapper(*args, **kwargs):
          t0 = time.thread_time()
          try:
            return fn(*args, **kwargs)
          finally:
            spent[key] = spent.get(key, 0.0) + time.thread_time() - t0
        return wrapper

      saved = (module._FeatureDistances.__call__,  # pylint: disable=protected-access
               module._FeatureDistances.exact, module._block_ranks)  # pylint: disable=protected-access
      module._FeatureDistances.__call__ = timed("gemm", saved[0])  # pylint: disable=protected-access
      module._FeatureDistances.exact = timed("exact_float64", saved[1])  # pylint: disable=protected-access
      module._block_ranks = timed("block_ranks", saved[2])  # pylint: disable=protected-access
      rows = []
      try:
        for _ in range(rounds):
          spent.clear()
          t0 = time.thread_time()
          module.evaluate_features(*data, num_threads=1)
          total = time.thread_time() - t0
          rows.append(dict(
              total=total, gemm=spent["gemm"],
              exact_float64=spent.get("exact_float64", 0.0),
              rank_blocks_less_exact=spent["block_ranks"]
              - spent.get("exact_float64", 0.0),
              other=total - spent["gemm"] - spent["block_ranks"]))
      finally:
        (module._FeatureDistances.__call__, module._FeatureDistances.exact,  # pylint: disable=protected-access
         module._block_ranks) = saved  # pylint: disable=protected-access
      out[name] = {key: round(float(np.median([r[key] for r in rows])), 3)
                   for key in rows[0]}
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--dim", type=int, default=1024)
  parser.add_argument("--scale", type=float, default=1.0)
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--methods", default="gemm,gemm_argsort,baseline,fast")
  parser.add_argument("--child", default="")
  parser.add_argument("--alternate", type=int, default=0)
  parser.add_argument("--before_root", default="")
  parser.add_argument("--check_reference", action="store_true")
  parser.add_argument("--single_thread", action="store_true")
  parser.add_argument("--phases", type=int, default=0)
  args = parser.parse_args()
  if args.phases:
    print(json.dumps(phases(args.dim, args.scale, args.phases,
                            args.before_root), indent=1))
    return
  if args.alternate:
    print(json.dumps(alternate(args.dim, args.scale, args.alternate,
                               args.before_root, args.check_reference,
                               args.single_thread), indent=1))
    return
  if args.child:
    print(json.dumps(run_one(args.child, args.dim, args.scale, args.repeats)))
    return
  rows = []
  for method in args.methods.split(","):
    out = subprocess.run(
        [sys.executable, __file__, "--child", method, "--dim", str(args.dim),
         "--scale", str(args.scale), "--repeats", str(args.repeats)],
        check=True, capture_output=True, text=True).stdout
    rows.append(json.loads(out.strip().splitlines()[-1]))
    print(json.dumps(rows[-1]), flush=True)
  by = {r["method"]: r for r in rows}
  if "fast" in by and "baseline" in by:
    print(f"speed-up fast vs baseline: "
          f"{by['baseline']['seconds'] / by['fast']['seconds']:.2f}x")
  if "rerank" in by and "rerank_reference" in by:
    print(f"speed-up rerank vs reference: "
          f"{by['rerank_reference']['seconds'] / by['rerank']['seconds']:.2f}x")


if __name__ == "__main__":
  main()
