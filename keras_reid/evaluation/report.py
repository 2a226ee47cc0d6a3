"""The JSON evaluation report, and the evaluation of feature files.

What every evaluation shares (`python -m keras_reid.evaluate`, whose
docstring lists what a report holds): the open-set verification report,
averaging over random splits, the CMC picture and writing the JSON;
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
from keras_reid.evaluation import cir
from keras_reid.evaluation import feature_files
from keras_reid.evaluation import plots
from keras_reid.evaluation import projector as projector_lib
from keras_reid.evaluation import protocols
from keras_reid.evaluation import ranking
from keras_reid.evaluation import verification
from keras_reid.evaluation import visualize

# Validation split of the verification report: at most this many training
# images (whole identities, seeded) are embedded, and at most this many
# pairs are run through the verification head; keeps the default path cheap.
VERIFICATION_MAX_IMAGES = 400
VERIFICATION_MAX_HEAD_PAIRS = 1000


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
                 tensorboard: Optional[dict]) -> str:
  """report_dir/cmc.png: `cmc_image`; also tensorboard["eval/cmc"]."""
  image = cmc_image(result, title)
  if tensorboard is not None:
    tensorboard["eval/cmc"] = image
  return visualize.save_png(image, os.path.join(report_dir, "cmc.png"))


def roc_picture(verification_report: dict, report_dir: str,
                tensorboard: Optional[dict]) -> Optional[str]:
  """report_dir/roc.png: the ROC of the SIR distance and of the
  verification head (those the report has) with their EER points; also
  tensorboard["eval/roc"]. None when the report has no curve."""
  curves = [(label, verification_report[key]) for key, label in (
      ("sir_distance", "SIR distance"),
      ("verification_head", "verification head"))
            if "fpr" in verification_report.get(key, {})]
  if not curves:
    return None
  image = plots.roc_figure(curves)
  if tensorboard is not None:
    tensorboard["eval/roc"] = image
  return visualize.save_png(image, os.path.join(report_dir, "roc.png"))


def sample_identities(images: Sequence[records.Record], max_images: int,
                      seed: int = 0) -> list[records.Record]:
  """Whole identities (>= 2 images), seeded, up to about max_images images."""
  by_pid: dict[int, list] = {}
  for r in images:
    if r.pid not in (records.JUNK_PID, records.DISTRACTOR_PID):
      by_pid.setdefault(r.pid, []).append(r)
  pids = [p for p in sorted(by_pid) if len(by_pid[p]) >= 2]
  rng = np.random.default_rng(seed)
  chosen = []
  for p in rng.permutation(pids):
    if len(chosen) >= max_images:
      break
    chosen.extend(by_pid[int(p)][:max(2, max_images // 20)])
  return chosen


def verification_report(features, pids, *, pair_scorer: Optional[cir.PairScorer]
                        = None, images=None,
                        max_head_pairs: int = VERIFICATION_MAX_HEAD_PAIRS,
                        seed: int = 0) -> dict:
  """ROC / EER / threshold from SIR distances and the verification head.

  Args:
    features: [N, D] validation embeddings.
    pids: [N] their identities.
    pair_scorer: optional (images_a, images_b) -> same probability [B].
    images: [N, H, W, 3] validation images for the pair scorer.
    max_head_pairs: pairs scored by the head (all positives up to half of
      it, the rest random negatives).
    seed: pair sampling seed.

  Returns:
    {"sir_distance": roc_report (threshold is a Euclidean distance: same
    person if below), "verification_head": roc_report (probability: same if
    above) when a scorer is given}.
  """
  pids = np.asarray(pids)
  dist, same = verification.sir_pairs(features, pids, seed=seed)
  out = {"sir_distance": verification.roc_report(dist, same,
                                                 higher_means_same=False)}
  if pair_scorer is not None and images is not None:
    i, j = np.triu_indices(len(pids), k=1)
    same = pids[i] == pids[j]
    rng = np.random.default_rng(seed)
    pos, neg = np.nonzero(same)[0], np.nonzero(~same)[0]
    pos = rng.permutation(pos)[:max_head_pairs // 2]
    neg = rng.permutation(neg)[:max_head_pairs - pos.size]
    pick = np.sort(np.r_[pos, neg])
    t0 = time.perf_counter()
    prob = cir.score_pairs(pair_scorer, images, images, i[pick], j[pick],
                           batch_size=64)
    out["verification_head"] = verification.roc_report(prob, same[pick])
    out["verification_head"]["seconds"] = time.perf_counter() - t0
  return out


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
