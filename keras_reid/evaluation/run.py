"""Evaluation of a training run, a SavedModel or feature files: the JSON report.

The library behind `python -m keras_reid.evaluate`, whose docstring lists
what a report holds and the command-line flags. Every function here takes
explicit arguments so that it can be called from Python and from tests:
`evaluate_run` (a training run's checkpoint), `evaluate_saved_model` (an
exported SavedModel), `evaluate_feature_file` (.npz features from any model)
and `evaluate_dataset`, the core they share.

Repeated random splits: a model evaluated on a split it was not trained on
has seen that split's test identities in training, so the numbers are
optimistic; the paper protocol trains one model per split and averages the
per-split results (`evaluate_feature_file` with one file per split).
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Optional, Sequence

from absl import logging
import numpy as np

from keras_reid.evaluation import extract
from keras_reid.evaluation import protocols
from keras_reid.evaluation import ranking

# Validation split of the verification report: at most this many training
# images (whole identities, seeded) are embedded, and at most this many
# pairs are run through the verification head; keeps the default path cheap.
VERIFICATION_MAX_IMAGES = 400
VERIFICATION_MAX_HEAD_PAIRS = 1000
# Full CIR above this many pairs logs a warning (use --cir_topk instead).
FULL_CIR_WARN_PAIRS = 200_000
NUM_RANKED_LISTS = 10
RANKED_LIST_LENGTH = 10

PairScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


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


def _write_json(result: dict, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2, default=float)


def _default_report_dir(output_json: str) -> str:
  return os.path.splitext(output_json)[0] + "_report"


def _cmc_picture(result: dict, report_dir: str, title: str,
                 tensorboard: Optional[dict]) -> str:
  from keras_reid.evaluation import visualize  # pylint: disable=g-import-not-at-top
  image = visualize.cmc_curve_image(result["cmc"], title=title)
  if tensorboard is not None:
    tensorboard["eval/cmc"] = image
  return visualize.save_png(image, os.path.join(report_dir, "cmc.png"))


def _sample_identities(records, max_images: int, seed: int = 0):
  """Whole identities (>= 2 images), seeded, up to about max_images images."""
  by_pid: dict[int, list] = {}
  for r in records:
    if r.pid not in (ranking.JUNK_PID, 0):
      by_pid.setdefault(r.pid, []).append(r)
  pids = [p for p in sorted(by_pid) if len(by_pid[p]) >= 2]
  rng = np.random.default_rng(seed)
  chosen = []
  for p in rng.permutation(pids):
    if len(chosen) >= max_images:
      break
    chosen.extend(by_pid[int(p)][:max(2, max_images // 20)])
  return chosen


def verification_report(features, pids, *, pair_scorer: Optional[PairScorer]
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
  from keras_reid.evaluation import verification  # pylint: disable=g-import-not-at-top
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
    from keras_reid.evaluation import cir  # pylint: disable=g-import-not-at-top
    t0 = time.perf_counter()
    prob = cir.score_pairs(pair_scorer, images, images, i[pick], j[pick],
                           batch_size=64)
    out["verification_head"] = verification.roc_report(prob, same[pick])
    out["verification_head"]["seconds"] = time.perf_counter() - t0
  return out


def evaluate_dataset(embed_fn: extract.EmbedFn, dataset, *,
                     image_size: tuple[int, int], normalization: str,
                     batch_size: int = 128,
                     pair_scorer: Optional[PairScorer] = None,
                     max_rank: int = 50, multi_query: bool = False,
                     rerank: bool = False, cir: str = "", cir_topk: int = 0,
                     verification: bool = True,
                     validation_seen_in_training: Optional[bool] = None,
                     report_dir: Optional[str] = None,
                     tensorboard: Optional[dict] = None) -> dict:
  """Evaluates one model on one dataset split: SIR, and optionally the rest.

  Args:
    embed_fn: images [B, H, W, 3] (normalised) -> embeddings [B, D].
    dataset: a ReidDataset (query / gallery evaluated; train = validation
      split of the verification report).
    image_size: (height, width) of the model input.
    normalization: pixel normalisation embed_fn and pair_scorer expect.
    batch_size: images per batch.
    pair_scorer: (images_a, images_b) -> same probability [B]; needed for
      CIR, optional for verification.
    max_rank, multi_query, rerank: SIR protocol (see extract.evaluate_arrays).
    cir: "full" for CIR over every pair, "" for none.
    cir_topk: CIR re-scoring of the SIR top-k (0 = off).
    verification: add the open-set verification report.
    validation_seen_in_training: recorded in the report (None = unknown).
    report_dir: where the PNGs go; None = no pictures.
    tensorboard: if a dict, the pictures are also added to it (tag -> image)
      for the caller to write.

  Returns:
    The report dict (JSON-serialisable).
  """
  result = extract.evaluate_embedder(
      embed_fn, dataset, image_size=image_size, normalization=normalization,
      batch_size=batch_size, max_rank=max_rank, multi_query=multi_query,
      rerank=rerank, return_features=True)
  arrays = result.pop("features")
  load = dict(image_size=image_size, normalization=normalization,
              batch_size=batch_size)

  if cir or cir_topk:
    if pair_scorer is None:
      raise ValueError("CIR needs a pair scorer: evaluate a --workdir or a "
                       "--saved_model with a 'verify' signature.")
    from keras_reid.evaluation import cir as cir_lib  # pylint: disable=g-import-not-at-top
    pairs = len(dataset.query) * len(dataset.gallery)
    if cir == "full" and pairs > FULL_CIR_WARN_PAIRS:
      logging.warning(
          "Full CIR runs the network on %d query-gallery pairs; this takes "
          "long. Use cir_topk=K (--cir_topk=10) to re-score the SIR top-k.",
          pairs)
    t0 = time.perf_counter()
    q_images = extract.load_images(dataset.query, **load)
    g_images = extract.load_images(dataset.gallery, **load)
    load_seconds = time.perf_counter() - t0
    report = cir_lib.evaluate_cir(
        pair_scorer, q_images, g_images, *[arrays[k] for k in
                                           extract.FEATURE_KEYS[2:]],
        query_features=arrays["query_features"],
        gallery_features=arrays["gallery_features"],
        top_k=None if cir == "full" else cir_topk, max_rank=max_rank,
        batch_size=batch_size)
    del q_images, g_images
    # SIR's full cost includes embedding every image once; CIR's does not
    # include decoding the images (shared work, reported separately).
    report["sir_extract_seconds"] = result["extract_seconds"]
    report["image_load_seconds"] = load_seconds
    report["cir_to_sir_time_ratio_with_extraction"] = report["cir_seconds"] / (
        max(report["sir_seconds"] + result["extract_seconds"], 1e-9))
    logging.info("CIR (%s): rank1 %.4f mAP %.4f; %.2f s vs SIR %.2f s "
                 "ranking (+%.2f s extraction)", report["mode"],
                 report["cir"]["rank1"], report["cir"]["mAP"],
                 report["cir_seconds"], report["sir_seconds"],
                 result["extract_seconds"])
    result["cir"] = report

  if verification:
    val = _sample_identities(dataset.train, VERIFICATION_MAX_IMAGES)
    if len({r.pid for r in val}) < 2:
      result["verification"] = {
          "skipped": f"the training split of {dataset.name!r} has fewer than "
                     "2 identities with 2 images; no validation pairs."}
    else:
      t0 = time.perf_counter()
      feats = extract.extract_features(embed_fn, val, **load)
      images = (extract.load_images(val, **load)
                if pair_scorer is not None else None)
      report = verification_report(feats, [r.pid for r in val],
                                   pair_scorer=pair_scorer, images=images)
      report.update(
          split="train",
          num_images=len(val), num_ids=len({r.pid for r in val}),
          seen_in_training=validation_seen_in_training,
          note="validation split = the dataset's training identities "
               "(VIPeR-style; no separate validation set). If the model was "
               "trained on them the thresholds are optimistic.",
          seconds=time.perf_counter() - t0)
      result["verification"] = report

  if report_dir:
    from keras_reid.evaluation import visualize  # pylint: disable=g-import-not-at-top
    keep = arrays["gallery_pids"] != ranking.JUNK_PID
    gallery = [r for r, k in zip(dataset.gallery, keep) if k]
    k = min(RANKED_LIST_LENGTH, len(gallery))
    top = ranking.features_top_k(arrays["query_features"],
                                 arrays["gallery_features"][keep], k)
    rows: list = []
    paths = visualize.save_ranked_lists(
        [r.path for r in dataset.query], [r.path for r in gallery],
        arrays["query_pids"], arrays["gallery_pids"][keep], top,
        os.path.join(report_dir, "ranked_lists"),
        num_queries=NUM_RANKED_LISTS, k=k, images=rows)
    if tensorboard is not None and rows:
      tensorboard["eval/ranked_lists"] = np.stack(rows)
    result["pictures"] = {
        "ranked_lists": paths,
        "cmc": _cmc_picture(result, report_dir, f"CMC {dataset.name}",
                            tensorboard)}
  return result


def _evaluate_splits(evaluate_one: Callable[[int, bool], dict],
                     splits: Sequence[int]) -> dict:
  """Runs evaluate_one(split, first) per split and aggregates mean / std."""
  per_split = []
  for n, split in enumerate(splits):
    r = evaluate_one(split, n == 0)
    r["split"] = split
    per_split.append(r)
  out = protocols.aggregate_splits(per_split)
  if all("cir" in r for r in per_split):
    out["cir"] = protocols.aggregate_splits([r["cir"]["cir"]
                                             for r in per_split])
  for key in ("verification", "pictures", "dataset", "protocol"):
    if key in per_split[0]:
      out[key] = per_split[0][key]
  out["split_indices"] = list(splits)
  out["splits"] = per_split
  return out


def _warn_splits(what: str, splits: Sequence[int],
                 trained_split: Optional[int]) -> None:
  logging.warning(
      "Evaluating one %s on splits %s: a model trained on split %s has seen "
      "the test identities of the other splits in training, so their numbers"
      " are optimistic. Paper-style evaluation trains one model per split and"
      " averages (e.g. --features=split0.npz,...).", what, list(splits),
      "?" if trained_split is None else trained_split)


def _finish(result: dict, output_json: str,
            tensorboard_images: Optional[dict] = None,
            tensorboard_dir: Optional[str] = None, step: int = 0) -> dict:
  if tensorboard_images and tensorboard_dir:
    from keras_reid.evaluation import visualize  # pylint: disable=g-import-not-at-top
    visualize.write_tensorboard_images(tensorboard_dir, tensorboard_images,
                                       step=step)
    result["tensorboard"] = os.path.abspath(tensorboard_dir)
  result["output_json"] = os.path.abspath(output_json)
  _write_json(result, output_json)
  logging.info("wrote %s", output_json)
  return result


def evaluate_feature_file(paths: str | Sequence[str], *,
                          output_json: Optional[str] = None,
                          report_dir: Optional[str] = None,
                          max_rank: int = 50, multi_query: bool = False,
                          rerank: bool = False, verification: bool = True,
                          pictures: bool = True) -> dict:
  """Scores features from any model; several files = one per split.

  Args:
    paths: one .npz (keys extract.FEATURE_KEYS, optionally "val_features"
      and "val_pids" for the verification report) or a list of them, whose
      results are averaged (repeated-split protocols).
    output_json: report path; default <first path>.eval.json.
    report_dir: PNG folder; default next to the JSON.
    max_rank, multi_query, rerank: protocol.
    verification: ROC / EER from SIR distances when val_* arrays exist.
    pictures: the CMC curve PNG (no ranked lists: no images).

  Returns:
    The report dict, also written to output_json.
  """
  paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
  output_json = output_json or os.path.splitext(paths[0])[0] + ".eval.json"
  results = []
  for path in paths:
    arrays = extract.load_feature_file(path)
    r = extract.evaluate_arrays(arrays, max_rank=max_rank,
                                multi_query=multi_query, rerank=rerank)
    r["features"] = os.path.abspath(path)
    if verification:
      with np.load(path, allow_pickle=False) as data:
        if "val_features" in data.files and "val_pids" in data.files:
          report = verification_report(data["val_features"], data["val_pids"])
          report["split"] = "val_features / val_pids of the .npz"
          r["verification"] = report
    results.append(r)
  if len(results) == 1:
    result = results[0]
  else:
    result = _evaluate_splits(lambda n, first: results[n],
                              list(range(len(results))))
    result["features"] = [os.path.abspath(p) for p in paths]
  if pictures:
    report_dir = report_dir or _default_report_dir(output_json)
    result["pictures"] = {"cmc": _cmc_picture(result, report_dir, "CMC",
                                              None)}
  return _finish(result, output_json)


def _resolve_dataset(config, *, dataset: Optional[str], root: Optional[str],
                     options: str):
  """-> (split -> ReidDataset, the stage's split or None, dataset name)."""
  from keras_reid.data import datasets  # pylint: disable=g-import-not-at-top
  if dataset:
    from keras_reid.training import stages  # pylint: disable=g-import-not-at-top
    opts = stages.parse_options(options or "")
    if dataset == "synthetic" and not root:
      root = config.data.synthetic_dir
    return (lambda s: datasets.load_dataset(dataset, root or "", split=s,
                                            **opts)), None, dataset
  if not config.stages:
    raise ValueError("the run has no stages; give --dataset and --root.")
  from keras_reid.training import stages  # pylint: disable=g-import-not-at-top
  stage = list(config.stages.values())[-1]

  def load(s: int):
    st = stage.copy_and_resolve_references()
    st.split = s
    if root:
      st.root = root
    return stages.load_stage_dataset(st, config)

  return load, int(stage.split), stage.dataset


def evaluate_run(workdir: str, *, dataset: Optional[str] = None,
                 root: Optional[str] = None, options: str = "",
                 split: Optional[int] = None,
                 splits: Optional[Sequence[int]] = None,
                 output_json: Optional[str] = None,
                 report_dir: Optional[str] = None, max_rank: int = 50,
                 multi_query: bool = False, rerank: bool = False,
                 cir: str = "", cir_topk: int = 0, verification: bool = True,
                 pictures: bool = True, tensorboard: bool = True,
                 batch_size: int = 128) -> dict:
  """Evaluates a training run's latest weights.

  Args:
    workdir: the run directory of `python -m keras_reid.train`.
    dataset: dataset name; default: the run's last stage dataset, read with
      `stages.load_stage_dataset` (its root, split, options; the synthetic
      set from config.data.synthetic_dir).
    root: dataset folder (overrides the stage's).
    options: reader options "key=value,..." with `dataset`.
    split: split to evaluate; default: the stage's split (0 with `dataset`).
    splits: several splits, averaged (see the module docstring's warning).
    output_json: default <workdir>/eval.json.
    report_dir: PNG folder; default next to the JSON.
    max_rank, multi_query, rerank, cir, cir_topk, verification: see
      `evaluate_dataset`.
    pictures: write the PNGs (and, with `tensorboard`, into
      <workdir>/tensorboard under eval/ranked_lists and eval/cmc).
    tensorboard: also write the pictures to the run's TensorBoard.
    batch_size: images per batch.

  Returns:
    The report dict, also written to output_json.
  """
  from keras_reid.models import builders  # pylint: disable=g-import-not-at-top
  from keras_reid.training import checkpoints  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model, config = checkpoints.restore_training_model(workdir)
  embedder = builders.build_embedder(model)
  embed = tf.function(lambda images: embedder(images, training=False),
                      reduce_retracing=True)
  pair_scorer = None
  if cir or cir_topk or verification:
    pair_scorer = extract.keras_pair_scorer(builders.build_pair_scorer(model))
  load, stage_split, name = _resolve_dataset(
      config, dataset=dataset, root=root, options=options)
  trained_names = {n for st in config.stages.values()
                   for n in st.dataset.split("+")}
  output_json = output_json or os.path.join(workdir, "eval.json")
  report_dir = (report_dir or _default_report_dir(output_json)
                ) if pictures else None
  images: Optional[dict] = {} if (pictures and tensorboard) else None

  def one(s: int, first: bool) -> dict:
    if stage_split is not None and s != stage_split:
      logging.warning("The run trained on split %d; split %d's test "
                      "identities were training identities.", stage_split, s)
    data = load(s)
    return evaluate_dataset(
        embed, data, image_size=(config.data.image_height,
                                 config.data.image_width),
        normalization=builders.normalization_for(config.model),
        batch_size=batch_size, pair_scorer=pair_scorer, max_rank=max_rank,
        multi_query=multi_query, rerank=rerank, cir=cir, cir_topk=cir_topk,
        verification=verification and first,
        validation_seen_in_training=name in trained_names,
        report_dir=report_dir if first else None,
        tensorboard=images if first else None)

  if splits:
    _warn_splits("training run", splits, stage_split)
    result = _evaluate_splits(one, list(splits))
  else:
    chosen = split if split is not None else (stage_split or 0)
    result = one(chosen, True)
    result["split"] = chosen
  result["workdir"] = os.path.abspath(workdir)
  # The pictures go at the run's last training step, next to eval/rank1.
  step = sum(int(st.step1_steps) + int(st.step2_steps)
             for st in config.stages.values())
  return _finish(result, output_json, images,
                 os.path.join(workdir, "tensorboard"), step)


def evaluate_saved_model(saved_model: str, *, dataset: str,
                         root: Optional[str] = None, options: str = "",
                         split: int = 0,
                         splits: Optional[Sequence[int]] = None,
                         image_size: Optional[tuple[int, int]] = None,
                         output_json: Optional[str] = None,
                         report_dir: Optional[str] = None, max_rank: int = 50,
                         multi_query: bool = False, rerank: bool = False,
                         cir: str = "", cir_topk: int = 0,
                         verification: bool = True, pictures: bool = True,
                         batch_size: int = 128) -> dict:
  """Evaluates an exported SavedModel (serving_default, optional verify).

  Args:
    saved_model: the version folder (<export_base>/<version>).
    dataset, root, options: the dataset to read (datasets.load_dataset).
    split / splits: as in `evaluate_run` (splits: see the warning there).
    image_size: (height, width) fed to the model; default: the export's
      assets.extra/export_info.json or its signature.
    output_json: default ./eval.json.
    Others: see `evaluate_run`. CIR and the head's verification use the
      "verify" signature when the SavedModel has one.

  Returns:
    The report dict, also written to output_json.
  """
  from keras_reid.data import datasets  # pylint: disable=g-import-not-at-top
  from keras_reid.training import stages  # pylint: disable=g-import-not-at-top
  embed_fn, size = extract.saved_model_embed_fn(saved_model)
  if image_size:
    size = tuple(int(v) for v in image_size)
  if None in size:
    raise ValueError(
        f"SavedModel {saved_model!r} does not record its input size; give "
        "image_size=(HEIGHT, WIDTH) (--image_size=HEIGHT,WIDTH).")
  opts = stages.parse_options(options or "")
  output_json = output_json or "eval.json"
  report_dir = (report_dir or _default_report_dir(output_json)
                ) if pictures else None
  pair_scorer = embed_fn.pair_scorer if (cir or cir_topk or verification) \
      else None

  def one(s: int, first: bool) -> dict:
    data = datasets.load_dataset(dataset, root or "", split=s, **opts)
    return evaluate_dataset(
        embed_fn, data, image_size=size, normalization="none",
        batch_size=batch_size, pair_scorer=pair_scorer, max_rank=max_rank,
        multi_query=multi_query, rerank=rerank, cir=cir, cir_topk=cir_topk,
        verification=verification and first,
        report_dir=report_dir if first else None)

  if splits:
    _warn_splits("SavedModel", splits, None)
    result = _evaluate_splits(one, list(splits))
  else:
    result = one(split, True)
    result["split"] = split
  result["saved_model"] = os.path.abspath(saved_model)
  return _finish(result, output_json)
