"""Benchmark: one GRDL iteration (D-step + Z-step) at co-training scale.

The target: Mt = 20,000 images, D = 1,024-d features, 512 atoms, a
cross-camera k = 10 graph, one iteration under 60 s on 2 cores. Features
are random but clustered like a Re-ID target: `--ids` identities, each with
the same number of images in camera A and camera B, feature = identity
centre + noise + a per-camera shift (float32, as a model would give them).

Times, separately: the graph (kNN + Laplacian), the initial codes (least
squares, then the Z-step from there), then `--iterations` iterations of
keras_reid.unsupervised.grdl.grdl (its own per-iteration wall time), and
one Z-step and one D-step on their own with their CG statistics.

Usage:
  python bench/grdl.py [--n 20000] [--dim 1024] [--atoms 512] [--k 10]
      [--lam 0.01] [--iterations 2] [--blas_threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
from keras_reid.unsupervised import graph
from keras_reid.unsupervised import grdl
from keras_reid.unsupervised import pseudo_labels


def clustered(n: int, dim: int, ids: int, seed: int = 0):
  """[n, dim] float32 features, [n] pids, [n] camids (0 / 1, alternating)."""
  rng = np.random.default_rng(seed)
  pids = np.arange(n) % ids
  camids = (np.arange(n) // ids) % 2
  centres = rng.standard_normal((ids, dim), dtype=np.float32)
  shift = 0.5 * rng.standard_normal((2, dim), dtype=np.float32)
  y = centres[pids] + shift[camids]
  y += 0.8 * rng.standard_normal((n, dim), dtype=np.float32)
  return y, pids, camids


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=20000)
  parser.add_argument("--dim", type=int, default=1024)
  parser.add_argument("--atoms", type=int, default=512)
  parser.add_argument("--k", type=int, default=10)
  parser.add_argument("--lam", type=float, default=0.01)
  parser.add_argument("--ids", type=int, default=2000)
  parser.add_argument("--iterations", type=int, default=2)
  parser.add_argument("--blas_threads", type=int, default=1,
                      help="the solver's blas_threads (0: library default)")
  args = parser.parse_args()

  threads = args.blas_threads or None
  y, pids, camids = clustered(args.n, args.dim, args.ids)
  out = {"n": args.n, "dim": args.dim, "atoms": args.atoms, "k": args.k,
         "lam": args.lam, "ids": args.ids, "blas_threads": threads,
         "cpus": os.cpu_count(),
         "load_before": os.getloadavg()[0]}

  start = time.perf_counter()
  is_a = graph.camera_a_mask(camids)
  w = graph.cross_camera_knn_graph(y, is_a, args.k)
  lap = graph.laplacian(w)
  out["graph_s"] = time.perf_counter() - start
  out["graph_nnz"] = int(w.nnz)

  # The components on their own, with CG statistics.
  d = grdl.initial_dictionary(y, args.atoms, seed=0)
  start = time.perf_counter()
  init_stats = {}
  z = grdl.solve_codes(d, y, lap, args.lam, stats=init_stats,
                       blas_threads=threads)
  out["initial_codes_s"] = time.perf_counter() - start
  out["initial_codes_cg"] = init_stats
  start = time.perf_counter()
  d = grdl.update_dictionary(y, z, d, blas_threads=threads)
  out["d_step_s"] = time.perf_counter() - start
  start = time.perf_counter()
  z_stats = {}
  z = grdl.solve_codes(d, y, lap, args.lam, init_codes=z, stats=z_stats,
                       blas_threads=threads)
  out["z_step_s"] = time.perf_counter() - start
  out["z_step_cg"] = z_stats

  # The solver as training calls it (includes its own initial codes).
  start = time.perf_counter()
  res = grdl.grdl(y, lap, args.atoms, args.lam, max_iter=args.iterations,
                  tol=0, blas_threads=threads)
  out["grdl_total_s"] = time.perf_counter() - start
  out["grdl_iteration_s"] = res.seconds
  out["grdl_objective"] = res.objective
  acc_y = pseudo_labels.label_accuracy(
      pseudo_labels.hard_pseudo_labels(y, is_a), pids, is_a)["accuracy"]
  acc_z = pseudo_labels.label_accuracy(
      pseudo_labels.hard_pseudo_labels(res.codes, is_a), pids,
      is_a)["accuracy"]
  out["label_accuracy_y"], out["label_accuracy_z"] = acc_y, acc_z
  out["load_after"] = os.getloadavg()[0]
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
