"""SIR ranking metrics: CMC, mAP and mINP under the Market-1501 rules.

The evaluation sorts no gallery row and never holds a full query x gallery
matrix: queries are processed in blocks, each block's squared Euclidean
distances come from one float32 GEMM, and for every query the gallery
values closer than each true match are counted (`_block_ranks`). From the
exact rank of every true match follow CMC (the rank of the first match), AP
and INP (the rank of the last match).

Memory: the blocks in flight (one per thread) hold at most
`memory_budget_mb` of distances together, whatever the number of cores
(MSMT17's 82,161-image gallery: 329 KB a query, so 256-query blocks on 64
threads would need 5.4 GB; `block_size`). Besides them the evaluation
holds the squared norms, per query its match columns, and where the
features need it a conditioned copy of them (`condition_features`).

Exactly the float64 reference's ranking: a float32 distance is within a
known bound of the exact one (`_FeatureDistances.error_bounds`, about
D x 2**-23 |q||g|), so an item and a true match whose float32 distances
differ by more than their two bounds are ordered by them, and the few
closer pairs (a true match and another item, or two true matches) by their
float64 distances, computed as `reference.distance_matrix` computes them.
The scores of features thus equal the reference's (to the last bit of
every rank), whatever rounding the GEMM of a block of any shape did
(`_block_ranks`).

Features of any model and any magnitude: the GEMM form a^2 + b^2 - 2ab
overflows float32 for features ~1e20 and cancels when the features share an
offset much larger than their spread (an untrained network's, or every
feature + 100), so `condition_features` first shifts them by a common
centre and scales them by a power of two where needed; neither changes the
ranking. Non-finite features and ids that are not integers in int64 range
are refused at the entry (`check_features`, `check_ids`), naming the array
and the row or value.

Rules (Market-1501, as in the official devkit and torchreid):
  * gallery images with pid -1 (junk) are ignored;
  * gallery images with the query's pid AND the query's camera are ignored,
    but only when the camera is known (camid >= 0): with camid -1 nothing is
    dropped, so datasets without camera labels keep all their true matches;
  * distractors (pid 0) stay in the gallery and count as wrong;
  * a query with no valid true match is skipped and counted.

Ties: gallery items are ordered by (distance, gallery index), i.e. exactly
like a stable argsort of the distance row with the junk columns removed (for
features: of the float64 distance row). This is deterministic; with tied
distances the result can depend on gallery order (like any sort-based
evaluator), without ties it cannot.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Callable, Optional

import numpy as np
import threadpoolctl

from keras_reid.data import records

# The scalar metrics every evaluation result holds (fractions), in report order.
METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


class NoValidQueryError(ValueError):
  """Every query was skipped: none has a valid true match in the gallery.

  Raised instead of reporting Rank-1 = mAP = 0, which would be averaged into
  split means as if it were a score.
  """


def _check_some_query_usable(matches, query_pids, gallery_pids) -> None:
  """Raises NoValidQueryError, naming why, when no query has a true match."""
  if any(m.size for m in matches):
    return
  num = len(matches)
  junk = int(np.count_nonzero(query_pids == records.JUNK_PID))
  absent = int(np.count_nonzero(
      (query_pids != records.JUNK_PID) & ~np.isin(query_pids, gallery_pids)))
  same_camera = num - junk - absent
  raise NoValidQueryError(
      f"all {num} queries skipped: no query has a valid gallery match "
      f"({junk} have the junk pid -1, {absent} have a pid absent from the "
      f"gallery of {len(gallery_pids)} images, {same_camera} are matched "
      "only by gallery images of their own camera, which the protocol "
      "ignores). There is no score to report: check the query / gallery "
      "split, their pids and camids.")


def check_queries_usable(query_pids, query_camids, gallery_pids,
                         gallery_camids) -> None:
  """Raises NoValidQueryError, naming why, if no query can be scored.

  Needs the ids only (no features), so a run checks its evaluation split
  before training rather than after it.

  Args:
    query_pids, query_camids: [Q] ints.
    gallery_pids, gallery_camids: [G] ints.
  """
  qp = check_ids("query_pids", query_pids, len(query_pids))
  qc = check_ids("query_camids", query_camids, len(qp))
  gp = check_ids("gallery_pids", gallery_pids, len(gallery_pids))
  gc = check_ids("gallery_camids", gallery_camids, len(gp))
  matches, _ = _match_lists(qp, qc, gp, gc)
  _check_some_query_usable(matches, qp, gp)


# A function giving the [stop - start, G] float32 distances of queries
# start..stop-1 to the (junk-free) gallery; smaller is closer.
DistanceChunkFn = Callable[[int, int], np.ndarray]

# Default bound on the distances held at once, all threads together.
DEFAULT_MEMORY_BUDGET_MB = 512.0
_DISTANCE_BYTES = np.dtype(np.float32).itemsize
# What ranking one query takes besides its block, in distance rows (at
# most: the candidates' columns, int64, their values and the number of
# windows each reaches, int64).
_SCRATCH_ROWS = 5


def block_size(num_gallery: int, num_threads: int, *, chunk_size: int = 256,
               memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB) -> int:
  """Queries per distance block: `chunk_size`, fewer where memory requires.

  `num_threads` blocks of [block, num_gallery] float32 distances are in
  flight at once, each with the scratch of ranking one of its queries (at
  most 5 more rows); they must fit `memory_budget_mb` together. At least
  one query per block, so a budget below num_threads x 6 rows is exceeded
  by that much.

  Args:
    num_gallery: G, the gallery columns of every distance row.
    num_threads: blocks evaluated concurrently.
    chunk_size: the most queries per block (256 by default; one block of
      every query measured no faster at Market size,
      bench/eval_msmt_results.md).
    memory_budget_mb: MiB all blocks in flight may take together.

  Returns:
    The number of queries per block, in [1, chunk_size].

  Raises:
    ValueError: chunk_size or num_threads below 1, or memory_budget_mb not
      a positive number.
  """
  if chunk_size < 1 or num_threads < 1:
    raise ValueError(
        f"chunk_size and num_threads must be >= 1, got {chunk_size} and "
        f"{num_threads}.")
  if not memory_budget_mb > 0:
    raise ValueError(
        f"memory_budget_mb must be a positive number of MiB, got "
        f"{memory_budget_mb!r}; the default is {DEFAULT_MEMORY_BUDGET_MB}.")
  row_bytes = max(num_gallery, 1) * _DISTANCE_BYTES * num_threads
  fits = int(memory_budget_mb * 2**20 // row_bytes) - _SCRATCH_ROWS
  return max(1, min(chunk_size, fits))


_INT64_RANGE = (-2.0**63, 2.0**63)


def _checked_ids(num_queries: int, query_pids, query_camids, gallery_pids,
                 gallery_camids) -> tuple[np.ndarray, ...]:
  """(query_pids, query_camids, gallery_pids, gallery_camids) as checked
  int64 arrays (`check_ids`): [Q], [Q], [G], [G]."""
  gallery_pids = np.asarray(gallery_pids)
  num_gallery = gallery_pids.shape[0] if gallery_pids.ndim else 0
  return (check_ids("query_pids", query_pids, num_queries),
          check_ids("query_camids", query_camids, num_queries),
          check_ids("gallery_pids", gallery_pids, num_gallery),
          check_ids("gallery_camids", gallery_camids, num_gallery))


def check_ids(name: str, values, length: int) -> np.ndarray:
  """Validated ids (pids or camids) as int64.

  Args:
    name: the array's name, for the error.
    values: [length] integers, or floats holding integers.
    length: the number of feature rows they label.

  Returns:
    [length] int64.

  Raises:
    ValueError: naming the array and the first bad value: not 1-D of
      `length`, not numbers, or not an integer in int64 range (a float
      1e30 or a uint64 2**64 - 1 would wrap in the cast, merging ids or
      becoming the junk id -1).
  """
  values = np.asarray(values)
  if values.ndim != 1 or values.shape[0] != length:
    raise ValueError(
        f"{name} must be a 1-D array of length {length} (one per feature "
        f"row), got shape {values.shape}; pass one id per image.")
  kind = values.dtype.kind
  if kind in "bi":
    return values.astype(np.int64)
  if kind == "u":
    bad = values > np.iinfo(np.int64).max
  elif kind == "f":
    with np.errstate(invalid="ignore"):
      bad = ~(np.isfinite(values) & (np.mod(values, 1) == 0)
              & (values >= _INT64_RANGE[0]) & (values < _INT64_RANGE[1]))
  else:
    raise ValueError(
        f"{name} must hold integer ids, got dtype {values.dtype} (first "
        f"values {values[:3].tolist()}); map the labels to integers (pid -1 "
        "junk, 0 distractor; camid -1 unknown camera) and store them as "
        "int64.")
  if bad.any():
    i = int(np.argmax(bad))
    value = repr(float(values[i])) if kind == "f" else str(int(values[i]))
    raise ValueError(
        f"{name}: {value} is not an integer id in int64 range (at index "
        f"{i}); ids are integers (pid -1 junk, 0 distractor; camid -1 "
        "unknown camera): store the original integer labels as int64, or "
        "map other labels to 0..N-1.")
  return values.astype(np.int64)


def check_features(name: str, features) -> np.ndarray:
  """Validated [N, D] features: float32, or float64 when given float64.

  float64 stays float64 so that `condition_features` can shift it before
  the cast to float32 drops the digits under a large offset.

  Raises:
    ValueError: naming the array: not 2-D, no feature dimensions, not
      numbers, or NaN / inf (with the first such row).
  """
  features = np.asarray(features)
  if features.ndim != 2:
    raise ValueError(
        f"{name} must be a 2-D array [num_images, feature_dim], got shape "
        f"{features.shape}.")
  if features.shape[1] == 0:
    raise ValueError(
        f"{name} has no feature dimensions (shape {features.shape}): every "
        "distance would be 0. Write the embeddings, [num_images, "
        "feature_dim] with feature_dim >= 1.")
  if features.dtype.kind not in "biuf":
    raise ValueError(f"{name} must hold numbers, got dtype {features.dtype}.")
  dtype = np.float64 if features.dtype == np.float64 else np.float32
  features = np.ascontiguousarray(features, dtype=dtype)
  if not np.isfinite(features).all():
    row = int(np.argmin(np.isfinite(features).all(1)))
    raise ValueError(
        f"{name} contains NaN/inf at row {row} (of {features.shape[0]}): "
        "the model produced non-finite features (e.g. a diverged training "
        "run, or an overflow in float16); check its outputs before scoring "
        "them.")
  return features


# Squared norms a float32 GEMM handles with room to spare: above 2**100 the
# products summed over the dimensions near float32's largest, 2**128; below
# 2**-100 they fall among the subnormals (under 2**-126) and lose digits.
_MAX_SQUARED_NORM = 2.0**100
_MIN_SQUARED_NORM = 2.0**-100
# Rows of each side from which the common offset is estimated.
_OFFSET_SAMPLE_ROWS = 256


def _sample_rows(features: np.ndarray) -> np.ndarray:
  rows = np.linspace(0, features.shape[0] - 1,
                     min(features.shape[0], _OFFSET_SAMPLE_ROWS)).astype(int)
  return features[rows].astype(np.float64)


def _pow2_exponent(*arrays: np.ndarray) -> int:
  """e such that the largest |value| times 2**e is in [0.5, 1) (0: all 0)."""
  largest = max((max(float(a.max()), -float(a.min())) for a in arrays
                 if a.size), default=0.0)
  return -int(np.frexp(largest)[1]) if largest > 0 else 0


def _common_centre(qf: np.ndarray, gf: np.ndarray) -> Optional[np.ndarray]:
  """[D] float64 centre to subtract, or None when the offset is harmless.

  From a sample of rows of both sides: when the offset |mean|^2 exceeds the
  spread (the mean squared distance to the mean), a^2 + b^2 - 2ab loses
  more digits to it than the distances have. The centre is the mean
  rounded to a multiple of a power of two at most the spread per
  dimension: the subtraction is then exact for float32 features and small
  integers stay integers, so exactly tied distances stay tied.
  """
  sample = np.concatenate([_sample_rows(x) for x in (qf, gf)])
  if not sample.size:
    return None
  # float64 squares of float32 values cannot overflow; of float64 values
  # they can: those are taken in units of the largest value.
  exponent = _pow2_exponent(sample) if qf.dtype == np.float64 else 0
  if exponent:
    sample = np.ldexp(sample, exponent)
  mean = sample.mean(0)
  sample -= mean
  spread = np.einsum("ij,ij->", sample, sample) / sample.shape[0]
  if mean @ mean <= spread:
    return None
  if spread > 0:
    step = 2.0 ** np.floor(np.log2(np.sqrt(spread / sample.shape[1])))
    mean = np.round(mean / step) * step
  return np.ldexp(mean, -exponent)


def _squared_norms(x: np.ndarray) -> np.ndarray:
  """[N] squared norms of float32 rows, summed in float64 (accurate to
  float32's rounding, which `_FeatureDistances.error_bounds` counts on;
  inf beyond float32, which `_condition` then scales)."""
  with np.errstate(over="ignore"):
    return np.einsum("ij,ij->i", x, x, dtype=np.float64).astype(x.dtype)


def condition_features(query_features, gallery_features):
  """Features whose squared distances a float32 GEMM computes accurately.

  Validates both (`check_features`), subtracts a common centre where a
  large shared offset would cancel in a^2 + b^2 - 2ab (`_common_centre`),
  and multiplies both by a power of two where the squared norms would
  overflow or underflow float32. Neither changes the ranking (every squared
  distance is multiplied by the same power of four). The features of an
  ordinary model (offset below the spread, squared norms between 2**-100
  and 2**100) come back as they are: the cost is a sample of rows and the
  squared norms, which the distances need anyway.

  Args:
    query_features: [Q, D] float features.
    gallery_features: [G, D] float features of the same model.

  Returns:
    (query features [Q, D] float32, gallery features [G, D] float32, their
    squared norms [Q] and [G] float32), for `squared_euclidean`.

  Raises:
    ValueError: as `check_features`, or the two dimensions differ.
  """
  return _condition(check_features("query_features", query_features),
                    check_features("gallery_features", gallery_features))


def _check_same_dimension(qf: np.ndarray, gf: np.ndarray) -> None:
  if qf.shape[1] != gf.shape[1]:
    raise ValueError(
        f"query_features have dimension {qf.shape[1]} but gallery_features "
        f"{gf.shape[1]}; both must come from the same model.")


def _condition(qf: np.ndarray, gf: np.ndarray):
  """`condition_features` of features `check_features` accepted."""
  _check_same_dimension(qf, gf)
  centre = _common_centre(qf, gf)
  if centre is not None:
    qf, gf = qf - centre.astype(qf.dtype), gf - centre.astype(gf.dtype)
  if qf.dtype != np.float32 or gf.dtype != np.float32:
    # float64 beyond float32's range is scaled before the cast, not after.
    exponent = _pow2_exponent(qf, gf)
    if abs(exponent) > 50:
      qf, gf = np.ldexp(qf, exponent), np.ldexp(gf, exponent)
    qf, gf = qf.astype(np.float32), gf.astype(np.float32)
  q_sq, g_sq = _squared_norms(qf), _squared_norms(gf)
  largest = max((float(x.max()) for x in (q_sq, g_sq) if x.size), default=0.0)
  if largest != 0 and not _MIN_SQUARED_NORM <= largest <= _MAX_SQUARED_NORM:
    exponent = _pow2_exponent(qf, gf)
    qf, gf = np.ldexp(qf, exponent), np.ldexp(gf, exponent)
    q_sq, g_sq = _squared_norms(qf), _squared_norms(gf)
  return qf, gf, q_sq, g_sq


def squared_euclidean(a: np.ndarray, b: np.ndarray,
                      b_sq: Optional[np.ndarray] = None,
                      a_sq: Optional[np.ndarray] = None) -> np.ndarray:
  """Squared Euclidean distances by one float32 GEMM.

  Accurate for features from `condition_features`; others may overflow
  (~1e20) or cancel (a large common offset).

  Args:
    a: [M, D] float32.
    b: [N, D] float32.
    b_sq: optional precomputed [N] squared norms of `b`.
    a_sq: optional precomputed [M] squared norms of `a`.

  Returns:
    [M, N] float32, clipped at 0 (the GEMM form can go slightly negative).
    The ranking equals that of the (non-squared) Euclidean distance.
  """
  if b_sq is None:
    b_sq = _squared_norms(b)
  if a_sq is None:
    a_sq = _squared_norms(a)
  out = a @ b.T
  out *= -2.0
  out += b_sq[None, :]
  out += a_sq[:, None]
  np.maximum(out, 0.0, out=out)
  return out


def _match_lists(query_pids, query_camids, gallery_pids, gallery_camids):
  """Per query: (true-match gallery columns, same-pid-same-camera columns)."""
  order = np.argsort(gallery_pids, kind="stable")
  sorted_pids = gallery_pids[order]
  uniq, starts = np.unique(sorted_pids, return_index=True)
  ends = np.append(starts[1:], len(sorted_pids))
  groups = {int(p): order[s:e] for p, s, e in zip(uniq, starts, ends)}
  empty = np.zeros(0, np.int64)
  matches, removed = [], []
  for pid, cam in zip(query_pids, query_camids):
    cols = groups.get(int(pid), empty) if pid != records.JUNK_PID else empty
    if cam != records.UNKNOWN_CAMID and cols.size:
      same_cam = gallery_camids[cols] == cam
      matches.append(np.sort(cols[~same_cam]))
      removed.append(cols[same_cam])
    else:
      matches.append(np.sort(cols))
      removed.append(empty)
  return matches, removed


def true_matches(query_pids, query_camids, gallery_pids,
                 gallery_camids) -> list[np.ndarray]:
  """Per query, the gallery columns the metric counts as its true matches.

  The evaluator's own filter (`_match_lists`): the query's identity, not
  from the query's camera when that is known, never junk.

  Args:
    query_pids, query_camids: [Q] ints.
    gallery_pids, gallery_camids: [G] ints.

  Returns:
    Q sorted int64 arrays of gallery columns (empty: the query is skipped).
  """
  return _match_lists(*_checked_ids(len(query_pids), query_pids, query_camids,
                                    gallery_pids, gallery_camids))[0]


def _float32_outwards(x: np.ndarray, direction: float) -> np.ndarray:
  """float64 `x` as float32 one step further towards `direction` (+-inf):
  beyond x whatever the rounding."""
  return np.nextafter(x.astype(np.float32), np.float32(direction))


def _sortable(values: np.ndarray) -> np.ndarray:
  """uint64 keys below 2**32 ordered as the float32 `values` (-0.0 as 0.0):
  the IEEE bits with the sign bit flipped, every bit of a negative."""
  bits = np.add(values, np.float32(0), dtype=np.float32).view(np.uint32)
  bits = bits.astype(np.uint64)
  return np.where(bits >> np.uint64(31), bits ^ np.uint64(0xFFFFFFFF),
                  bits | np.uint64(0x80000000))


def _block_ranks(dist: np.ndarray, matches, removed, start: int,
                 distances: Optional["_FeatureDistances"]):
  """0-based ranks of every true match of a block's queries.

  Rank = number of valid items ordered before the match. Distances from
  a DistanceChunkFn are ordered by (distance, gallery index), like a
  stable argsort of the row. Distances of features (`distances` given) are
  ordered as the float64 reference orders them, by (float64 distance,
  gallery index): two items (matches or not) whose float32 distances
  differ by more than their two error bounds
  (`_FeatureDistances.error_bounds`) by those, closer pairs (near ties) by
  their float64 distances (`_FeatureDistances.exact`, those of
  `reference.distance_matrix`). Two near-tied matches need their float64
  order too: with another item between them, the other order gives both
  the same rank.

  No row is sorted. Per query one pass over the row keeps the values not
  beyond its farthest match's window [lo, hi]; the values below each
  match's lo are counted (one binary search of each value among the
  query's lo); the few in some window are paired with the matches whose
  window holds them, for the queries of about _PAIRS_AT_ONCE such items
  at once.

  Args:
    dist: [n, G] float32 distances of queries start..start+n-1, invalid
      items +inf (modified: same-camera items set to +inf).
    matches, removed: their `_match_lists` entries.
    start: the first query's row.
    distances: what computed `dist` from features, or None.

  Returns:
    (used, counts, ranks): the block rows of the queries with matches,
    their numbers of matches, and [sum(counts)] int64 ranks, query by
    query, ascending within each.
  """
  used = [i for i in range(dist.shape[0]) if matches[i].size]
  counts = np.array([matches[i].size for i in used], np.int64)
  if not used:
    return used, counts, np.zeros(0, np.int64)
  gone = [i for i in used if removed[i].size]
  if gone:
    dist[np.repeat(gone, [removed[i].size for i in gone]),
         np.concatenate([removed[i] for i in gone])] = np.inf
  rows = np.repeat(np.array(used), counts)
  cols = np.concatenate([matches[i] for i in used])
  thr = dist[rows, cols]
  if distances is None:
    lo = hi = thr  # the window of a match: its exact ties
  else:
    err = distances.error_bounds(start + rows, cols)
    reach = err + distances.max_errors(start + rows)
    # Beyond [lo, hi] float32 alone orders an item and the match; widened
    # to float32 so that rows are compared as they are.
    lo = _float32_outwards(thr - reach, -np.inf)
    hi = _float32_outwards(thr + reach, np.inf)
  # Each query's matches by lo (rows are already grouped by query).
  order = np.lexsort((lo, rows))
  rows, cols, thr, lo, hi = (x[order] for x in (rows, cols, thr, lo, hi))
  if distances is not None:
    err = err[order]
  ends = np.cumsum(counts)
  begins = ends - counts
  num_used = len(used)
  # Per query [-inf, running max of hi in lo order]: the items up to the
  # j-th lo are in some window iff not beyond the j-th entry.
  reach_hi = np.full(cols.size + num_used, -np.inf, np.float32)
  ranks = np.empty(cols.size, np.int64)
  thr64 = thr.astype(np.float64)
  num_gallery = dist.shape[1]

  def settle(k, values, items):
    """Adds to ranks[k] the window items (values, items) ordered before."""
    before = (values < thr[k]) | ((values == thr[k]) & (items < cols[k]))
    if distances is not None:
      tie = (np.abs(values - thr64[k])
             <= err[k] + distances.error_bounds(start + rows[k], items))
      tie &= items != cols[k]
      if tie.any():
        kt, it = k[tie], items[tie]
        # Each (query, column) once: a match, or an item near several.
        keys, which = np.unique(np.concatenate(
            [rows[kt] * num_gallery + cols[kt], rows[kt] * num_gallery + it]),
            return_inverse=True)
        exact = distances.exact(start + keys // num_gallery,
                                keys % num_gallery)[which]
        mine, theirs = exact[:kt.size], exact[kt.size:]
        before[tie] = (theirs < mine) | ((theirs == mine) & (it < cols[kt]))
    ranks[:] += np.bincount(k[before], minlength=ranks.size)

  def settle_queries(u0, u1, near_values, near_cols, near_counts):
    """Settles the window items of queries u0..u1-1 (in column order)."""
    # By (query, value): a match's window is then one slice of them.
    query = np.repeat(np.arange(u0, u1, dtype=np.uint64), near_counts)
    item_keys = (query << np.uint64(32)) | _sortable(
        np.concatenate(near_values))
    by_key = np.argsort(item_keys)
    item_keys = item_keys[by_key]
    item_values = np.concatenate(near_values)[by_key]
    item_cols = np.concatenate(near_cols)[by_key]
    kb, ke = begins[u0], ends[u1 - 1]
    match_query = np.repeat(np.arange(u0, u1, dtype=np.uint64),
                            counts[u0:u1]) << np.uint64(32)
    first = item_keys.searchsorted(match_query | _sortable(lo[kb:ke]),
                                   side="left")
    sizes = item_keys.searchsorted(match_query | _sortable(hi[kb:ke]),
                                   side="right") - first
    # The (match, window item) pairs, a bounded number at a time.
    size_ends = np.cumsum(sizes)
    k0 = 0
    while k0 < ke - kb:
      done = size_ends[k0 - 1] if k0 else 0
      k1 = min(ke - kb, max(k0 + 1, int(np.searchsorted(
          size_ends, done + _PAIRS_AT_ONCE, side="right"))))
      sz = sizes[k0:k1]
      if size_ends[k1 - 1] > done:
        j = np.arange(size_ends[k1 - 1] - done) + np.repeat(
            first[k0:k1] - (size_ends[k0:k1] - sz - done), sz)
        settle(kb + np.repeat(np.arange(k0, k1), sz), item_values[j],
               item_cols[j])
      k0 = k1

  # The window items of a few queries are held at once, at most about
  # _PAIRS_AT_ONCE (more only for one query's).
  near_values, near_cols, near_counts = [], [], []
  u0 = held = 0
  for u, i in enumerate(used):
    b, e = begins[u], ends[u]
    upto = reach_hi[b + u:e + u + 1]
    np.maximum.accumulate(hi[b:e], out=upto[1:])
    row = dist[i]
    candidates = np.flatnonzero(row <= upto[-1])
    values = row[candidates]
    # How many lo each value reaches: the values below the j-th lo are
    # those reaching at most j - 1.
    at = lo[b:e].searchsorted(values, side="right")
    ranks[b:e] = np.bincount(at, minlength=e - b + 1)[:-1].cumsum()
    near = np.flatnonzero(values <= upto[at])
    near_values.append(values[near])
    near_cols.append(candidates[near])
    near_counts.append(near.size)
    held += near.size
    if held >= _PAIRS_AT_ONCE or u == num_used - 1:
      settle_queries(u0, u + 1, near_values, near_cols, near_counts)
      near_values, near_cols, near_counts = [], [], []
      u0, held = u + 1, 0
  # Ascending within each query.
  ranks = ranks[np.lexsort((ranks, rows))]
  return used, counts, ranks


def _evaluate_chunk(dist: np.ndarray, matches, removed, start: int = 0,
                    distances: Optional["_FeatureDistances"] = None):
  """Per-query (first rank, AP, INP) for one chunk; None for skipped ones.

  Args:
    dist: [n, G] float32 distances of queries start..start+n-1 (modified).
    matches, removed: their `_match_lists` entries.
    start: the first query's row.
    distances: when `dist` came from features, what settles their near
      ties exactly (`_block_ranks`).
  """
  used, counts, ranks = _block_ranks(dist, matches, removed, start, distances)
  out = [None] * dist.shape[0]
  if not used:
    return out
  ends = np.cumsum(counts)
  begins = ends - counts
  position = np.arange(ranks.size) - np.repeat(begins, counts)
  ap = np.add.reduceat((position + 1) / (ranks + 1.0), begins) / counts
  inp = counts / (ranks[ends - 1] + 1.0)
  for u, i in enumerate(used):
    out[i] = (int(ranks[begins[u]]), float(ap[u]), float(inp[u]))
  return out


def evaluate_distance_fn(dist_fn: DistanceChunkFn, num_queries: int,
                         query_pids, gallery_pids, query_camids, gallery_camids,
                         *, max_rank: int = 50, chunk_size: int = 256,
                         num_threads: Optional[int] = None,
                         memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB
                         ) -> dict:
  """CMC / mAP / mINP from distances produced block by block.

  Args:
    dist_fn: (start, stop) -> [stop - start, G] float32 distances of those
      queries to the whole gallery (gallery already junk-free or not: junk
      columns are ignored by their pid). The returned array is modified.
      Called from `num_threads` threads at once: it must be thread-safe
      (NumPy on shared read-only arrays is).
    num_queries: Q.
    query_pids, gallery_pids: [Q], [G] ints (-1 junk, 0 distractor).
    query_camids, gallery_camids: [Q], [G] ints (-1 unknown).
    max_rank: length of the CMC curve.
    chunk_size: the most queries per block; results do not depend on it.
    num_threads: blocks evaluated concurrently, each by one thread that
      computes (BLAS on one thread) and ranks it (NumPy releases the GIL in
      the GEMM and the sorts); default: the number of CPUs. 1: block after
      block, the GEMM on every BLAS thread.
    memory_budget_mb: MiB the distance blocks in flight may take together
      (threads x block x G x 4 bytes); the blocks shrink to fit
      (`block_size`). What `dist_fn` allocates besides is not counted.

  Returns:
    See `evaluate_features`.
  """
  query_pids, query_camids, gallery_pids, gallery_camids = _checked_ids(
      num_queries, query_pids, query_camids, gallery_pids, gallery_camids)
  if max_rank < 1:
    raise ValueError(f"max_rank must be >= 1, got {max_rank}.")
  matches, removed = _match_lists(query_pids, query_camids, gallery_pids,
                                  gallery_camids)
  _check_some_query_usable(matches, query_pids, gallery_pids)
  junk = np.nonzero(gallery_pids == records.JUNK_PID)[0]
  num_threads = num_threads or os.cpu_count() or 1
  chunk_size = block_size(gallery_pids.shape[0], num_threads,
                          chunk_size=chunk_size,
                          memory_budget_mb=memory_budget_mb)

  def run(bounds: tuple[int, int]):
    start, stop = bounds
    dist = dist_fn(start, stop)
    if dist.shape != (stop - start, gallery_pids.shape[0]):
      raise ValueError(
          f"distance chunk for queries {start}:{stop} has shape {dist.shape}, "
          f"expected {(stop - start, gallery_pids.shape[0])}.")
    if junk.size:
      dist[:, junk] = np.inf
    return _evaluate_chunk(dist, matches[start:stop], removed[start:stop],
                           start, _feature_distances(dist_fn))

  starts = _block_starts(num_queries, chunk_size, num_threads)
  blocks = list(zip(starts[:-1], starts[1:]))
  if num_threads > 1 and len(blocks) > 1:
    # Every thread computes and ranks its own chunks, its GEMM on one BLAS
    # thread: a GEMM threaded over every core stalls on the core a ranking
    # thread holds (Market-sized, 2 cores: 0.91 s that way, 0.82 s this
    # way; bench/eval_results.md). BLAS limits are process-wide and
    # restored on exit.
    with threadpoolctl.threadpool_limits(1, user_api="blas"), \
        concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
      per_chunk = list(pool.map(run, blocks))
  else:
    per_chunk = [run(b) for b in blocks]
  return _summarize([r for chunk in per_chunk for r in chunk], max_rank)


def _block_starts(num_queries: int, chunk_size: int,
                  num_threads: int) -> list[int]:
  """Where the blocks of queries start, then num_queries.

  Blocks of chunk_size, but the last round of num_threads blocks shares
  what is left equally: one short last block would leave the other
  threads idle at the end (Market on 2 threads: 13 x 256 + 40 queries
  split 1,792 / 1,576; 12 x 256 + 2 x 148: 1,684 / 1,684). Full blocks
  keep the GEMM's row count (256 rows: 2.5% less time a query than 241).
  """
  full = num_queries // chunk_size // num_threads * num_threads
  if num_threads == 1 or not full:
    full = num_queries // chunk_size
  starts = list(range(0, full * chunk_size, chunk_size))
  left = num_queries - full * chunk_size
  if left:
    parts = min(num_threads, left)
    starts += [full * chunk_size + left * j // parts for j in range(parts)]
  return starts + [num_queries]


def _summarize(per_query, max_rank: int) -> dict:
  used = [r for r in per_query if r is not None]
  num_used = len(used)
  cmc = np.zeros(max_rank, np.float64)
  if num_used:
    first = np.array([r[0] for r in used])
    hits = np.bincount(first[first < max_rank], minlength=max_rank)
    cmc = np.cumsum(hits) / num_used
    ap = float(np.mean([r[1] for r in used]))
    inp = float(np.mean([r[2] for r in used]))
  else:
    ap = inp = 0.0
  result = {f"rank{k}": float(cmc[k - 1]) if k <= max_rank else float("nan")
            for k in (1, 5, 10, 20)}
  result.update(mAP=ap, mINP=inp, cmc=[float(c) for c in cmc],
                num_queries=num_used,
                num_skipped_queries=len(per_query) - num_used)
  return result


def evaluate_features(query_features, gallery_features, query_pids,
                      gallery_pids, query_camids, gallery_camids, *,
                      max_rank: int = 50, chunk_size: int = 256,
                      num_threads: Optional[int] = None,
                      memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB
                      ) -> dict:
  """SIR evaluation: Euclidean ranking, CMC, mAP and mINP.

  Args:
    query_features: [Q, D] float features.
    gallery_features: [G, D] float features (junk images may be included;
      they are dropped before the distances are computed).
    query_pids, gallery_pids: [Q], [G] ints; -1 junk, 0 distractor.
    query_camids, gallery_camids: [Q], [G] ints, 0-based; -1 unknown.
    max_rank: length of the CMC curve.
    chunk_size: the most queries per block; results do not depend on it.
    num_threads: concurrent blocks; default: number of CPUs.
    memory_budget_mb: MiB the distance blocks in flight may take together
      (`evaluate_distance_fn`). Besides them: the squared norms, and a
      float32 copy of the features where they are not float32 or need a
      shift or scale (`condition_features`).

  Returns:
    dict with "rank1", "rank5", "rank10", "rank20", "mAP", "mINP" (fractions;
    a rank beyond max_rank is NaN), "cmc" (list of max_rank fractions),
    "num_queries" (used) and "num_skipped_queries" (no valid true match).
  """
  qf = check_features("query_features", query_features)
  gf = check_features("gallery_features", gallery_features)
  _check_same_dimension(qf, gf)
  query_pids = check_ids("query_pids", query_pids, qf.shape[0])
  query_camids = check_ids("query_camids", query_camids, qf.shape[0])
  gallery_pids = check_ids("gallery_pids", gallery_pids, gf.shape[0])
  gallery_camids = check_ids("gallery_camids", gallery_camids, gf.shape[0])
  # Junk columns never count: drop them before the GEMM (Market: 16% less).
  keep = gallery_pids != records.JUNK_PID
  if not keep.all():
    gf, gallery_pids, gallery_camids = (
        gf[keep], gallery_pids[keep], gallery_camids[keep])
  return evaluate_distance_fn(
      _distance_fn(qf, gf), qf.shape[0], query_pids, gallery_pids,
      query_camids, gallery_camids, max_rank=max_rank, chunk_size=chunk_size,
      num_threads=num_threads, memory_budget_mb=memory_budget_mb)


def features_distance_fn(query_features, gallery_features) -> DistanceChunkFn:
  """The squared Euclidean DistanceChunkFn `evaluate_features` ranks by.

  Public so that what pictures a ranking (`scored_rankings`) measures the
  distances exactly as the metric does: `evaluate_features` calls it on the
  gallery without its junk columns (pid -1); pass the same gallery.

  Args:
    query_features: [Q, D] float features.
    gallery_features: [G, D] float features.

  Returns:
    (start, stop) -> [stop - start, G] float32 squared distances.
  """
  qf = check_features("query_features", query_features)
  gf = check_features("gallery_features", gallery_features)
  return _distance_fn(qf, gf)


def _distance_fn(qf: np.ndarray, gf: np.ndarray) -> DistanceChunkFn:
  """`features_distance_fn` of features `check_features` accepted."""
  return _FeatureDistances(qf, gf)


# Bytes of float64 rows `_FeatureDistances.exact` gathers at once (in cache).
_EXACT_BLOCK_BYTES = 2**18
# (match, window item) pairs, and window items, `_block_ranks` holds at once.
_PAIRS_AT_ONCE = 2**13


class _FeatureDistances:
  """The DistanceChunkFn of features: float32 GEMM distances, their error
  bounds, and float64 distances to settle near ties.

  The float32 distances are those of the conditioned features
  (`condition_features`); the float64 ones are `reference.distance_matrix`'s
  of the features as given (the same sums, so bit-identical), which the
  reference ranks by.
  """

  def __init__(self, qf: np.ndarray, gf: np.ndarray):
    self._given = (qf, gf)
    self._qf, self._gf, self._q_sq, self._g_sq = _condition(qf, gf)
    # The float32 distance a + b - 2 q.g (`squared_euclidean`) of the
    # norms a = |q|^2, b = |g|^2 rounded from float64 differs from the
    # exact one by at most 2 gamma_D |q||g| (the dot product in any
    # summation order; Higham, Accuracy and Stability, 3.1; u = 2**-24,
    # gamma_D = D u / (1 - D u) <= (D + 1) u) + 3 u (|q| + |g|)^2 (the two
    # norms' and two additions' rounding); 8 u covers besides the float32
    # rounding of float64 features (2 u) and the float64 reference's own
    # error.
    self._dot_unit = 2.0 * (qf.shape[1] + 1) * 2.0**-24
    self._norm_unit = 8.0 * 2.0**-24
    self._q_norm = np.sqrt(self._q_sq.astype(np.float64))
    self._g_norm = np.sqrt(self._g_sq.astype(np.float64))
    self._g_norm_max = float(self._g_norm.max()) if self._g_norm.size else 0.0

  def __call__(self, start: int, stop: int) -> np.ndarray:
    return squared_euclidean(self._qf[start:stop], self._gf, self._g_sq,
                             self._q_sq[start:stop])

  def error_bounds(self, queries: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Float64 bounds on the errors of the float32 distances of queries
    to gallery cols (broadcast; in the float32 distances' units)."""
    return self._bound(self._q_norm[queries], self._g_norm[cols])

  def max_errors(self, queries: np.ndarray) -> np.ndarray:
    """The largest of `error_bounds(queries, ...)` over the gallery."""
    return self._bound(self._q_norm[queries], self._g_norm_max)

  def _bound(self, q_norm, g_norm):
    return (self._dot_unit * q_norm * g_norm
            + self._norm_unit * (q_norm + g_norm)**2)

  def exact(self, queries: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """[m] float64 squared distances of queries[i] to gallery cols[i]."""
    qf, gf = self._given
    out = np.empty(cols.size, np.float64)
    step = max(1, _EXACT_BLOCK_BYTES // (8 * gf.shape[1]))
    for s in range(0, cols.size, step):
      # As the reference: float64 rows, their difference, its einsum (a
      # mixed-type subtract with dtype=float64 gives the same bits slower).
      diff = gf[cols[s:s + step]].astype(np.float64)
      diff -= qf[queries[s:s + step]]
      out[s:s + step] = np.einsum("ij,ij->i", diff, diff)
    return out


def _feature_distances(dist_fn) -> Optional[_FeatureDistances]:
  return dist_fn if isinstance(dist_fn, _FeatureDistances) else None


def evaluate_distances(distances, query_pids, gallery_pids, query_camids,
                       gallery_camids, *, max_rank: int = 50,
                       chunk_size: int = 256,
                       num_threads: Optional[int] = None,
                       memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB
                       ) -> dict:
  """Like `evaluate_features` for a precomputed [Q, G] distance matrix.

  Used for re-ranked or CIR distances (smaller = more similar). The input is
  not modified (each chunk is copied).
  """
  distances = np.asarray(distances)
  if distances.ndim != 2:
    raise ValueError(f"distances must be [Q, G], got shape {distances.shape}.")
  finite = np.isfinite(distances).all(1)
  if not finite.all():
    # NaN never compares, and +inf would tie with the ignored columns.
    raise ValueError(
        f"distances contains NaN/inf at row {int(np.argmin(finite))}; "
        "distances must be finite (smaller = more similar).")

  def dist_fn(start: int, stop: int) -> np.ndarray:
    return np.array(distances[start:stop], dtype=np.float32)

  return evaluate_distance_fn(
      dist_fn, distances.shape[0], query_pids, gallery_pids, query_camids,
      gallery_camids, max_rank=max_rank, chunk_size=chunk_size,
      num_threads=num_threads, memory_budget_mb=memory_budget_mb)


def top_k(distances_or_fn, num_queries: int, k: int,
          chunk_size: int = 256) -> np.ndarray:
  """Indices of the k closest gallery items per query, closest first.

  Args:
    distances_or_fn: [Q, G] array or a DistanceChunkFn.
    num_queries: Q.
    k: how many (clipped to G).
    chunk_size: queries per chunk.

  Returns:
    [Q, k] int64 gallery indices, ordered by (distance, index).
  """
  if callable(distances_or_fn):
    fn = distances_or_fn
  else:
    fn = lambda s, e: np.asarray(distances_or_fn[s:e], np.float32)
  out = []
  for start in range(0, num_queries, chunk_size):
    dist = fn(start, min(start + chunk_size, num_queries))
    kk = min(k, dist.shape[1])
    part = np.argpartition(dist, kk - 1, axis=1)[:, :kk] if kk < dist.shape[1] \
        else np.tile(np.arange(dist.shape[1]), (dist.shape[0], 1))
    vals = np.take_along_axis(dist, part, 1)
    order = np.lexsort((part, vals), axis=1)
    out.append(np.take_along_axis(part, order, 1))
  return np.concatenate(out, 0) if out else np.zeros((0, k), np.int64)


def features_top_k(query_features, gallery_features, k: int,
                   chunk_size: int = 256) -> np.ndarray:
  """[Q, k] gallery indices of each query's k nearest (squared Euclidean)."""
  qf, gf, q_sq, g_sq = condition_features(query_features, gallery_features)
  return top_k(lambda s, e: squared_euclidean(qf[s:e], gf, g_sq, q_sq[s:e]),
               qf.shape[0], k, chunk_size)


@dataclasses.dataclass(frozen=True)
class ScoredRankings:
  """Per query, the gallery ranking the metric scores, and its scores.

  Attributes:
    top: [Q, k] int64 gallery columns, best first, after the metric's
      filter (no junk, no image of the query's identity from its camera),
      ordered by (distance, gallery index); -1 past the end of a shorter
      filtered gallery.
    distances: [Q, k] float32 distances of `top` (NaN where top is -1).
    is_match: [Q, k] bool, True where the metric counts the item as a true
      match of the query.
    first_match: [Q] int64 0-based rank of the first true match; -1 for a
      query the metric skips (no valid true match).
    ap: [Q] float64 average precision the metric averages into mAP; NaN for
      a skipped query.
    num_same_camera: [Q] int64 gallery images of the query's identity from
      its own camera, left out of its ranking.
  """
  top: np.ndarray
  distances: np.ndarray
  is_match: np.ndarray
  first_match: np.ndarray
  ap: np.ndarray
  num_same_camera: np.ndarray


def scored_rankings(dist_fn: DistanceChunkFn, num_queries: int, query_pids,
                    gallery_pids, query_camids, gallery_camids, *, k: int,
                    chunk_size: int = 256) -> ScoredRankings:
  """What `evaluate_distance_fn` ranks and scores, kept per query.

  The same filter (`_match_lists`, junk pid -1 ignored), the same order
  ((distance, gallery index)) and the same per-query scores
  (`_evaluate_chunk`), so a picture of a ranking shows what the metric
  scored: its rank 1 is the metric's rank 1 and its AP the one averaged
  into mAP.

  Args:
    dist_fn: as for `evaluate_distance_fn` (may modify what it returns).
    num_queries: Q.
    query_pids, gallery_pids: [Q], [G] ints (-1 junk, 0 distractor).
    query_camids, gallery_camids: [Q], [G] ints (-1 unknown).
    k: ranking length kept per query.
    chunk_size: queries per chunk.

  Returns:
    ScoredRankings.
  """
  query_pids, query_camids, gallery_pids, gallery_camids = _checked_ids(
      num_queries, query_pids, query_camids, gallery_pids, gallery_camids)
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}.")
  num_gallery = gallery_pids.shape[0]
  matches, removed = _match_lists(query_pids, query_camids, gallery_pids,
                                  gallery_camids)
  junk = gallery_pids == records.JUNK_PID
  top = np.full((num_queries, k), -1, np.int64)
  distances = np.full((num_queries, k), np.nan, np.float32)
  is_match = np.zeros((num_queries, k), bool)
  first_match = np.full(num_queries, -1, np.int64)
  ap = np.full(num_queries, np.nan, np.float64)
  for start in range(0, num_queries, chunk_size):
    stop = min(start + chunk_size, num_queries)
    dist = dist_fn(start, stop)
    if dist.shape != (stop - start, num_gallery):
      raise ValueError(
          f"distance chunk for queries {start}:{stop} has shape {dist.shape}, "
          f"expected {(stop - start, num_gallery)}.")
    raw = np.array(dist, np.float32)  # _evaluate_chunk overwrites dist
    dist[:, junk] = np.inf
    scores = _evaluate_chunk(dist, matches[start:stop], removed[start:stop],
                             start, _feature_distances(dist_fn))
    for i, q in enumerate(range(start, stop)):
      if scores[i] is not None:
        first_match[q], ap[q] = scores[i][0], scores[i][1]
      valid = ~junk
      valid[removed[q]] = False
      cols = np.nonzero(valid)[0]
      row = raw[i, cols]
      kk = min(k, cols.size)
      if not kk:
        continue
      # The kk smallest by (distance, index): everything up to the kk-th
      # smallest distance, ties included, then sorted.
      kth = np.partition(row, kk - 1)[kk - 1]
      near = np.nonzero(row <= kth)[0]
      near = near[np.lexsort((cols[near], row[near]))][:kk]
      top[q, :kk] = cols[near]
      distances[q, :kk] = row[near]
      is_match[q, :kk] = np.isin(cols[near], matches[q])
  return ScoredRankings(
      top=top, distances=distances, is_match=is_match,
      first_match=first_match, ap=ap,
      num_same_camera=np.array([r.size for r in removed], np.int64))
