"""The JSON report of a model on a dataset: any embedder, or a SavedModel.

`evaluate_dataset` embeds a dataset's query / gallery with any embedder and
adds, on request, CIR re-scoring, the verification report and the ranked-list
pictures; `evaluate_saved_model` does it for an exported SavedModel. A
training run's checkpoint: keras_reid.run_evaluation.
"""

from __future__ import annotations

import os
import time
from typing import Optional, Sequence

from absl import logging
import numpy as np

from keras_reid.data import datasets
from keras_reid.data import from_config
from keras_reid.data import records
from keras_reid.evaluation import cir as cir_lib
from keras_reid.evaluation import embedders
from keras_reid.evaluation import feature_files
from keras_reid.evaluation import projector
from keras_reid.evaluation import protocols
from keras_reid.evaluation import ranking
from keras_reid.evaluation import report as report_lib
from keras_reid.evaluation import rerank as rerank_lib
from keras_reid.evaluation import visualize

# Full CIR above this many pairs logs a warning (use --cir_topk instead).
FULL_CIR_WARN_PAIRS = 200_000
NUM_RANKED_LISTS = 10
RANKED_LIST_LENGTH = 10


def evaluate_dataset(embed_fn: embedders.EmbedFn, dataset, *,
                     image_size: tuple[int, int], normalization: str,
                     batch_size: int = 128,
                     pair_scorer: Optional[cir_lib.PairScorer] = None,
                     max_rank: int = 50, multi_query: bool = False,
                     rerank: bool = False, cir: str = "", cir_topk: int = 0,
                     verification: bool = True,
                     test_ids_seen_in_training: Optional[bool] = None,
                     report_dir: Optional[str] = None,
                     tensorboard: Optional[dict] = None,
                     tensorboard_prefix: str = "eval",
                     cuhk03_metric: bool = False,
                     projector_dir: Optional[str] = None) -> dict:
  """Evaluates one model on one dataset split: SIR, and optionally the rest.

  Args:
    embed_fn: images [B, H, W, 3] (normalised) -> embeddings [B, D].
    dataset: a ReidDataset (query / gallery evaluated, and their pairs the
      verification report's).
    image_size: (height, width) of the model input.
    normalization: pixel normalisation embed_fn and pair_scorer expect.
    batch_size: images per batch.
    pair_scorer: (images_a, images_b) -> same probability [B]; needed for
      CIR, optional for verification.
    max_rank, multi_query, rerank: SIR protocol (see features.evaluate_arrays).
    cir: "full" for CIR over every pair, "" for none.
    cir_topk: CIR re-scoring of the SIR top-k (0 = off).
    verification: add the verification report (ROC, EER, threshold) on the
      query-gallery pairs of the test split.
    test_ids_seen_in_training: whether the model trained on the test
      split's identities (e.g. another split of a repeated-split set);
      recorded in the verification report and its ROC title (None =
      unknown).
    report_dir: where the PNGs go; None = no pictures.
    tensorboard: if a dict, the pictures are also added to it (tag -> image)
      for the caller to write.
    tensorboard_prefix: their tags are "<prefix>/ranked_lists", ".../cmc",
      ".../roc".
    cuhk03_metric: SIR CMC of CUHK03's classic protocol
      (protocols.evaluate_cuhk03); CIR keeps the full-gallery CMC.
    projector_dir: if given, the query + gallery embeddings with pid, camera
      and a thumbnail sprite for TensorBoard's projector go there
      (projector.write_projector; info under "projector").

  Returns:
    The report dict (JSON-serialisable).
  """
  result = embedders.evaluate_embedder(
      embed_fn, dataset, image_size=image_size, normalization=normalization,
      batch_size=batch_size, max_rank=max_rank, multi_query=multi_query,
      rerank=rerank, return_features=True, cuhk03_metric=cuhk03_metric)
  arrays = result.pop("features")
  load = dict(image_size=image_size, normalization=normalization,
              batch_size=batch_size)

  if cir or cir_topk:
    result["cir"] = _cir_report(
        pair_scorer, dataset, arrays, load, cir=cir, cir_topk=cir_topk,
        max_rank=max_rank, sir_extract_seconds=result["extract_seconds"])
  if verification:
    result["verification"] = _verification_report(
        pair_scorer, dataset, arrays, load,
        seen_in_training=test_ids_seen_in_training)
  if report_dir:
    result["pictures"] = _pictures(
        result, dataset, arrays, report_dir, tensorboard,
        tensorboard_prefix=tensorboard_prefix, multi_query=multi_query,
        rerank=rerank, cuhk03_metric=cuhk03_metric)

  if projector_dir:
    result["projector"] = projector.write_projector(
        projector_dir, *[arrays[key] for key in feature_files.FEATURE_KEYS],
        query_paths=[r.path for r in dataset.query],
        gallery_paths=[r.path for r in dataset.gallery])
  return result


def _cir_report(pair_scorer, dataset, arrays: dict, load: dict, *, cir: str,
                cir_topk: int, max_rank: int,
                sir_extract_seconds: float) -> dict:
  """CIR over every pair ("full") or re-scoring the SIR top-k, with its cost
  beside SIR's."""
  if pair_scorer is None:
    raise ValueError("CIR needs a pair scorer: evaluate a --workdir or a "
                     "--saved_model with a 'verify' signature (a model "
                     "trained with config.loss.ver_weight=0 has no "
                     "verification head, hence none).")
  pairs = len(dataset.query) * len(dataset.gallery)
  if cir == "full" and pairs > FULL_CIR_WARN_PAIRS:
    logging.warning(
        "Full CIR runs the network on %d query-gallery pairs; this takes "
        "long. Use cir_topk=K (--cir_topk=10) to re-score the SIR top-k.",
        pairs)
  t0 = time.perf_counter()
  q_images = embedders.load_images(dataset.query, **load)
  g_images = embedders.load_images(dataset.gallery, **load)
  load_seconds = time.perf_counter() - t0
  report = cir_lib.evaluate_cir(
      pair_scorer, q_images, g_images, *[arrays[k] for k in
                                         feature_files.FEATURE_KEYS[2:]],
      query_features=arrays["query_features"],
      gallery_features=arrays["gallery_features"],
      top_k=None if cir == "full" else cir_topk, max_rank=max_rank,
      batch_size=load["batch_size"])
  del q_images, g_images
  # SIR's full cost includes embedding every image once; CIR's does not
  # include decoding the images (shared work, reported separately).
  report["sir_extract_seconds"] = sir_extract_seconds
  report["image_load_seconds"] = load_seconds
  report["cir_to_sir_time_ratio_with_extraction"] = report["cir_seconds"] / (
      max(report["sir_seconds"] + sir_extract_seconds, 1e-9))
  logging.info("CIR (%s): rank1 %.4f mAP %.4f; %.2f s vs SIR %.2f s "
               "ranking (+%.2f s extraction)", report["mode"],
               report["cir"]["rank1"], report["cir"]["mAP"],
               report["cir_seconds"], report["sir_seconds"],
               sir_extract_seconds)
  return report


def _verification_report(pair_scorer, dataset, arrays: dict, load: dict, *,
                         seen_in_training: Optional[bool]) -> dict:
  """The verification report on the test split's query-gallery pairs.

  Their identities are disjoint from the training split's by the dataset's
  protocol; the SIR features are those the ranking scored (one image each,
  no multi-query pooling); the head decodes only the images of the pairs it
  scores.
  """
  t0 = time.perf_counter()
  head_scores = None
  if pair_scorer is not None:
    def head_scores(qi: np.ndarray, gi: np.ndarray) -> np.ndarray:
      qs, qa = np.unique(qi, return_inverse=True)
      gs, ga = np.unique(gi, return_inverse=True)
      q_images = embedders.load_images([dataset.query[i] for i in qs], **load)
      g_images = embedders.load_images([dataset.gallery[i] for i in gs],
                                       **load)
      return cir_lib.score_pairs(pair_scorer, q_images, g_images,
                                 qa.reshape(-1), ga.reshape(-1),
                                 batch_size=64)
  report = report_lib.split_verification_report(
      *[arrays[key] for key in ("query_features", "gallery_features",
                                "query_pids", "query_camids", "gallery_pids",
                                "gallery_camids")],
      head_scores=head_scores)
  if seen_in_training:
    note = ("pairs = query x gallery images of the test split, as the "
            "ranking scores them; the model trained on these identities "
            "(another split of a repeated-split set), so the thresholds "
            "are optimistic.")
  else:
    note = ("pairs = query x gallery images of the test split, as the "
            "ranking scores them (no junk, no pair of one identity from one "
            "camera); their identities are disjoint from the training "
            "split's by the dataset's protocol.")
  report.update(seen_in_training=seen_in_training, note=note,
                seconds=time.perf_counter() - t0)
  return report


def _scored_rankings(arrays: dict, *, multi_query: bool, rerank: bool,
                     k: int):
  """The rankings the SIR metric scored (feature_files.evaluate_arrays'):
  pooled queries with multi_query, re-ranked distances with rerank, junk
  dropped first. -> (ScoredRankings over the junk-free gallery, the junk-free
  gallery's indices in the dataset, distances to show, what they are)."""
  qf = arrays["query_features"]
  qp, qc = arrays["query_pids"], arrays["query_camids"]
  if multi_query:
    qf = protocols.pool_multi_query(qf, qp, qc)
  keep = np.nonzero(arrays["gallery_pids"] != records.JUNK_PID)[0]
  gf = np.asarray(arrays["gallery_features"])[keep]
  if rerank:
    dist_fn = rerank_lib.reranked_distance_fn(qf, gf)
  else:
    dist_fn = ranking.features_distance_fn(qf, gf)
  rankings = ranking.scored_rankings(
      dist_fn, len(qp), qp, arrays["gallery_pids"][keep], qc,
      arrays["gallery_camids"][keep], k=k)
  if rerank:
    return rankings, keep, rankings.distances, "re-ranked distance"
  # The metric ranks squared distances; the square root is the distance the
  # verification threshold is written in, with the same order.
  return rankings, keep, np.sqrt(rankings.distances), "Euclidean distance"


def _pictures(result: dict, dataset, arrays: dict, report_dir: str,
              tensorboard: Optional[dict], *, tensorboard_prefix: str,
              multi_query: bool, rerank: bool, cuhk03_metric: bool) -> dict:
  """Ranked lists, CMC and ROC PNGs in report_dir (and in `tensorboard`).

  The ranked lists show the rankings the metric scored (`_scored_rankings`)
  of the best, median and worst AP query and a seeded sample.
  """
  rankings, keep, shown, distance_name = _scored_rankings(
      arrays, multi_query=multi_query, rerank=rerank, k=RANKED_LIST_LENGTH)
  gallery = [dataset.gallery[i] for i in keep]
  note = ("CUHK03 classic: the CMC ranks one drawn image per identity; this "
          "is mAP's full gallery" if cuhk03_metric else "")
  rows: list = []
  pictured = visualize.save_ranked_lists(
      [r.path for r in dataset.query], [r.path for r in gallery],
      [r.pid for r in dataset.query], [r.pid for r in gallery],
      [visualize.camera_name(dataset.name, r.camid) for r in dataset.query],
      [visualize.camera_name(dataset.name, r.camid) for r in gallery],
      rankings, os.path.join(report_dir, "ranked_lists"),
      shown_distances=shown, distance_name=distance_name, note=note,
      num_queries=NUM_RANKED_LISTS, images=rows)
  if tensorboard is not None and rows:
    # A query whose filtered gallery is shorter than the others' has a
    # narrower row: pad with white to stack them.
    width = max(row.shape[1] for row in rows)
    tensorboard[f"{tensorboard_prefix}/ranked_lists"] = np.stack([
        np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)),
               constant_values=255) for row in rows])
  pictures = {
      "ranked_lists": [p.path for p in pictured],
      "ranked_list_queries": [
          {"role": p.role, "query": p.query, "ap": p.ap,
           "first_match_rank": p.first_match_rank,
           "gallery": [int(keep[g]) for g in p.gallery],
           "correct": p.correct, "path": p.path}
          for p in pictured],
      "cmc": report_lib.cmc_picture(result, report_dir,
                                    f"CMC {dataset.name}", tensorboard,
                                    tag_prefix=tensorboard_prefix)}
  roc = report_lib.roc_picture(result.get("verification", {}), report_dir,
                               tensorboard, tag_prefix=tensorboard_prefix)
  if roc:
    pictures["roc"] = roc
  return pictures


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
                         batch_size: int = 128,
                         cuhk03_metric: Optional[bool] = None,
                         projector: bool = False,
                         flip_test: bool = False) -> dict:
  """Evaluates an exported SavedModel (serving_default, optional verify).

  Args:
    saved_model: the version folder (<export_base>/<version>).
    dataset, root, options: the dataset to read (datasets.load_dataset).
    split / splits: as in `run_evaluation.evaluate_run` (splits: see the warning there).
    image_size: (height, width) fed to the model; default: the export's
      assets.extra/export_info.json or its signature.
    output_json: default ./eval.json.
    projector: write the (first) split's embeddings for TensorBoard's
      projector into <report_dir>/projector (`tensorboard --logdir` there).
    Others: see `run_evaluation.evaluate_run`. CIR and the head's verification use the
      "verify" signature when the SavedModel has one.

  Returns:
    The report dict, also written to output_json.
  """
  embedder = embedders.load_saved_model(saved_model)
  size = embedder.image_size
  if image_size:
    size = tuple(int(v) for v in image_size)
  if None in size:
    raise ValueError(
        f"SavedModel {saved_model!r} does not record its input size; give "
        "image_size=(HEIGHT, WIDTH) (--image_size=HEIGHT,WIDTH).")
  opts = from_config.parse_options(options or "", dataset)
  if cuhk03_metric is None:
    cuhk03_metric = protocols.is_cuhk03_classic(dataset, opts) and not rerank
  output_json = output_json or "eval.json"
  projector_dir = os.path.join(
      report_dir or report_lib.default_report_dir(output_json),
      "projector") if projector else None
  report_dir = (report_dir or report_lib.default_report_dir(output_json)
                ) if pictures else None
  pair_scorer = (embedder.pair_scorer if (cir or cir_topk or verification)
                 else None)

  embed = (embedders.flip_averaged(embedder.embed) if flip_test
           else embedder.embed)

  def one(s: int, first: bool) -> dict:
    data = datasets.load_dataset(dataset, root or "", split=s, **opts)
    return evaluate_dataset(
        embed, data, image_size=size, normalization="none",
        batch_size=batch_size, pair_scorer=pair_scorer, max_rank=max_rank,
        multi_query=multi_query, rerank=rerank, cir=cir, cir_topk=cir_topk,
        verification=verification and first,
        report_dir=report_dir if first else None,
        cuhk03_metric=cuhk03_metric,
        projector_dir=projector_dir if first else None)

  if splits:
    report_lib.warn_splits("SavedModel", splits, None)
    result = report_lib.evaluate_splits(one, list(splits))
  else:
    result = one(split, True)
    result["split"] = split
  result["saved_model"] = os.path.abspath(saved_model)
  result["flip_test"] = flip_test
  return report_lib.finish(result, output_json)
