"""Recall and speed of the gallery's approximate indexes against the exact one.

    nice -n 5 python bench/gallery_search.py --sizes=100000 --dims=256,1024 \
        --output=/tmp/gallery_bench.json

For each (gallery size N, dimension D): a clustered synthetic gallery
(`clustered_embeddings`), 1000 queries drawn from the same identities, and
one `keras_reid.gallery.index.Gallery` per index type, built and searched
through the library (so approximate results are re-ranked by exact
distance exactly as `gallery search` does). Reported per setting:

  * recall@1: fraction of queries whose top-1 is the exact index's top-1;
  * recall@10: mean fraction of the exact top-10 found in the top-10;
  * queries/s: the 1000 queries searched as one batch, k = 10, best of
    `--repeats`; speedup = against the exact index's queries/s timed right
    before (`--beside_queries` of the queries, 200 by default, one batch;
    `--exact_repeats` for the first, full exact timing), so that a machine
    whose load changes during the run still compares like with like;
  * index MiB: the serialised FAISS index (what it holds in memory),
    measured by writing it to a temporary file (no in-memory copy). Every
    type also keeps the float32 embeddings (N x D x 4 bytes) for the exact
    re-ranking and the table; IVF-PQ without them would be its codes only.
    The benchmark's galleries share one embeddings array (a view of the
    exact index's storage), so a run holds the rows twice (that one and the
    approximate index's, for HNSW) instead of four times;
  * peak RSS GiB: the process's peak resident memory so far (getrusage):
    data, the exact index, the gallery's embeddings and every index built
    up to then (an upper bound on one index type's need);
  * build s: adding the N embeddings (and training, for IVF-PQ).

Results are appended to --output (JSON lines) as each setting finishes, so a
partial run keeps what it measured; `--table=FILE.jsonl` prints them as the
markdown table of bench/gallery_results.md. TF-free (NumPy, FAISS, pyarrow).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_reid.gallery import index as gallery_index  # noqa: E402


def clustered_embeddings(n: int, d: int, num_queries: int, seed: int = 0,
                         images_per_id: int = 10, num_groups: int = 200,
                         id_spread: float = 0.5, image_spread: float = 1.0):
  """Re-ID-like synthetic embeddings: groups > identities > images.

  Group centres g ~ N(0, I/D) (broad appearance: clothing colours), one per
  `num_groups`; identity centres c = g + id_spread * N(0, I/D); images
  x = c + image_spread * N(0, I/D); all L2-normalised. With the defaults an
  identity's images have cosine similarity ~0.56 to each other, ~0.44 to
  the other identities of their group and ~0 to other groups: a query's
  nearest neighbours are its identity's and its group's images at similar
  distances (the exact top-1 is the query's identity for about
  `identity_rank1` of the queries, like a decent Re-ID model), which is
  what makes approximate search hard; uniform noise would make every
  neighbour equally far and recall meaningless.

  Returns:
    (gallery [n, d] float32, queries [num_queries, d] float32, gallery ids
    [n], query ids [num_queries]): the queries are new images of random
    gallery identities.
  """
  rng = np.random.default_rng(seed)
  num_ids = max(1, n // images_per_id)
  scale = 1.0 / np.sqrt(d)
  groups = rng.standard_normal((num_groups, d), np.float32) * scale
  ids = (groups[rng.integers(0, num_groups, num_ids)]
         + id_spread * scale * rng.standard_normal((num_ids, d), np.float32))

  def images(which):
    out = np.empty((len(which), d), np.float32)
    for s in range(0, len(which), 65536):
      w = which[s:s + 65536]
      x = ids[w] + image_spread * scale * rng.standard_normal(
          (len(w), d), np.float32)
      out[s:s + len(w)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out

  gallery_ids = np.arange(n) % num_ids
  query_ids = rng.integers(0, num_ids, num_queries)
  return images(gallery_ids), images(query_ids), gallery_ids, query_ids


def _time_search(gallery, queries, k, repeats):
  best, result = float("inf"), None
  for _ in range(repeats):
    t0 = time.perf_counter()
    result = gallery.search(queries, k)
    best = min(best, time.perf_counter() - t0)
  return len(queries) / best, result


def _index_mib(gallery) -> float:
  """The serialised FAISS index's size, written to a temporary file (at
  1M x 1024 an in-memory `faiss.serialize_index` copy is another 4 GiB)."""
  import faiss  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "index.faiss")
    faiss.write_index(gallery._index, path)  # pylint: disable=protected-access
    return os.path.getsize(path) / 2**20


def _peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB


def _recall(rows, exact_rows):
  r1 = float(np.mean(rows[:, 0] == exact_rows[:, 0]))
  r10 = float(np.mean([len(set(a) & set(b)) / len(b)
                       for a, b in zip(rows[:, :10], exact_rows[:, :10])]))
  return r1, r10


def _cpu() -> dict:
  info = {"machine": platform.machine(), "cores": os.cpu_count()}
  try:
    with open("/proc/cpuinfo") as f:
      text = f.read()
    for line in text.splitlines():
      if line.startswith("model name"):
        info["model"] = line.split(":", 1)[1].strip()
      if line.startswith("flags"):
        flags = line.split(":", 1)[1].split()
        info["simd"] = [x for x in flags if x.startswith(("avx", "sse4", "fma"))]
        break
    info["loadavg"] = os.getloadavg()
  except OSError:
    pass
  return info


def markdown_table(path: str) -> str:
  """The rows of a results file as a markdown table."""
  lines = ["| N | D | index | build params | search params | recall@1 | "
           "recall@10 | queries/s | exact queries/s beside | speedup | "
           "speedup vs fastest exact | index MiB | peak RSS GiB | build s |",
           "|" + "---|" * 14]
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  # The fastest exact speed measured at each size: the least flattering
  # reference when the machine's load changed during the run.
  fastest = {}
  for r in rows:
    if r["setting"] != "machine":
      exact = r.get("exact_qps", r["qps"] / r["speedup"])
      key = (r["n"], r["d"])
      fastest[key] = max(fastest.get(key, 0.0), exact)
  for r in rows:
    if r["setting"] == "machine":
      continue
    exact = r.get("exact_qps", r["qps"] / r["speedup"])
    rss = f"{r['peak_rss_gib']:.1f}" if "peak_rss_gib" in r else ""
    params = ", ".join(f"{k}={v}" for k, v in (r.get("params") or {}).items())
    build = ", ".join(f"{k}={v}" for k, v in
                      (r.get("build_params") or {}).items())
    lines.append(
        f"| {r['n']:,} | {r['d']} | {r['setting']} | {build} | {params} | "
        f"{r['recall1']:.3f} | {r['recall10']:.3f} | {r['qps']:.0f} | "
        f"{exact:.1f} | {r['speedup']:.1f}x | "
        f"{r['qps'] / fastest[(r['n'], r['d'])]:.1f}x | {r['index_mib']:.1f} | "
        f"{rss} | {r['build_s']:.0f} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="100000")
  parser.add_argument("--dims", default="256,1024")
  parser.add_argument("--queries", type=int, default=1000)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--exact_repeats", type=int, default=None,
                      help="repeats of the exact index's full timing "
                      "(default --repeats; 1 keeps 1M x 1024 to minutes)")
  parser.add_argument("--beside_queries", type=int, default=200,
                      help="queries of the exact timing beside each setting")
  parser.add_argument("--nprobe", default="8,16,32,64")
  parser.add_argument("--refine", default="1,10")
  parser.add_argument("--ef_search", default="32,64,128,256")
  parser.add_argument("--hnsw_m", type=int, default=32)
  parser.add_argument("--ef_construction", type=int, default=200)
  parser.add_argument("--types", default="ivfpq,hnsw")
  parser.add_argument("--nlist", type=int, default=None,
                      help="ivfpq cells (default: the library's ~4 sqrt(N))")
  parser.add_argument("--output", default="gallery_bench.jsonl")
  parser.add_argument("--table", default=None,
                      help="print this results file as markdown and exit")
  args = parser.parse_args()
  if args.table:
    print(markdown_table(args.table))
    return
  k = 10

  def emit(row):
    row = dict(row, time=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
               loadavg=os.getloadavg(), peak_rss_gib=_peak_rss_gib())
    print(json.dumps(row), flush=True)
    with open(args.output, "a") as f:
      f.write(json.dumps(row) + "\n")

  import faiss  # pylint: disable=g-import-not-at-top
  emit({"setting": "machine", "cpu": _cpu(), "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "command": " ".join(sys.argv)})
  for n in [int(v) for v in args.sizes.split(",")]:
    for d in [int(v) for v in args.dims.split(",")]:
      t0 = time.perf_counter()
      data, queries, gallery_ids, query_ids = clustered_embeddings(
          n, d, args.queries)
      gen_s = time.perf_counter() - t0
      paths = np.arange(n).astype(str)
      base = dict(n=n, d=d)

      t0 = time.perf_counter()
      exact = gallery_index.Gallery.create("bench", d)
      exact.add(data, paths)
      build_s = time.perf_counter() - t0
      # The gallery's embeddings and its IndexFlatIP hold the same float32
      # rows: keep one copy (a view of the index's storage), not three.
      flat = faiss.downcast_index(exact._index.index)  # pylint: disable=protected-access
      stored = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)
      np.testing.assert_array_equal(stored[[0, -1]], data[[0, -1]])
      del data
      exact.embeddings = data = stored
      exact_qps, exact_result = _time_search(
          exact, queries, k, args.exact_repeats or args.repeats)
      identity_rank1 = float(np.mean(
          gallery_ids[exact_result.rows[:, 0]] == query_ids))
      emit(dict(base, setting="flat", recall1=1.0, recall10=1.0,
                identity_rank1=identity_rank1,
                qps=exact_qps, speedup=1.0, index_mib=_index_mib(exact),
                build_s=build_s, generate_s=gen_s))
      exact_rows = exact_result.rows

      for index_type in args.types.split(","):
        if index_type == "ivfpq":
          options = gallery_index.IndexOptions(index_type="ivfpq",
                                               nlist=args.nlist)
        else:
          options = gallery_index.IndexOptions(
              index_type="hnsw", hnsw_m=args.hnsw_m,
              ef_construction=args.ef_construction)
        t0 = time.perf_counter()
        g = gallery_index.Gallery.create("bench", d, options)
        g.add(data, paths)
        build_s = time.perf_counter() - t0
        g.embeddings = data  # the same values: share the exact gallery's copy
        mib = _index_mib(g)
        if index_type == "ivfpq":
          sweep = [dict(nprobe=p, refine=r)
                   for r in map(int, args.refine.split(","))
                   for p in map(int, args.nprobe.split(","))]
        else:
          sweep = [dict(ef_search=e) for e in map(int, args.ef_search.split(","))]
        for params in sweep:
          g.set_search_options(**params)
          exact_qps, _ = _time_search(exact, queries[:args.beside_queries], k,
                                      1)
          qps, result = _time_search(g, queries, k, args.repeats)
          r1, r10 = _recall(result.rows, exact_rows)
          emit(dict(base, setting=index_type, params=params,
                    exact_beside_queries=args.beside_queries,
                    build_params={key: getattr(g.options, key) for key in (
                        ("nlist", "pq_m", "pq_bits") if index_type == "ivfpq"
                        else ("hnsw_m", "ef_construction"))},
                    recall1=r1, recall10=r10, qps=qps, exact_qps=exact_qps,
                    speedup=qps / exact_qps, index_mib=mib, build_s=build_s))
        del g
      del exact


if __name__ == "__main__":
  main()
