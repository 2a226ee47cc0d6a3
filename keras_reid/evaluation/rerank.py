"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), sparse and chunked.

Same maths as the common implementation (`reference_rerank` below, the
version PyTorch Re-ID toolkits ship), but it never forms an N x N matrix
(N = queries + gallery): the (k1+1)-nearest neighbours of every item come
from chunked GEMMs, the encodings V are a sparse matrix (about k1 non-zeros
per row), query expansion is a sparse product, and the Jaccard distances of
a chunk of queries are computed when the evaluator asks for that chunk.

Distances are squared Euclidean, each row divided by its maximum over all N
items, as in the original code. The neighbour search computes only the
upper half of the symmetric N x N distance matrix, tile by tile.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import sparse

from keras_reid.data import records
from keras_reid.evaluation import ranking
from keras_reid.evaluation import reference


def _merge_top_k(best_d: np.ndarray, best_i: np.ndarray, d: np.ndarray,
                 col_offset: int) -> None:
  """Merges the k smallest of each row of a tile into the running top-k.

  Args:
    best_d, best_i: [r, k] running distances / indices (updated in place).
    d: [r, c] distances of the same rows to items col_offset..+c-1.
    col_offset: index of the tile's first column.
  """
  k = best_d.shape[1]
  kk = min(k, d.shape[1])
  if kk < d.shape[1]:
    part = np.argpartition(d, kk - 1, axis=1)[:, :kk]
  else:
    part = np.broadcast_to(np.arange(d.shape[1]), d.shape)
  cand_d = np.concatenate([best_d, np.take_along_axis(d, part, 1)], 1)
  cand_i = np.concatenate([best_i, part + col_offset], 1)
  order = np.lexsort((cand_i, cand_d), axis=1)[:, :k]
  best_d[:] = np.take_along_axis(cand_d, order, 1)
  best_i[:] = np.take_along_axis(cand_i, order, 1)


def _neighbours(feats: np.ndarray, k: int, chunk_size: int):
  """(k nearest indices [N, k] ordered by (dist, index), row maxima [N]).

  The distance matrix is symmetric, so only the tiles on and above the
  diagonal are computed (half the GEMM work); each tile updates the running
  top-k and row maxima of its rows and, transposed, of its columns. Memory:
  one chunk_size x chunk_size tile at a time.
  """
  sq = np.einsum("ij,ij->i", feats, feats)
  n = feats.shape[0]
  best_d = np.full((n, k), np.inf, np.float32)
  best_i = np.full((n, k), n, np.int64)  # n: placeholder, sorts last
  row_max = np.zeros(n, np.float32)
  for i0 in range(0, n, chunk_size):
    i1 = min(i0 + chunk_size, n)
    for j0 in range(i0, n, chunk_size):
      j1 = min(j0 + chunk_size, n)
      d = ranking.squared_euclidean(feats[i0:i1], feats[j0:j1], sq[j0:j1])
      _merge_top_k(best_d[i0:i1], best_i[i0:i1], d, j0)
      np.maximum(row_max[i0:i1], d.max(1), out=row_max[i0:i1])
      if j0 != i0:
        dt = np.ascontiguousarray(d.T)
        _merge_top_k(best_d[j0:j1], best_i[j0:j1], dt, i0)
        np.maximum(row_max[j0:j1], d.max(0), out=row_max[j0:j1])
  return best_i, row_max, sq


def _reciprocal_mask(nn: np.ndarray, k: int) -> np.ndarray:
  """[N, k+1] bool: is nn[i, j] a k-reciprocal neighbour of i."""
  fwd = nn[:, :k + 1]
  back = fwd[fwd]  # [N, k+1, k+1]: the neighbours of i's neighbours
  return (back == np.arange(nn.shape[0])[:, None, None]).any(2)


def encodings(feats: np.ndarray, *, k1: int = 20, k2: int = 6,
              chunk_size: int = 2048):
  """Sparse k-reciprocal encodings V (after query expansion).

  Args:
    feats: [N, D] float32, queries then gallery.
    k1, k2: the paper's k1 (reciprocal neighbours) and k2 (query expansion).
    chunk_size: side of the square distance tiles (memory ~ 3 x
      chunk_size^2 x 4 bytes plus the argpartition indices, 8 bytes each).

  Returns:
    (V as a CSR [N, N] float32 matrix with rows summing to 1, row maxima of
    the squared distances [N], squared norms [N]).
  """
  n = feats.shape[0]
  half = int(np.around(k1 / 2.0))
  kk = min(max(k1 + 1, k2), n)
  nn, row_max, sq = _neighbours(feats, kk, chunk_size)
  fwd, fwd_mask = nn[:, :k1 + 1], _reciprocal_mask(nn, k1)
  hfwd, hmask = nn[:, :half + 1], _reciprocal_mask(nn, half)
  indptr, indices, data = [0], [], []
  for i in range(n):
    recip = fwd[i][fwd_mask[i]]
    cand_sets = hfwd[recip]  # [m, half+1], valid where hmask[recip]
    cand_valid = hmask[recip]
    overlap = (np.isin(cand_sets, recip) & cand_valid).sum(1)
    grow = overlap > 2.0 / 3 * cand_valid.sum(1)
    expansion = np.unique(np.concatenate(
        [recip, cand_sets[cand_valid & grow[:, None]]]))
    d = (sq[i] + sq[expansion] - 2.0 * (feats[expansion] @ feats[i]))
    d = np.maximum(d, 0) / row_max[i]
    weight = np.exp(-d.astype(np.float32))
    indices.append(expansion)
    data.append(weight / weight.sum())
    indptr.append(indptr[-1] + expansion.size)
  v = sparse.csr_matrix(
      (np.concatenate(data).astype(np.float32), np.concatenate(indices),
       np.array(indptr)), shape=(n, n))
  if k2 != 1:
    # Query expansion: each row becomes the mean of its k2 neighbours' rows.
    rows = np.repeat(np.arange(n), k2)
    qe = sparse.csr_matrix(
        (np.full(n * k2, 1.0 / k2, np.float32), (rows, nn[:, :k2].ravel())),
        shape=(n, n))
    v = (qe @ v).tocsr()
  return v, row_max, sq


def reranked_distance_fn(query_features, gallery_features, *, k1: int = 20,
                         k2: int = 6, lambda_value: float = 0.3,
                         chunk_size: int = 2048) -> ranking.DistanceChunkFn:
  """A chunked [Q, G] re-ranked distance function (see module doc)."""
  # Distances are divided by row maxima: the common shift and power-of-two
  # scale of `condition_features` change nothing but their accuracy.
  qf, gf, _, _ = ranking.condition_features(query_features, gallery_features)
  feats = np.concatenate([qf, gf], 0)
  nq = qf.shape[0]
  v, row_max, sq = encodings(feats, k1=k1, k2=k2, chunk_size=chunk_size)
  v_query = v[:nq]
  v_gal = v[nq:].tocsc()  # columns = encoding dims, rows = gallery items
  g_sq = sq[nq:]
  ng = gf.shape[0]

  def dist_fn(start: int, stop: int) -> np.ndarray:
    original = ranking.squared_euclidean(qf[start:stop], gf, g_sq)
    original /= row_max[start:stop, None]
    out = _jaccard_rows(v_query, v_gal, start, stop, ng)
    out *= 1.0 - lambda_value
    out += lambda_value * original
    return out

  return dist_fn


def _jaccard_rows(v_query, v_gal, start: int, stop: int,
                  ng: int) -> np.ndarray:
  """[stop - start, ng] float32 Jaccard distances 1 - M / (2 - M), M[i, j] =
  sum_d min(V_q[i, d], V_g[j, d]), of rows start..stop-1 of `v_query` (CSR)
  against every row of `v_gal` (CSC, columns = encoding dims)."""
  out = np.empty((stop - start, ng), np.float32)
  for r, q in enumerate(range(start, stop)):
    lo, hi = v_query.indptr[q], v_query.indptr[q + 1]
    dims, vals = v_query.indices[lo:hi], v_query.data[lo:hi]
    starts, ends = v_gal.indptr[dims], v_gal.indptr[dims + 1]
    lens = ends - starts
    # Positions of every stored gallery value in the query's dimensions.
    pos = np.repeat(ends - lens.cumsum(), lens) + np.arange(lens.sum())
    mins = np.minimum(v_gal.data[pos], np.repeat(vals, lens))
    temp_min = np.bincount(v_gal.indices[pos], weights=mins, minlength=ng)
    out[r] = 1.0 - temp_min / (2.0 - temp_min)
  return out


def jaccard_distance(features, *, k1: int = 20, k2: int = 6,
                     chunk_size: int = 2048) -> np.ndarray:
  """All-pairs k-reciprocal Jaccard distance of one set (no original term).

  The Jaccard part of re-ranking (lambda_value = 0) between every pair of
  `features`, as clustering-based unsupervised Re-ID clusters on (DBSCAN
  with a precomputed metric): reranked_distance_fn(f[:q], f[q:],
  lambda_value=0) is this matrix's block [:q, q:].

  Args:
    features: [N, D] float (N >= 2).
    k1, k2: the k-reciprocal neighbours and query expansion (as re-ranking).
    chunk_size: see `encodings`.

  Returns:
    [N, N] float32, symmetric, in [0, 1], 0 on the diagonal; 1 where two
    items share no k-reciprocal neighbour. Memory: N^2 x 4 bytes.
  """
  features = np.asarray(features)
  feats, _, _, _ = ranking.condition_features(features, features[:1])
  n = feats.shape[0]
  v, _, _ = encodings(feats, k1=k1, k2=k2, chunk_size=chunk_size)
  v_cols = v.tocsc()
  out = np.empty((n, n), np.float32)
  for start in range(0, n, chunk_size):
    stop = min(start + chunk_size, n)
    out[start:stop] = _jaccard_rows(v, v_cols, start, stop, n)
  # M is symmetric up to rounding; the mean makes the matrix exactly so.
  out = 0.5 * (out + out.T)
  np.fill_diagonal(out, 0.0)
  return np.clip(out, 0.0, 1.0)


def evaluate_reranked(query_features, gallery_features, query_pids,
                      gallery_pids, query_camids, gallery_camids, *,
                      k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                      max_rank: int = 50, chunk_size: int = 256,
                      num_threads: Optional[int] = None) -> dict:
  """`ranking.evaluate_features` on k-reciprocal re-ranked distances.

  Junk gallery images (pid -1) are dropped first, so they neither rank nor
  act as neighbours.
  """
  # Ids are checked before the (long) neighbour search, not after it.
  num_q = np.asarray(query_features).shape[0]
  query_pids = ranking.check_ids("query_pids", query_pids, num_q)
  query_camids = ranking.check_ids("query_camids", query_camids, num_q)
  num_g = np.asarray(gallery_features).shape[0]
  gallery_pids = ranking.check_ids("gallery_pids", gallery_pids, num_g)
  gallery_camids = ranking.check_ids("gallery_camids", gallery_camids, num_g)
  keep = gallery_pids != records.JUNK_PID
  gf = np.asarray(gallery_features)[keep]
  dist_fn = reranked_distance_fn(query_features, gf, k1=k1, k2=k2,
                                 lambda_value=lambda_value)
  return ranking.evaluate_distance_fn(
      dist_fn, num_q, query_pids, gallery_pids[keep], query_camids,
      gallery_camids[keep], max_rank=max_rank, chunk_size=chunk_size,
      num_threads=num_threads)


def reference_rerank(query_features, gallery_features, k1: int = 20,
                     k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
  """The common dense implementation (oracle / bench baseline), [Q, G]."""
  qf = np.asarray(query_features, np.float32)
  gf = np.asarray(gallery_features, np.float32)
  feat = np.concatenate([qf, gf], 0)
  query_num, all_num = qf.shape[0], feat.shape[0]
  sq = np.einsum("ij,ij->i", feat, feat)
  original_dist = sq[:, None] + sq[None, :] - 2 * feat @ feat.T
  original_dist = np.maximum(original_dist, 0)
  original_dist = np.transpose(original_dist / np.max(original_dist, axis=0))
  v = np.zeros_like(original_dist).astype(np.float32)
  initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)
  for i in range(all_num):
    forward_k_neigh_index = initial_rank[i, :k1 + 1]
    backward_k_neigh_index = initial_rank[forward_k_neigh_index, :k1 + 1]
    fi = np.where(backward_k_neigh_index == i)[0]
    k_reciprocal_index = forward_k_neigh_index[fi]
    k_reciprocal_expansion_index = k_reciprocal_index
    for j in range(len(k_reciprocal_index)):
      candidate = k_reciprocal_index[j]
      h = int(np.around(k1 / 2.)) + 1
      cand_fwd = initial_rank[candidate, :h]
      cand_back = initial_rank[cand_fwd, :h]
      fi_candidate = np.where(cand_back == candidate)[0]
      cand_recip = cand_fwd[fi_candidate]
      if len(np.intersect1d(cand_recip, k_reciprocal_index)) > 2. / 3 * len(
          cand_recip):
        k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index,
                                                 cand_recip)
    k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
    weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
    v[i, k_reciprocal_expansion_index] = 1. * weight / np.sum(weight)
  original_dist = original_dist[:query_num,]
  if k2 != 1:
    v_qe = np.zeros_like(v, dtype=np.float32)
    for i in range(all_num):
      v_qe[i, :] = np.mean(v[initial_rank[i, :k2], :], axis=0)
    v = v_qe
    del v_qe
  del initial_rank
  inv_index = [np.where(v[:, i] != 0)[0] for i in range(all_num)]
  jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
  for i in range(query_num):
    temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
    ind_non_zero = np.where(v[i, :] != 0)[0]
    ind_images = [inv_index[ind] for ind in ind_non_zero]
    for j in range(len(ind_non_zero)):
      temp_min[0, ind_images[j]] = temp_min[0, ind_images[j]] + np.minimum(
          v[i, ind_non_zero[j]], v[ind_images[j], ind_non_zero[j]])
    jaccard_dist[i] = 1 - temp_min / (2. - temp_min)
  final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
  return final_dist[:query_num, query_num:]


def reference_evaluate_reranked(query_features, gallery_features, query_pids,
                                gallery_pids, query_camids, gallery_camids,
                                max_rank: int = 50, **kwargs) -> dict:
  """Baseline: dense re-ranking, then the standard evaluator."""
  gallery_pids = np.asarray(gallery_pids)
  keep = gallery_pids != records.JUNK_PID
  dist = reference_rerank(query_features,
                          np.asarray(gallery_features)[keep], **kwargs)
  return reference.eval_market1501(dist, query_pids, gallery_pids[keep],
                                   query_camids,
                                   np.asarray(gallery_camids)[keep], max_rank,
                                   sort_kind="quicksort")
