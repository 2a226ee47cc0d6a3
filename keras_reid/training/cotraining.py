"""Unsupervised transfer rounds: self-training, co-training, clustering.

A stage with `supervision` "self_training" or "cotraining" trains on an
unlabelled two-camera target, one with "clustering" on an unlabelled target
with any number of cameras: its identities are never read for training.
Each of its `rounds` rounds

  1. evaluates the current model on the target's query / gallery (the
     model that makes this round's labels: round 0 is direct transfer),
  2. extracts SIR features Y of every target training image,
  3. makes pseudo labels with keras_reid.unsupervised: every camera-A image
     is its own class; each camera-B image is labelled by its nearest
     camera-A images (hard: the nearest, soft: a distribution over the
     top m), in Y for self-training, in the codes Z of graph-regularised
     dictionary learning on the cross-camera kNN graph of Y for
     co-training (warm-started from the previous round's dictionary, or
     fitted afresh with unsupervised.refit_dictionary); with
     unsupervised.l2_normalize the neighbours are those of the
     L2-normalised features / codes;
     for clustering, groups of Y are the classes and the images in no
     group are left out of the round (keras_reid.unsupervised.clustering:
     DBSCAN on the k-reciprocal Jaccard distance, or cross-camera mutual
     nearest-neighbour pairs with unsupervised.cluster_method "mutual_nn";
     optionally of camera-centred Y),
  4. replaces the classifiers (num_A classes) and fine-tunes two-stepped
     (the stage's step1 / step2 settings) with classification on the
     (soft) labels and verification on pairs from them (K x M batches
     grouped by label; off with unsupervised.verification_pairs "none"); a clustering round with
     config.loss.cluster_memory_weight > 0 also trains on the InfoNCE loss
     over a memory of its cluster centroids (training.cluster_memory,
     checkpointed with the step). With unsupervised.source_dataset a
     clustering round also trains labelled identities of a source set,
     drawn per round, as classes after its groups (their centroids in the
     memory): SpCL's source classes.

Each round fine-tunes in two steps like a stage; progress.json lists a
round's steps under stage "<stage>/round<r>" (checkpoints in
checkpoints/<stage>/round<r>/step<n>), and each round's labels are saved
atomically in cotrain/<stage>/round<r>.npz before its training starts, so
a killed run resumes mid-round with the same labels.
The hidden identities serve only `label_accuracy` (TensorBoard
cotrain/label_accuracy, cotrain/<stage>/round<r>.json), for clustering
`clustering.cluster_quality` (TensorBoard cotrain/cluster_*, the same
file), and the evaluation.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import sys
from typing import Callable, Sequence

from absl import logging
import keras
import numpy as np
import tensorflow as tf
from ml_collections import config_dict
import sklearn.preprocessing

from keras_reid import config as config_lib
from keras_reid import losses
from keras_reid import progress
from keras_reid import runs
from keras_reid.data import records as records_lib
from keras_reid.evaluation import embedders
from keras_reid.models import builders
from keras_reid.training import cluster_memory
from keras_reid.training import loop
from keras_reid.training import runner
from keras_reid.training import stage_setup
from keras_reid.unsupervised import clustering
from keras_reid.unsupervised import graph
from keras_reid.unsupervised import grdl
from keras_reid.unsupervised import pseudo_labels

# stage.supervision: where a stage's training labels come from.
#   "labels": the dataset's identities (supervised);
#   "self_training": pseudo labels from nearest camera-A neighbours in the
#     model's feature space (the baseline; alone it drifts);
#   "cotraining": the same in the GRDL code space (the complementary model);
#   "clustering": groups of the features (DBSCAN clusters or cross-camera
#     mutual pairs), the images in no group unlabelled.
SUPERVISIONS = ("labels", "self_training", "cotraining", "clustering")
# stage.unsupervised.pseudo_labels: "soft" (top-m distribution) or "hard".
PSEUDO_LABELS = ("soft", "hard")
# stage.unsupervised.verification_pairs: the pairs of the pseudo-labelled
# batches the verification loss trains on in the rounds. "all": every pair
# (as a labelled stage); "none": config.loss.ver_weight is 0 in the rounds.
# From the reid_pool model's VIPeR labels (bench/cotraining_results.md) about
# half the classes hold only their camera-A image (a positive pair is then
# one image twice) and most other positives are two different people.
VERIFICATION_PAIRS = ("all", "none")


def check_stage(name: str, stage: config_dict.ConfigDict,
                config: config_dict.ConfigDict) -> None:
  """Validates a stage's supervision settings: names and key combinations.

  The numeric keys' own ranges (rounds, soft_top_m, soft_temperature,
  camera_a, graph_k, grdl_*, cluster_*, memory_momentum,
  loss.cluster_memory_temperature) are keras_reid.config_ranges', checked
  before this (keras_reid.config.validate_config).

  Raises:
    ValueError: naming the key, the value and what was expected.
  """
  def expect(ok: bool, key: str, expected: str) -> None:
    if not ok:
      raise ValueError(f"config.stages.{name}.{key}={stage[key]!r}: "
                       f"expected {expected}.")

  expect(stage.supervision in SUPERVISIONS, "supervision",
         f"one of {list(SUPERVISIONS)}")
  if not config_lib.is_unsupervised(stage):
    return
  if stage.step1_iterations + stage.step2_iterations <= 0:
    raise ValueError(
        f"config.stages.{name}: supervision={stage.supervision!r} fine-tunes "
        "step1_iterations + step2_iterations iterations per round, but both are 0; "
        "set --config.stages.<name>.step2_iterations (per round).")
  expect(stage.unsupervised.pseudo_labels in PSEUDO_LABELS, "unsupervised.pseudo_labels",
         f"one of {list(PSEUDO_LABELS)}")
  expect(stage.unsupervised.verification_pairs in VERIFICATION_PAIRS,
         "unsupervised.verification_pairs", f"one of {list(VERIFICATION_PAIRS)}")
  if stage.unsupervised.source_dataset and stage.supervision != "clustering":
    raise ValueError(
        f"config.stages.{name}.unsupervised.source_dataset="
        f"{stage.unsupervised.source_dataset!r} with supervision="
        f"{stage.supervision!r}: source classes train beside clustering "
        f"groups only; set --config.stages.{name}.supervision=clustering or "
        f"--config.stages.{name}.unsupervised.source_dataset=''.")
  if stage.supervision == "clustering":
    expect(stage.unsupervised.cluster_method in clustering.METHODS,
           "unsupervised.cluster_method", f"one of {list(clustering.METHODS)}")
    if (stage.unsupervised.cluster_method not in clustering.PAIR_METHODS
        and stage.unsupervised.cluster_keep_fraction != 1.0):
      raise ValueError(
          f"config.stages.{name}.unsupervised.cluster_keep_fraction="
          f"{stage.unsupervised.cluster_keep_fraction!r} with cluster_method="
          f"{stage.unsupervised.cluster_method!r}: only "
          f"{' and '.join(clustering.PAIR_METHODS)} keep a fraction of their "
          f"pairs; set --config.stages.{name}.unsupervised."
          "cluster_keep_fraction=1.0 or cluster_method=mutual_nn.")
    return  # hard labels: the triplet loss applies
  if stage.unsupervised.pseudo_labels == "soft" and config.loss.triplet_weight > 0:
    raise ValueError(
        f"config.stages.{name}.unsupervised.pseudo_labels='soft' with "
        f"config.loss.triplet_weight={config.loss.triplet_weight}: the "
        "triplet loss needs one class per image; set "
        f"--config.stages.{name}.unsupervised.pseudo_labels=hard or "
        "--config.loss.triplet_weight=0.")


@dataclasses.dataclass
class RoundLabels:
  """One round's pseudo labels and what made them.

  Attributes:
    labels: int64 [N] (hard) or float32 [N, num_A] (soft) over the stage's
      training records, in record order; clustering: int64 [N] cluster ids,
      clustering.OUTLIER (-1) for the images the round leaves out.
    is_a: bool [N], camera-A images (class c = the c-th of them); all False
      for clustering (no camera has a role).
    dictionary: [dim, atoms] float64 GRDL dictionary (co-training), the
      next round's warm start; None for self-training.
    objective: GRDL objective at the start and after each iteration ([]
      for self-training).
    centroids: float32 [C, dim] (clustering): the normalised mean feature
      of each cluster, the cluster memory's start; None otherwise. With
      source classes [C + S, dim]: the clusters', then the source
      identities'.
    source_pids: int64 [S] sorted (clustering with
      unsupervised.source_dataset): the source identities drawn for the
      round; class C + i is source_pids[i]. None without a source.
  """
  labels: np.ndarray
  is_a: np.ndarray
  dictionary: np.ndarray | None
  objective: list[float]
  centroids: np.ndarray | None = None
  source_pids: np.ndarray | None = None

  @property
  def num_classes(self) -> int:
    """The classes the round trains: clusters (and source identities), or
    camera-A images."""
    if self.centroids is not None:
      return int(self.centroids.shape[0])
    return int(self.is_a.sum())

  @property
  def num_source_classes(self) -> int:
    return 0 if self.source_pids is None else len(self.source_pids)

  @property
  def kept(self) -> np.ndarray:
    """bool [N]: the images the round trains on (not outliers)."""
    if self.labels.ndim == 1:
      return self.labels != clustering.OUTLIER
    return np.ones(self.labels.shape[0], bool)


def make_labels(features: np.ndarray, camids: np.ndarray,
                stage: config_dict.ConfigDict, *, seed: int = 0,
                init_dictionary: np.ndarray | None = None,
                callback: Callable[[int, float], None] | None = None
                ) -> RoundLabels:
  """Pseudo labels of one round from the model's features (NumPy only).

  Args:
    features: [N, dim] SIR features of the training images (record order).
    camids: [N] their camera ids; stage.unsupervised.camera_a is camera A.
    stage: the stage config (supervision; unsupervised.pseudo_labels,
      soft_top_m, soft_temperature, l2_normalize, graph_k, grdl_lambda,
      grdl_atoms, grdl_iterations; for clustering cluster_eps, cluster_min_samples,
      cluster_k1, cluster_k2, cluster_camera_weight, cluster_method,
      cluster_camera_centring, cluster_keep_fraction).
    seed: GRDL's initial dictionary draw when there is no warm start.
    init_dictionary: [dim, atoms] warm start (the previous round's).
    callback: GRDL's callback(iteration, objective).

  Returns:
    RoundLabels.

  Raises:
    clustering.NoClusterError: clustering found no cluster (names eps and
      min_samples).
  """
  if stage.supervision == "clustering":
    u = stage.unsupervised
    clusters = clustering.cluster_features(
        features, camids, eps=u.cluster_eps, min_samples=u.cluster_min_samples,
        k1=u.cluster_k1, k2=u.cluster_k2, camera_weight=u.cluster_camera_weight,
        method=u.cluster_method, camera_centring=u.cluster_camera_centring,
        keep_fraction=u.cluster_keep_fraction)
    return RoundLabels(clusters.labels, np.zeros(len(clusters.labels), bool),
                       None, [], clusters.centroids)
  is_a = graph.camera_a_mask(camids, stage.unsupervised.camera_a)
  space, dictionary, history = features, None, []
  if stage.supervision == "cotraining":
    lap = graph.laplacian(graph.cross_camera_knn_graph(
        features, is_a, k=stage.unsupervised.graph_k))
    result = grdl.grdl(features, lap, stage.unsupervised.grdl_atoms,
                       stage.unsupervised.grdl_lambda,
                       max_iter=stage.unsupervised.grdl_iterations, seed=seed,
                       init_dictionary=init_dictionary, callback=callback)
    space, dictionary, history = (result.codes, result.dictionary,
                                  list(result.objective))
  if stage.unsupervised.l2_normalize:  # cosine neighbours in the label space
    space = sklearn.preprocessing.normalize(space)
  if stage.unsupervised.pseudo_labels == "hard":
    labels = pseudo_labels.hard_pseudo_labels(space, is_a)
  else:
    labels = pseudo_labels.soft_pseudo_labels(
        space, is_a, top_m=stage.unsupervised.soft_top_m,
        temperature=stage.unsupervised.soft_temperature)
  return RoundLabels(labels, is_a, dictionary, history)


def first_image_split(pids) -> np.ndarray:
  """Camera A / B of a labelled set for cross-validating the labelling.

  Each identity's first image (in record order) is its camera-A image and
  its other images are camera B: the target's structure (one class per
  camera-A image, camera-B images labelled by their nearest ones) on a set
  whose cameras may be unknown (reid_pool's i-LIDS, CAVIAR4REID and 3DPeS
  images have camid -1). Identities with one image stay in camera A
  (distractor classes).

  Args:
    pids: [N] identities.

  Returns:
    is_a: bool [N].
  """
  pids = np.asarray(pids)
  _, first = np.unique(pids, return_index=True)
  is_a = np.zeros(pids.shape[0], bool)
  is_a[first] = True
  return is_a


def cross_validate_lambda(features: np.ndarray, pids,
                          stage: config_dict.ConfigDict,
                          lambdas: Sequence[float], *, seed: int = 0,
                          callback: Callable[[dict], None] | None = None
                          ) -> dict:
  """Picks GRDL's lambda on a labelled (source) set by pseudo-label accuracy.

  Splits the set with `first_image_split`, makes co-training labels with
  each lambda and the stage's other settings (unsupervised.graph_k,
  grdl_atoms, grdl_iterations, pseudo_labels, soft_top_m, soft_temperature,
  l2_normalize) and scores
  them against the true identities (`pseudo_labels.label_accuracy`); the
  self-training labels (feature space, no GRDL) are scored as the baseline.

  Args:
    features: [N, dim] SIR features of the labelled images.
    pids: [N] their identities.
    stage: the unsupervised stage's config.
    lambdas: candidate values (>= 0).
    seed: GRDL's initial dictionary draw (the same for every lambda).
    callback: called with each row as it is scored (progress).

  Returns:
    {"rows": [{"lambda" (None = self-training), "accuracy", "soft_mass",
    "reachable", "objective"}, ...], "best_lambda": the lambda of the
    highest accuracy (then soft mass; the smaller lambda on a tie),
    "num_a", "num_b"}.
  """
  if not lambdas or min(lambdas) < 0:
    raise ValueError(f"lambdas={list(lambdas)}: expected one or more values "
                     ">= 0, e.g. 0.001,0.01,0.1.")
  is_a = first_image_split(pids)
  if is_a.all():
    raise ValueError("every identity of the labelled set has one image: "
                     "no camera-B image to label; cross-validation needs "
                     "identities with two or more images.")
  camids = np.where(is_a, 0, 1)
  rows = []
  for lam in [None, *lambdas]:
    trial = stage.copy_and_resolve_references()
    trial.unsupervised.camera_a = 0
    trial.supervision = "self_training" if lam is None else "cotraining"
    if lam is not None:
      trial.unsupervised.grdl_lambda = float(lam)
    labels = make_labels(features, camids, trial, seed=seed)
    row = {"lambda": lam, **pseudo_labels.label_accuracy(
        labels.labels, pids, labels.is_a),
           "objective": labels.objective[-1] if labels.objective else None}
    rows.append(row)
    if callback:
      callback(row)
  scored = [r for r in rows if r["lambda"] is not None]
  best = max(scored, key=lambda r: (r["accuracy"], r["soft_mass"],
                                    -r["lambda"]))
  return {"rows": rows, "best_lambda": best["lambda"],
          "num_a": int(is_a.sum()), "num_b": int((~is_a).sum())}


def save_labels(path: str, labels: RoundLabels, paths: list[str]) -> None:
  """Writes a round's labels atomically (temp file + os.replace)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  arrays = dict(labels=labels.labels, is_a=labels.is_a,
                objective=np.asarray(labels.objective, np.float64),
                paths=np.asarray(paths))
  if labels.dictionary is not None:
    arrays["dictionary"] = labels.dictionary
  if labels.centroids is not None:
    arrays["centroids"] = labels.centroids
  if labels.source_pids is not None:
    arrays["source_pids"] = labels.source_pids
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(buffer.getvalue())
  os.replace(tmp, path)


def load_labels(path: str, paths: list[str]) -> RoundLabels:
  """Reads save_labels' file; refuses one made for other images."""
  with np.load(path) as data:
    if data["paths"].tolist() != list(paths):
      raise ValueError(
          f"{path} holds pseudo labels of other training images than this "
          "stage's (the dataset changed since the run started); move it "
          "away to recompute them, or pass a new --workdir.")
    return RoundLabels(
        labels=data["labels"], is_a=data["is_a"],
        dictionary=data["dictionary"] if "dictionary" in data else None,
        objective=data["objective"].tolist(),
        centroids=data["centroids"] if "centroids" in data else None,
        source_pids=data["source_pids"] if "source_pids" in data else None)


def warm_start_dictionary(previous: str, stage: config_dict.ConfigDict,
                          round_index: int, paths: list[str],
                          dim: int) -> np.ndarray | None:
  """GRDL's start dictionary for co-training round `round_index`.

  Args:
    previous: the previous round's labels file (save_labels').
    stage: the stage config (supervision, unsupervised.refit_dictionary,
      grdl_atoms).
    round_index: r (1-based).
    paths: the stage's training image paths (load_labels' check).
    dim: the feature dimension.

  Returns:
    [dim, grdl_atoms] the previous round's dictionary; None (a fresh
    random draw) in round 1, for self-training, with refit_dictionary, when
    the file is missing or its dictionary has another shape.
  """
  if (stage.supervision != "cotraining" or round_index <= 1
      or stage.unsupervised.refit_dictionary or not os.path.exists(previous)):
    return None
  warm = load_labels(previous, paths).dictionary
  if warm is None or warm.shape != (dim, stage.unsupervised.grdl_atoms):
    return None
  return warm


def draw_source_identities(source_pids: Sequence[int], count: int,
                           seed: int) -> np.ndarray:
  """int64 [S] sorted: `count` distinct identities of `source_pids` (the
  source's training pids, repeats allowed), drawn by `seed`; all of them
  when there are no more than `count`."""
  pids = np.unique(np.asarray(source_pids, np.int64))
  if count >= len(pids):
    return pids
  return np.sort(np.random.default_rng(seed).choice(pids, count,
                                                    replace=False))


def identity_centroids(features: np.ndarray, pids: Sequence[int],
                       drawn: np.ndarray) -> np.ndarray:
  """float32 [S, dim]: the L2-normalised mean feature of each drawn
  identity's images (features [N, dim] in the order of pids [N]), in the
  order of `drawn`, as clustering.Clusters.centroids are of a cluster's."""
  pids = np.asarray(pids)
  means = np.stack([features[pids == pid].mean(axis=0) for pid in drawn])
  return sklearn.preprocessing.normalize(means).astype(np.float32)


def add_source_classes(labels: RoundLabels, drawn: np.ndarray,
                       centroids: np.ndarray) -> RoundLabels:
  """A clustering round's labels with `drawn` source identities as classes
  C .. C + S - 1 after its C clusters (centroids [S, dim] appended)."""
  return dataclasses.replace(
      labels, centroids=np.concatenate([labels.centroids, centroids]),
      source_pids=drawn)


def source_training_labels(labels: RoundLabels,
                           source_records: list[records_lib.Record],
                           labels_path: str) -> tuple[list, np.ndarray]:
  """(the source records of the round's drawn identities, their int64
  classes C + i); ([], []) without a source.

  Raises:
    ValueError: a drawn identity is not in the source's training set (the
      source changed since `labels_path` was written).
  """
  if labels.source_pids is None:
    return [], np.zeros(0, np.int64)
  drawn = labels.source_pids
  wanted = set(drawn.tolist())
  records = [r for r in source_records if r.pid in wanted]
  missing = sorted(wanted - {r.pid for r in records})
  if missing:
    raise ValueError(
        f"{labels_path} trains source identities {missing[:5]} that the "
        "source set (unsupervised.source_dataset / source_root) no longer "
        "has; move the file away to draw them again, or pass a new "
        "--workdir.")
  first = labels.num_classes - labels.num_source_classes
  classes = first + np.searchsorted(drawn, [r.pid for r in records])
  return records, classes.astype(np.int64)


def extract_features(model: keras.Model, records: list[records_lib.Record],
                     config: config_dict.ConfigDict, *, flip: bool = False,
                     progress_label: str = "Embedding") -> np.ndarray:
  """[N, dim] float32 SIR features of `records` by the model's backbone;
  with `flip` the mean of each image's and its mirror image's."""
  embed = builders.embedding_function(model)
  if flip:
    embed = embedders.flip_averaged(embed)
  return embedders.extract_features(
      embed, records,
      image_size=(config.data.image_height, config.data.image_width),
      normalization=builders.normalization_for(config.model),
      batch_size=config.data.eval_batch_size, progress_label=progress_label)


def _round_seed(config: config_dict.ConfigDict, stage_index: int,
                round_index: int) -> int:
  return config.seed + 1000 * stage_index + 100 * round_index


def _evaluate_before_round(run: runner.TrainingRun, name: str,
                           round_index: int, model: keras.Model,
                           evaluate: Callable[[keras.Model], dict]) -> None:
  """Evaluates the model that makes round `round_index`'s labels (before
  round 1: direct transfer); eval/<stage>/round<r-1>.json."""
  metrics = evaluate(model)
  loop.write_eval_summaries(run.writer, metrics, run.iterations_done)
  runs.write_json(runs.round_eval_path(run.workdir, name, round_index - 1),
                  metrics)
  logging.info("Stage %s before round %d: rank1 %.4f, mAP %.4f", name,
               round_index, metrics.get("rank1", float("nan")),
               metrics.get("mAP", float("nan")))


def _make_round_labels(run: runner.TrainingRun, name: str,
                       stage: config_dict.ConfigDict, round_index: int,
                       model: keras.Model, records: list[records_lib.Record],
                       seed: int,
                       source_records: list[records_lib.Record] | None
                       ) -> RoundLabels:
  """Labels round `round_index` from `model`'s features (with source
  classes when `source_records`, the labelled source's training records,
  are given); saves them and reports their accuracy against the hidden
  identities (monitoring only)."""
  r = round_index
  paths = [rec.path for rec in records]
  camids = np.asarray([rec.camid for rec in records])
  features = extract_features(
      model, records, run.config, flip=stage.unsupervised.flip_features,
      progress_label=f"Stage {name!r} round {r}: embedding the training set")
  warm = warm_start_dictionary(
      runs.round_labels_path(run.read_dir, name, r - 1), stage, r, paths,
      features.shape[1])

  # GRDL may stop before its last iteration (converged); the lines stop there.
  grdl_progress = progress.make_progress(
      stage.unsupervised.grdl_iterations, "GRDL iterations",
      label=f"Stage {name!r} round {r}: labelling", stream=sys.stderr,
      delay=progress.SLOW_SECONDS)

  def grdl_callback(iteration: int, value: float) -> None:
    grdl_progress.update(iteration, [("objective", value)])
    with run.writer.as_default(step=iteration):
      tf.summary.scalar(f"cotrain/{name}/round{r}/grdl_objective", value)

  labels = make_labels(features, camids, stage, seed=seed,
                       init_dictionary=warm, callback=grdl_callback)
  if labels.objective:
    with run.writer.as_default(step=0):
      tf.summary.scalar(f"cotrain/{name}/round{r}/grdl_objective",
                        labels.objective[0])
  if source_records:
    labels = _with_source_classes(run, name, stage, r, model, labels,
                                  source_records, seed)
  save_labels(runs.round_labels_path(run.workdir, name, r), labels, paths)
  if stage.supervision == "clustering":
    _report_clusters(run, name, stage, r, labels, records)
    return labels
  # Monitoring only: the hidden identities never reach training.
  accuracy = pseudo_labels.label_accuracy(
      labels.labels, [rec.pid for rec in records], labels.is_a)
  with run.writer.as_default(step=run.iterations_done):
    tf.summary.scalar("cotrain/label_accuracy", accuracy["accuracy"])
    tf.summary.scalar("cotrain/label_soft_mass", accuracy["soft_mass"])
    tf.summary.scalar("cotrain/label_reachable", accuracy["reachable"])
  runs.write_json(runs.round_label_report_path(run.workdir, name, r),
                  dict(accuracy, supervision=stage.supervision,
                       pseudo_labels=stage.unsupervised.pseudo_labels,
                       grdl_objective=labels.objective))
  print(f"Stage {name!r} round {r}: pseudo-label accuracy "
        f"{100 * accuracy['accuracy']:.1f}% (camera B; "
        f"{100 * accuracy['reachable']:.1f}% reachable)", flush=True)
  return labels


def _with_source_classes(run: runner.TrainingRun, name: str,
                         stage: config_dict.ConfigDict, r: int,
                         model: keras.Model, labels: RoundLabels,
                         source_records: list[records_lib.Record],
                         seed: int) -> RoundLabels:
  """Round r's clusters plus the source identities it draws, with their
  centroids from `model`'s features (as the clusters')."""
  u = stage.unsupervised
  drawn = draw_source_identities(
      [rec.pid for rec in source_records],
      u.source_identities or labels.num_classes, seed)
  wanted = set(drawn.tolist())
  chosen = [rec for rec in source_records if rec.pid in wanted]
  features = extract_features(
      model, chosen, run.config, flip=u.flip_features,
      progress_label=f"Stage {name!r} round {r}: embedding the source")
  print(f"Stage {name!r} round {r}: {len(drawn)} source identities "
        f"({len(chosen)} images) beside {labels.num_classes} groups",
        flush=True)
  return add_source_classes(labels, drawn, identity_centroids(
      features, [rec.pid for rec in chosen], drawn))


def _report_clusters(run: runner.TrainingRun, name: str,
                     stage: config_dict.ConfigDict, r: int,
                     labels: RoundLabels,
                     records: list[records_lib.Record]) -> None:
  """Cluster quality against the hidden identities (monitoring only):
  TensorBoard cotrain/cluster_* and cotrain/<stage>/round<r>.json."""
  quality = clustering.cluster_quality(labels.labels,
                                       [rec.pid for rec in records])
  with run.writer.as_default(step=run.iterations_done):
    for key in ("num_clusters", "num_outliers", "pairwise_precision",
                "pairwise_recall", "pairwise_f1", "purity"):
      tf.summary.scalar(f"cotrain/cluster_{key}", quality[key])
  u = stage.unsupervised
  runs.write_json(runs.round_label_report_path(run.workdir, name, r), dict(
      quality, supervision=stage.supervision, round=r,
      cluster_eps=u.cluster_eps, cluster_min_samples=u.cluster_min_samples,
      cluster_k1=u.cluster_k1, cluster_k2=u.cluster_k2,
      cluster_camera_weight=u.cluster_camera_weight,
      cluster_method=u.cluster_method,
      cluster_camera_centring=u.cluster_camera_centring,
      cluster_keep_fraction=u.cluster_keep_fraction))
  print(f"Stage {name!r} round {r}: {quality['num_clusters']} clusters, "
        f"{quality['num_outliers']} outliers of {len(records)} images; "
        f"pairwise precision {100 * quality['pairwise_precision']:.1f}%, "
        f"recall {100 * quality['pairwise_recall']:.1f}%", flush=True)


def _check_batchable(name: str, stage: config_dict.ConfigDict, r: int,
                     labels: RoundLabels) -> None:
  """A clustering round needs ids_per_batch clusters for its K x M batches."""
  if labels.num_classes < stage.ids_per_batch:
    u = stage.unsupervised
    outliers = int((~labels.kept).sum())
    if u.cluster_method == "mutual_nn":
      found = (f"cross-camera mutual nearest neighbours gave "
               f"{labels.num_classes} pairs ({outliers} images unpaired, "
               f"cluster_keep_fraction={u.cluster_keep_fraction})")
      fix = (f" or raise --config.stages.{name}.unsupervised."
             "cluster_keep_fraction" if u.cluster_keep_fraction < 1 else "")
    else:
      found = (f"DBSCAN found {labels.num_classes} clusters (eps="
               f"{u.cluster_eps}, min_samples={u.cluster_min_samples}, "
               f"{outliers} outliers)")
      fix = f" or raise --config.stages.{name}.unsupervised.cluster_eps"
    raise ValueError(
        f"Stage {name!r} round {r}: {found}, fewer than ids_per_batch="
        f"{stage.ids_per_batch} identities per batch: lower "
        f"--config.stages.{name}.ids_per_batch{fix}.")


def _memory_factory(config: config_dict.ConfigDict,
                    stage: config_dict.ConfigDict, labels: RoundLabels):
  """step -> the cluster memory of a clustering round's step, initialised
  from the round's centroids; None where the cluster-memory loss is off in
  the step (weight 0, or step 1: it trains the base)."""
  def make(step: loop.FineTuningStep):
    weights = losses.step_settings(config.loss, step.step,
                                   verifiers_train=step.all_heads)
    if (stage.supervision != "clustering"
        or weights["cluster_memory_weight"] <= 0):
      return None
    return cluster_memory.ClusterMemory(
        labels.centroids, stage.unsupervised.memory_momentum)
  return make


def round_config(config: config_dict.ConfigDict,
                 stage: config_dict.ConfigDict) -> config_dict.ConfigDict:
  """The config a round's fine-tuning steps train with: `config`, with
  config.loss.ver_weight 0 when unsupervised.verification_pairs is "none"
  (a copy; `config` is not changed)."""
  if stage.unsupervised.verification_pairs == "all":
    return config
  config = config.copy_and_resolve_references()
  config.loss.ver_weight = 0.0
  return config


def run_stage(run: runner.TrainingRun, *, name: str,
              stage: config_dict.ConfigDict, stage_index: int,
              dataset: records_lib.ReidDataset,
              evaluate: Callable[[keras.Model], dict] | None,
              source: records_lib.ReidDataset | None = None) -> None:
  """Runs (or resumes) the rounds of an unsupervised stage.

  Each round is a key "<stage>/round<r>" run by runner.run_steps with the
  round's pseudo labels as its labels and num_A classes.

  Args:
    run: the running run (its model, progress and iteration count advance).
    name, stage, stage_index: the stage (config.stages[name], its index).
    dataset: its dataset; train's paths and camids are read for training,
      its pids only by label_accuracy (monitoring).
    evaluate: model -> metrics on the target's query / gallery, or None.
    source: the labelled source set of unsupervised.source_dataset (its
      training records and pids are read), or None.
  """
  config = run.config
  source_records = list(source.train) if source is not None else None
  records = list(dataset.train)
  paths = [r.path for r in records]
  clusters = stage.supervision == "clustering"
  if clusters:  # classes: the clusters of each round; any cameras
    num_a = 1  # only to build round 1's start model for its features
    logging.info("Stage %s (clustering): %d training images, %d rounds.",
                 name, len(records), stage.unsupervised.rounds)
  else:
    is_a = graph.camera_a_mask(np.asarray([r.camid for r in records]),
                               stage.unsupervised.camera_a)
    num_a = int(is_a.sum())
    logging.info("Stage %s (%s): %d camera-A images (classes), %d camera-B "
                 "images, %d rounds.", name, stage.supervision, num_a,
                 int((~is_a).sum()), stage.unsupervised.rounds)

  def start_model(model: keras.Model | None, r: int, seed: int,
                  num_classes: int) -> keras.Model:
    # The stage's start model (round 1) or the last round's, with fresh
    # classifiers for this round's classes, drawn from the round's seed so
    # that a resumed process draws the same ones.
    keras.utils.set_random_seed(seed)
    if r == 1:
      return stage_setup.init_stage_model(model, stage, config, num_classes)
    return stage_setup.new_classifiers(model, config, num_classes)

  all_heads = stage_setup.step1_trains_all_heads(stage, stage_index)
  for r in range(1, stage.unsupervised.rounds + 1):
    key = runs.round_key(name, r)
    steps = loop.stage_steps(key, stage, all_heads=all_heads and r == 1)
    if run.all_finished(steps):
      run.skip(steps)
      continue
    seed = _round_seed(config, stage_index, r)
    saved = runs.round_labels_path(run.read_dir, name, r)
    start = functools.partial(start_model, r=r, seed=seed, num_classes=num_a)
    initialised = False
    if os.path.exists(saved):
      round_labels = load_labels(saved, paths)
    else:
      labeller = None
      if r == 1 and not run.progress.has_started(key):
        # Round 1's labels come from the stage's start model: build it now
        # and train it as is. A clustering round's class count is known
        # only after its labels: the model that trains is built afterwards
        # (as a resumed process builds it).
        with run.strategy.scope():
          labeller = start(run.latest_model())
        if not clusters:
          run.model, initialised = labeller, True
      if labeller is None:
        labeller = run.latest_model()
      if evaluate is not None:
        with run.clock.phase("evaluation"):
          _evaluate_before_round(run, name, r, labeller, evaluate)
      with run.clock.phase("pseudo_labels"):
        round_labels = _make_round_labels(run, name, stage, r, labeller,
                                          records, seed, source_records)
    if clusters:
      _check_batchable(name, stage, r, round_labels)
      start = functools.partial(start_model, r=r, seed=seed,
                                num_classes=round_labels.num_classes)
    # The round trains on its labelled images (outliers left out) and the
    # images of its source identities.
    kept = round_labels.kept
    extra, extra_labels = source_training_labels(round_labels,
                                                 source_records or [], saved)
    round_dataset = dataclasses.replace(
        dataset, train=[rec for rec, k in zip(records, kept) if k] + extra)
    train_labels = round_labels.labels[kept]
    if extra:
      train_labels = np.concatenate([train_labels, extra_labels])
    runner.run_steps(
        run, steps, num_classes=round_labels.num_classes,
        make_dataset=lambda step, labels=train_labels, seed=seed,
        data=round_dataset: (
            stage_setup.train_dataset_fn(data, stage, config,
                                         seed + step.step, labels=labels)),
        start_model=(lambda model: model) if initialised else start,
        evaluate=evaluate,
        make_memory=_memory_factory(config, stage, round_labels),
        config=round_config(config, stage))
