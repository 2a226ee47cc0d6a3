"""Benchmark: SIR evaluation at MSMT17 size, its time and its memory.

MSMT17's test protocol: 11,659 queries x 82,161 gallery images of 3,060
identities in 15 cameras, no junk and no distractors. Here synthetic and
seeded: every identity once in the gallery, then random identities in
random cameras; features = identity centre + noise, the noise growing with
the dimension so that Rank-1 stays near MSMT17's for a decent model.

Each measurement runs in its own subprocess. After the features are made,
the process's peak RSS is reset (/proc/self/clear_refs, Linux), so "peak
above features" is what the evaluation itself adds: its distance blocks,
its copies, BLAS buffers, everything.

Methods:
  fast       keras_reid.evaluation.ranking.evaluate_features
  gemm       the floor: the same squared distances, block by block
             (`ranking.squared_euclidean`, 256 queries, every BLAS thread),
             nothing ranked and nothing kept
  reference  keras_reid.evaluation.reference.evaluate_features, float64
             exact differences, full matrix and argsort: the oracle; only
             on a subset of queries (--queries), e.g. 300

Usage:
  python bench/eval_msmt.py --dim 512 [--queries N] [--methods gemm,fast]
      [--num_threads T] [--memory_budget_mb M] [--check_reference N]

--check_reference N scores the first N queries (against the whole gallery)
with `fast` and with `reference` and checks that every metric agrees to
rtol 1e-12 (the order of the float sums differs) and num_queries exactly.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from keras_reid.evaluation import ranking  # pylint: disable=g-import-not-at-top,wrong-import-position
from keras_reid.evaluation import reference  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_QUERY, NUM_GALLERY, NUM_IDS, NUM_CAMS = 11659, 82161, 3060, 15
_BLOCK_ROWS = 4096


def msmt_like(dim: int, seed: int = 0, num_queries: int = NUM_QUERY,
              noise: float | None = None):
  """Synthetic MSMT17-sized problem: (qf, gf, q_pids, g_pids, q_cams, g_cams).

  The features are written block by block into their final arrays, so
  making them needs no temporary as large as them. `num_queries` keeps the
  first queries of the full problem (the same for every value).
  """
  if noise is None:
    # Separation grows as sqrt(dim): Rank-1 ~0.96, mAP ~0.5 at 512-d and
    # 2,048-d (MSMT17-like mAP; a harder tail, mINP ~0.03).
    noise = 2.1 * (dim / 512) ** 0.25
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((NUM_IDS + 1, dim), dtype=np.float32)
  q_pids = rng.integers(1, NUM_IDS + 1, NUM_QUERY)
  q_cams = rng.integers(0, NUM_CAMS, NUM_QUERY)
  g_pids = np.concatenate([np.arange(1, NUM_IDS + 1),
                           rng.integers(1, NUM_IDS + 1,
                                        NUM_GALLERY - NUM_IDS)])
  g_pids = g_pids[rng.permutation(NUM_GALLERY)]
  g_cams = rng.integers(0, NUM_CAMS, NUM_GALLERY)

  def feats(pids):
    out = np.empty((pids.size, dim), np.float32)
    for s in range(0, pids.size, _BLOCK_ROWS):
      block = out[s:s + _BLOCK_ROWS]
      rng.standard_normal(out=block, dtype=np.float32)
      block *= noise
      block += centres[pids[s:s + _BLOCK_ROWS]]
    return out

  qf, gf = feats(q_pids), feats(g_pids)
  n = num_queries
  return (qf[:n].copy(), gf, q_pids[:n], g_pids, q_cams[:n],
          g_cams)


def _status_kb(key: str) -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(key + ":"):
        return int(line.split()[1])
  raise KeyError(key)


def _reset_peak_rss() -> None:
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")


def run_one(method: str, dim: int, num_queries: int, num_threads,
            memory_budget_mb, repeats: int) -> dict:
  data = msmt_like(dim, num_queries=num_queries)
  features_mb = (data[0].nbytes + data[1].nbytes) / 2**20
  kwargs = {}
  if num_threads:
    kwargs["num_threads"] = num_threads
  if memory_budget_mb is not None:
    kwargs["memory_budget_mb"] = memory_budget_mb
  gc.collect()
  before = _status_kb("VmRSS") / 1024
  _reset_peak_rss()
  times, result = [], {}
  for _ in range(repeats):
    t0 = time.perf_counter()
    if method == "fast":
      result = ranking.evaluate_features(*data, **kwargs)
    elif method == "gemm":
      qf, gf = data[0], data[1]
      g_sq = np.einsum("ij,ij->i", gf, gf)
      for s in range(0, qf.shape[0], 256):
        ranking.squared_euclidean(qf[s:s + 256], gf, g_sq)
    elif method == "reference":
      result = reference.evaluate_features(*data, dtype=np.float64)
    else:
      raise ValueError(f"unknown method {method!r}")
    times.append(time.perf_counter() - t0)
  peak = _status_kb("VmHWM") / 1024
  return dict(method=method, dim=dim, queries=num_queries,
              gallery=NUM_GALLERY, kwargs=kwargs, seconds=min(times),
              all_seconds=[round(t, 3) for t in times],
              features_mb=round(features_mb, 1), rss_before_mb=round(before, 1),
              peak_rss_mb=round(peak, 1),
              peak_above_features_mb=round(peak - before, 1),
              metrics={k: result[k] for k in (*ranking.METRIC_KEYS, "cmc",
                                               "num_queries")
                       if k in result})


def _child(args, method: str, num_queries: int) -> dict:
  cmd = [sys.executable, __file__, "--child", method, "--dim", str(args.dim),
         "--queries", str(num_queries), "--repeats", str(args.repeats)]
  if args.num_threads:
    cmd += ["--num_threads", str(args.num_threads)]
  if args.memory_budget_mb is not None:
    cmd += ["--memory_budget_mb", str(args.memory_budget_mb)]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def _short(row: dict) -> str:
  row = dict(row, metrics={k: v for k, v in row["metrics"].items()
                           if k != "cmc"})
  return json.dumps(row)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--dim", type=int, default=512)
  parser.add_argument("--queries", type=int, default=NUM_QUERY,
                      help="first N queries (the gallery stays whole)")
  parser.add_argument("--methods", default="gemm,fast")
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--num_threads", type=int, default=0,
                      help="fast: num_threads (0: its default)")
  parser.add_argument("--memory_budget_mb", type=float, default=None,
                      help="fast: memory_budget_mb (default: its default)")
  parser.add_argument("--check_reference", type=int, default=0,
                      help="N > 0: compare fast with the float64 reference "
                      "on the first N queries")
  parser.add_argument("--child", default="")
  args = parser.parse_args()
  if args.child:
    print(json.dumps(run_one(args.child, args.dim, args.queries,
                             args.num_threads, args.memory_budget_mb,
                             args.repeats)))
    return
  rows = {}
  for method in filter(None, args.methods.split(",")):
    rows[method] = _child(args, method, args.queries)
    print(_short(rows[method]), flush=True)
  if "gemm" in rows and "fast" in rows:
    print(f"fast / gemm: {rows['fast']['seconds'] / rows['gemm']['seconds']:.2f}")
  if args.check_reference:
    n = args.check_reference
    fast, ref = _child(args, "fast", n), _child(args, "reference", n)
    print(_short(ref), flush=True)
    for key, want in ref["metrics"].items():
      np.testing.assert_allclose(fast["metrics"][key], want, rtol=1e-12,
                                 err_msg=key)
    assert fast["metrics"]["num_queries"] == ref["metrics"]["num_queries"]
    print(f"fast == float64 reference on the first {n} queries "
          f"({ref['metrics']['num_queries']} scored): every metric and the "
          "CMC curve to rtol 1e-12")


if __name__ == "__main__":
  main()
