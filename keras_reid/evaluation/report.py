"""The JSON evaluation report, and the evaluation of feature files.

What every evaluation shares (`python -m keras_reid.evaluate`, whose
docstring lists what a report holds): the verification report on the
test split's pairs, averaging over random splits, the CMC and ROC pictures
and writing the JSON;
`evaluate_feature_file` scores .npz features from any model. This module
and everything it imports never import TensorFlow, so scoring feature files
needs NumPy, SciPy, scikit-learn, Pillow and matplotlib only
(tests/tf_free_test.py checks it). A model on a dataset:
keras_reid.evaluation.model_evaluation; a training run:
keras_reid.run_evaluation.

Repeated random splits: a model evaluated on a split it was not trained on
has seen that split's test identities in training, so the numbers are
optimistic; the paper protocol trains one model per split and averages the
per-split results (`evaluate_feature_file` with one file per split).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional, Sequence

from absl import logging
import numpy as np

from keras_reid import runs
from keras_reid.data import records
from keras_reid.evaluation import feature_files
from keras_reid.evaluation import plots
from keras_reid.evaluation import projector as projector_lib
from keras_reid.evaluation import protocols
from keras_reid.evaluation import ranking
from keras_reid.evaluation import verification
from keras_reid.evaluation import visualize

# The verification report scores at most this many query-gallery pairs of
# the test split by SIR distance (every true-match pair up to half of them,
# seeded), and at most this many through the verification head, whose
# images must be decoded; keeps the default path cheap.
VERIFICATION_MAX_PAIRS = 200_000
VERIFICATION_MAX_HEAD_PAIRS = 1000
# Pairs whose distances are computed at once (memory ~ chunk x D x 4 B).
_PAIR_CHUNK = 8192


def parse_splits(text: str) -> list[int]:
  """"0-9" -> [0, ..., 9]; "0,2,5" -> [0, 2, 5]; "1-3,7" -> [1, 2, 3, 7]."""
  out = []
  for part in filter(None, (p.strip() for p in str(text).split(","))):
    lo, sep, hi = part.partition("-")
    try:
      out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
      raise ValueError(f"--splits={text!r}: expected split indices like "
                       "\"0-9\" or \"0,2,5\".") from None
  if not out:
    raise ValueError(f"--splits={text!r} names no split.")
  return out


def default_report_dir(output_json: str) -> str:
  return os.path.splitext(output_json)[0] + "_report"


def cmc_image(result: dict, title: str) -> np.ndarray:
  """The report's CMC figure (matplotlib), uint8 [H, W, 3]: the SIR curve,
  CIR's when the report has one, the per-split std band when averaged."""
  curves = [("SIR", result["cmc"])]
  stds = [result.get("cmc_std")]
  cir_report = result.get("cir", {})
  cir_cmc = cir_report.get("cmc") or cir_report.get("cir", {}).get("cmc")
  if cir_cmc:
    curves.append(("CIR", cir_cmc))
    stds.append(None)
  return plots.cmc_figure(curves, title=title, stds=stds)


def cmc_picture(result: dict, report_dir: str, title: str,
                tensorboard: Optional[dict], *,
                tag_prefix: str = "eval") -> str:
  """report_dir/cmc.png: `cmc_image`; also tensorboard["<tag_prefix>/cmc"]."""
  image = cmc_image(result, title)
  if tensorboard is not None:
    tensorboard[f"{tag_prefix}/cmc"] = image
  return visualize.save_png(image, os.path.join(report_dir, "cmc.png"))


def roc_title(verification_report: dict) -> str:
  """Whose pairs the ROC is drawn on, for its title.

  "open-set" only for identities known to be unseen in training; "seen
  identities" when the model trained on them, whatever the split.
  """
  num = verification_report.get("num_ids")
  ids = f"{num} " if num is not None else ""
  seen = verification_report.get("seen_in_training")
  if seen:
    return f"ROC on {ids}seen identities (trained on: optimistic)"
  if verification_report.get("split") == "test":
    if seen is False:
      return f"ROC, open-set: {ids}test identities unseen in training"
    return f"ROC on {ids}test-split identities"
  return f"ROC on {ids}validation identities"


def roc_picture(verification_report: dict, report_dir: str,
                tensorboard: Optional[dict], *,
                tag_prefix: str = "eval") -> Optional[str]:
  """report_dir/roc.png: the ROC of the SIR distance and of the
  verification head (those the report has) with their EER points, titled
  by `roc_title`; also tensorboard["<tag_prefix>/roc"]. None when the
  report has no curve."""
  curves = [(label, verification_report[key]) for key, label in (
      ("sir_distance", "SIR distance"),
      ("verification_head", "verification head"))
            if "fpr" in verification_report.get(key, {})]
  if not curves:
    return None
  image = plots.roc_figure(curves, title=roc_title(verification_report))
  if tensorboard is not None:
    tensorboard[f"{tag_prefix}/roc"] = image
  return visualize.save_png(image, os.path.join(report_dir, "roc.png"))


def test_split_pairs(query_pids, query_camids, gallery_pids, gallery_camids,
                     *, max_pairs: int = VERIFICATION_MAX_PAIRS,
                     seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Query-gallery pairs of a test split, labelled as the ranking scores them.

  Positives: every pair the metric counts as a true match
  (`ranking.true_matches`: same identity, not from the query's camera, no
  junk); at most half of `max_pairs`, a seeded sample beyond. Negatives:
  pairs of different identities (distractors, pid 0, included; junk, pid
  -1, never), all of them or a seeded sample filling `max_pairs`. Pairs of
  one identity seen by one camera, which the ranking ignores, are left out.

  Args:
    query_pids, query_camids: [Q] ints.
    gallery_pids, gallery_camids: [G] ints.
    max_pairs: cap on the number of pairs.
    seed: seeds the samples.

  Returns:
    (query indices [P], gallery indices [P], same [P] bool), ordered by
    (query, gallery).
  """
  qp, gp = np.asarray(query_pids), np.asarray(gallery_pids)
  rng = np.random.default_rng(seed)
  matches = ranking.true_matches(query_pids, query_camids, gallery_pids,
                                 gallery_camids)
  pos_q = np.concatenate([np.full(m.size, q, np.int64)
                          for q, m in enumerate(matches)] + [np.zeros(0, int)])
  pos_g = np.concatenate(list(matches) + [np.zeros(0, np.int64)])
  num_pos = min(pos_q.size, max_pairs // 2)
  if num_pos < pos_q.size:
    pick = np.sort(rng.choice(pos_q.size, num_pos, replace=False))
    pos_q, pos_g = pos_q[pick], pos_g[pick]
  num_neg = max_pairs - num_pos
  queries = np.nonzero(qp != records.JUNK_PID)[0]
  gallery = np.nonzero(gp != records.JUNK_PID)[0]
  # Negatives per query: the non-junk gallery minus its identity's images.
  pids, counts = np.unique(gp[gallery], return_counts=True)
  same_count = dict(zip(pids.tolist(), counts.tolist()))
  available = sum(gallery.size - same_count.get(int(qp[q]), 0)
                  for q in queries)
  if available <= num_neg:
    grid_q, grid_g = np.meshgrid(queries, gallery, indexing="ij")
    grid_q, grid_g = grid_q.ravel(), grid_g.ravel()
    neg = qp[grid_q] != gp[grid_g]
    neg_q, neg_g = grid_q[neg], grid_g[neg]
  else:
    # Far more candidates than needed: rejection sampling of unique pairs.
    found = np.zeros(0, np.int64)
    while found.size < num_neg:
      q = rng.choice(queries, 2 * num_neg)
      g = rng.choice(gallery, 2 * num_neg)
      linear = q * gp.size + g
      found = np.unique(np.r_[found, linear[qp[q] != gp[g]]])
    found = rng.choice(found, num_neg, replace=False)
    neg_q, neg_g = found // gp.size, found % gp.size
  qi = np.r_[pos_q, neg_q].astype(np.int64)
  gi = np.r_[pos_g, neg_g].astype(np.int64)
  same = np.r_[np.ones(pos_q.size, bool), np.zeros(neg_q.size, bool)]
  order = np.lexsort((gi, qi))
  return qi[order], gi[order], same[order]


def pair_distances(query_features, gallery_features, qi, gi) -> np.ndarray:
  """Euclidean distances of pairs (query qi[p], gallery gi[p]): [P] float32."""
  qf = np.asarray(query_features, np.float32)
  gf = np.asarray(gallery_features, np.float32)
  out = np.empty(len(qi), np.float32)
  for s in range(0, len(qi), _PAIR_CHUNK):
    diff = qf[qi[s:s + _PAIR_CHUNK]] - gf[gi[s:s + _PAIR_CHUNK]]
    out[s:s + _PAIR_CHUNK] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
  return out


def pair_cosines(query_features, gallery_features, qi, gi) -> np.ndarray:
  """Cosine similarities of pairs (query qi[p], gallery gi[p]): [P] float32.

  Each feature is L2-normalised first as tf.math.l2_normalize does
  (divided by sqrt(max(squared norm, 1e-12))), as a SavedModel's or
  keras_reid.Embedder's embeddings are, so this is their dot product.
  """
  def unit(features):
    features = np.asarray(features, np.float32)
    squares = np.einsum("ij,ij->i", features, features)[:, None]
    return features / np.sqrt(np.maximum(squares, 1e-12))
  qf, gf = unit(query_features), unit(gallery_features)
  out = np.empty(len(qi), np.float32)
  for s in range(0, len(qi), _PAIR_CHUNK):
    out[s:s + _PAIR_CHUNK] = np.einsum(
        "ij,ij->i", qf[qi[s:s + _PAIR_CHUNK]], gf[gi[s:s + _PAIR_CHUNK]])
  return out


def _head_pairs(same: np.ndarray, max_head_pairs: int,
                seed: int) -> np.ndarray:
  """Sorted indices of the pairs the verification head scores: positives up
  to half of `max_head_pairs`, the rest negatives, both seeded samples."""
  rng = np.random.default_rng(seed)
  pos, neg = np.nonzero(same)[0], np.nonzero(~same)[0]
  pos = rng.permutation(pos)[:max_head_pairs // 2]
  neg = rng.permutation(neg)[:max_head_pairs - pos.size]
  return np.sort(np.r_[pos, neg])


def split_verification_report(
    query_features, gallery_features, query_pids, query_camids,
    gallery_pids, gallery_camids, *,
    head_scores: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]]
    = None, max_pairs: int = VERIFICATION_MAX_PAIRS,
    max_head_pairs: int = VERIFICATION_MAX_HEAD_PAIRS,
    seed: int = 0) -> dict:
  """ROC / EER / threshold on the query-gallery pairs of a test split.

  The test split's identities are disjoint from its training split's by
  the dataset's protocol, so unlike training identities they show how a
  threshold does on people the model has not learnt. Pairs:
  `test_split_pairs`.

  Args:
    query_features, gallery_features: [Q, D], [G, D] embeddings.
    query_pids, query_camids, gallery_pids, gallery_camids: their ids.
    head_scores: optional (query indices [B], gallery indices [B]) ->
      same-person probabilities [B] of the verification head.
    max_pairs: pairs scored by SIR distance.
    max_head_pairs: pairs scored by the head (`_head_pairs`).
    seed: pair sampling seed.

  Returns:
    {"sir_distance": roc_report (a Euclidean distance threshold: same person
    if below), "sir_cosine": roc_report of the cosine similarity of the
    L2-normalised features (what keras_reid.Embedder.verify and a served
    model's unit embeddings compare: same person if above),
    "verification_head": roc_report (a probability: same if
    above) with `head_scores`, "split": "test", "num_ids" (identities in
    the pairs, distractors not counted), "num_images", "num_query_images",
    "num_gallery_images"}, or {"split": "test", "skipped": why} when the
    split has no same-person or no different-person pair.
  """
  qi, gi, same = test_split_pairs(query_pids, query_camids, gallery_pids,
                                  gallery_camids, max_pairs=max_pairs,
                                  seed=seed)
  if same.all() or not same.any():
    return {"split": "test", "skipped": (
        f"the test split has {int(same.sum())} same-person and "
        f"{int((~same).sum())} different-person query-gallery pairs (after "
        "leaving out junk and one identity's pairs from one camera); the "
        "ROC needs both.")}
  out = {"sir_distance": verification.roc_report(
      pair_distances(query_features, gallery_features, qi, gi), same,
      higher_means_same=False),
         "sir_cosine": verification.roc_report(
             pair_cosines(query_features, gallery_features, qi, gi), same)}
  if head_scores is not None:
    pick = _head_pairs(same, max_head_pairs, seed)
    t0 = time.perf_counter()
    prob = np.asarray(head_scores(qi[pick], gi[pick]))
    out["verification_head"] = verification.roc_report(prob, same[pick])
    out["verification_head"]["seconds"] = time.perf_counter() - t0
  qp, gp = np.asarray(query_pids), np.asarray(gallery_pids)
  ids = set(qp[qi].tolist()) | set(gp[gi].tolist())
  ids -= {records.JUNK_PID, records.DISTRACTOR_PID}
  uq, ug = np.unique(qi).size, np.unique(gi).size
  out.update(split="test", num_ids=len(ids), num_images=uq + ug,
             num_query_images=uq, num_gallery_images=ug)
  return out


def verification_report(features, pids, *, seed: int = 0) -> dict:
  """ROC / EER / threshold from the SIR distances of one set of images.

  For a features file's val_features / val_pids: every pair within the set
  (a seeded sample beyond `verification.sir_pairs`' cap). A model on a
  dataset is reported on its test split's pairs instead
  (`split_verification_report`).

  Args:
    features: [N, D] validation embeddings.
    pids: [N] their identities.
    seed: pair sampling seed.

  Returns:
    {"sir_distance": roc_report (threshold is a Euclidean distance: same
    person if below), "num_ids": identities (distractors not counted)}.
  """
  pids = np.asarray(pids)
  dist, same = verification.sir_pairs(features, pids, seed=seed)
  return {"sir_distance": verification.roc_report(dist, same,
                                                  higher_means_same=False),
          "num_ids": len(set(pids.tolist()) - {records.JUNK_PID,
                                               records.DISTRACTOR_PID})}


def evaluate_splits(evaluate_one: Callable[[int, bool], dict],
                     splits: Sequence[int]) -> dict:
  """Runs evaluate_one(split, first) per split and aggregates mean / std.

  A split where no query has a valid gallery match
  (ranking.NoValidQueryError) has no score: it is left out of the means and
  listed under "excluded_splits" with the reason; if every split is, the
  error is raised naming each.
  """
  per_split, excluded = [], []
  for split in splits:
    try:
      r = evaluate_one(split, not per_split)
    except ranking.NoValidQueryError as e:
      logging.warning("Split %s excluded from the means: %s", split, e)
      excluded.append({"split": split, "reason": str(e)})
      continue
    r["split"] = split
    per_split.append(r)
  if not per_split:
    raise ranking.NoValidQueryError(
        "no split has a usable query; "
        + "; ".join(f"split {x['split']}: {x['reason']}" for x in excluded))
  out = protocols.aggregate_splits(per_split)
  if excluded:
    out["excluded_splits"] = excluded
  if all("cir" in r for r in per_split):
    out["cir"] = protocols.aggregate_splits([r["cir"]["cir"]
                                             for r in per_split])
  for key in ("verification", "pictures", "dataset", "protocol"):
    if key in per_split[0]:
      out[key] = per_split[0][key]
  out["split_indices"] = [r["split"] for r in per_split]
  out["splits"] = per_split
  return out


def warn_splits(what: str, splits: Sequence[int],
                 trained_split: Optional[int]) -> None:
  logging.warning(
      "Evaluating one %s on splits %s: a model trained on split %s has seen "
      "the test identities of the other splits in training, so their numbers"
      " are optimistic. Paper-style evaluation trains one model per split and"
      " averages (e.g. --features=split0.npz,...).", what, list(splits),
      "?" if trained_split is None else trained_split)


def finish(result: dict, output_json: str) -> dict:
  """Adds "output_json" to `result`, writes it there and returns it."""
  result["output_json"] = os.path.abspath(output_json)
  runs.write_json(output_json, result)
  logging.info("wrote %s", output_json)
  return result


def evaluate_feature_file(paths: str | Sequence[str], *,
                          output_json: Optional[str] = None,
                          report_dir: Optional[str] = None,
                          max_rank: int = 50, multi_query: bool = False,
                          rerank: bool = False, verification: bool = True,
                          pictures: bool = True,
                          cuhk03_metric: bool = False,
                          projector: bool = False) -> dict:
  """Scores features from any model; several files = one per split.

  Args:
    paths: one .npz (keys features.FEATURE_KEYS, optionally "val_features"
      and "val_pids" for the verification report) or a list of them, whose
      results are averaged (repeated-split protocols).
    output_json: report path; default <first path>.eval.json.
    report_dir: PNG folder; default next to the JSON.
    max_rank, multi_query, rerank: protocol.
    verification: ROC / EER from SIR distances when val_* arrays exist.
    pictures: the CMC curve PNG (no ranked lists: no images).
    cuhk03_metric: CUHK03 classic single-gallery-shot CMC
      (protocols.evaluate_cuhk03).
    projector: the (first) file's query + gallery embeddings with pid and
      camera for TensorBoard's projector, in <report_dir>/projector (no
      thumbnails: a feature file has no images).

  Returns:
    The report dict, also written to output_json.
  """
  paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
  output_json = output_json or os.path.splitext(paths[0])[0] + ".eval.json"

  def evaluate_path(path: str) -> dict:
    arrays = feature_files.load_feature_file(path)
    r = feature_files.evaluate_arrays(arrays, max_rank=max_rank,
                                multi_query=multi_query, rerank=rerank,
                                cuhk03_metric=cuhk03_metric)
    r["features"] = os.path.abspath(path)
    if verification:
      with np.load(path, allow_pickle=False) as data:
        if "val_features" in data.files and "val_pids" in data.files:
          report = verification_report(data["val_features"], data["val_pids"])
          report["split"] = "val_features / val_pids of the .npz"
          r["verification"] = report
    return r

  if len(paths) == 1:
    result = evaluate_path(paths[0])
  else:
    result = evaluate_splits(lambda n, first: evaluate_path(paths[n]),
                             list(range(len(paths))))
    result["features"] = [os.path.abspath(p) for p in paths]
    for excluded in result.get("excluded_splits", []):
      excluded["features"] = os.path.abspath(paths[excluded["split"]])
  if pictures:
    report_dir = report_dir or default_report_dir(output_json)
    result["pictures"] = {"cmc": cmc_picture(result, report_dir, "CMC",
                                              None)}
    roc = roc_picture(result.get("verification", {}), report_dir, None)
    if roc:
      result["pictures"]["roc"] = roc
  if projector:
    arrays = feature_files.load_feature_file(paths[0])
    result["projector"] = projector_lib.write_projector(
        os.path.join(report_dir or default_report_dir(output_json),
                     "projector"),
        *[arrays[key] for key in feature_files.FEATURE_KEYS])
  return finish(result, output_json)
