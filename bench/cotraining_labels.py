"""Pseudo-label quality of co-training's variants, without training.

    REID_DATA_ROOT=/work/shared/data python bench/cotraining_labels.py \
        --source_run=runs/reproduce/pool_mobilenet_v1_0.5 --splits=0,1,2,3,4 \
        [--previous_run=runs/reproduce/staged_method/split{split}]

Restores a finished labelled run (the source model of an unsupervised
stage), extracts its features of the VIPeR training split (the viper stage
of configs/viper_cotrain_cpu.py, camid 0 = camera A) and prints, averaged
over --splits, how well each way of making pseudo labels names the hidden
identities of camera B (`pseudo_labels.label_accuracy`: monitoring only,
nothing here trains):

  (a) the label space: the features Y (self-training), GRDL codes Z as
      today (raw, Euclidean) and L2-normalised codes, at each --lambdas;
  (b) GRDL warm-started from a dictionary fitted to another network's
      features (--previous_run, e.g. a VIPeR-fine-tuned run of the same
      model, a stand-in for the previous round's) vs fitted fresh;
  (c) soft labels: the mass on the right identity and the mean top-label
      probability at temperature 1, lower ones, and the temperature that
      makes the top label's mean probability equal its accuracy on the
      SOURCE's labelled training images (calibrated there, never on VIPeR);
  (d) the verification pairs the K x M batches draw from the argmax labels
      (every class = a camera-A image and the camera-B images labelled
      with it, M images of a class drawn uniformly): the fraction of
      positive pairs of two different people, of classes that hold only
      their camera-A image (positives = two augmentations of one image),
      and the same when only confident camera-B labels join a class
      (mutual nearest neighbours, or top probability >= --threshold);
  (e) with --clustering, the clustering mode's groups (keras_reid.
      unsupervised.clustering.cluster_features): DBSCAN on the Jaccard
      distance over a grid of eps and (k1, k2), camera weight 1 and
      min_samples 2 as configs/viper_cluster_cpu.py, and cross-camera mutual
      nearest-neighbour pairs and the one-to-one cross-camera assignment
      (cluster_method "assignment"), each with and without camera centring:
      number of clusters, outlier fraction and pairwise precision / recall
      against the hidden identities; mutual pairs also with only the half /
      quarter of the largest margin kept (cluster_keep_fraction), and with
      --flip every grouping again on flip-averaged features (the mean of
      each image's and its mirror image's: unsupervised.flip_features).

Features are cached in --cache_dir (derived from the research-only images:
keep it out of the repository). The viper stage's other settings are
configs/viper_cotrain_cpu.py's (graph_k 3, 256 atoms, 20 iterations, soft
top 5).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

from keras_reid import quiet  # noqa: E402,F401
from keras_reid.unsupervised import graph  # noqa: E402
from keras_reid.unsupervised import grdl  # noqa: E402
from keras_reid.unsupervised import pseudo_labels  # noqa: E402

TEMPERATURES = (1.0, 0.5, 0.25, 0.1)


def _target_stage(source_run: str):
  from configs import viper_cotrain_cpu
  return viper_cotrain_cpu.get_config(f"cotraining,{source_run}")


def _features(run: str, records, cache: str, tag: str,
              flip: bool = False) -> np.ndarray:
  """[N, dim] SIR features of `records` by `run`'s latest model (cached);
  with `flip` the mean of each image's and its mirror image's."""
  path = os.path.join(cache, f"{tag}{'_flip' if flip else ''}.npz")
  paths = np.asarray([r.path for r in records])
  if os.path.exists(path):
    with np.load(path) as data:
      if data["paths"].tolist() == paths.tolist():
        return data["features"]
  from keras_reid.models import restore
  from keras_reid.training import cotraining
  model, config = restore.restore_training_model(run)
  features = cotraining.extract_features(model, records, config, flip=flip,
                                         progress_label=tag)
  os.makedirs(cache, exist_ok=True)
  np.savez(path + ".tmp.npz", features=features, paths=paths)
  os.replace(path + ".tmp.npz", path)
  return features


def l2_normalise(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def top_probability(space, is_a, temperature: float, top_m: int) -> np.ndarray:
  """[N_B] the soft label's largest probability per camera-B image."""
  soft = pseudo_labels.soft_pseudo_labels(space, is_a, top_m=top_m,
                                          temperature=temperature)
  return soft[~is_a].max(axis=1)


def calibrated_temperature(space, is_a, pids, top_m: int) -> float:
  """T where the mean top probability equals the argmax accuracy (labelled
  set): both are computed on the labelled source only."""
  accuracy = pseudo_labels.label_accuracy(
      pseudo_labels.hard_pseudo_labels(space, is_a), pids, is_a)["accuracy"]

  def gap(log_t):
    return float(np.mean(top_probability(space, is_a, np.exp(log_t), top_m))
                 - accuracy)
  lo, hi = np.log(1e-3), np.log(1e3)
  if gap(lo) < 0 or gap(hi) > 0:  # accuracy outside what T can reach
    return float(np.exp(lo if gap(lo) < 0 else hi))
  return float(np.exp(scipy.optimize.brentq(gap, lo, hi, xtol=1e-4)))


def soft_scores(space, is_a, pids, temperature: float, top_m: int) -> dict:
  """Soft mass on the right identity, mean top probability, Brier score."""
  soft = pseudo_labels.soft_pseudo_labels(space, is_a, top_m=top_m,
                                          temperature=temperature)
  acc = pseudo_labels.label_accuracy(soft, pids, is_a)
  pids = np.asarray(pids)
  same = (pids[~is_a][:, None] == pids[is_a][None, :]).astype(np.float64)
  probs = soft[~is_a].astype(np.float64)
  brier = float(np.mean(np.sum((probs - same) ** 2, axis=1)))
  return dict(soft_mass=acc["soft_mass"], top_prob=float(probs.max(1).mean()),
              brier=brier)


def mutual_nearest(space, is_a) -> np.ndarray:
  """bool [N_B]: b's nearest camera-A image has b as its nearest camera-B."""
  space = np.asarray(space, np.float64)
  a, b = space[is_a], space[~is_a]
  d = (np.sum(b * b, 1)[:, None] - 2 * b @ a.T + np.sum(a * a, 1)[None, :])
  nearest_a = d.argmin(axis=1)
  nearest_b = d.argmin(axis=0)
  return nearest_b[nearest_a] == np.arange(b.shape[0])


def pair_stats(labels, pids, is_a, keep_b=None) -> dict:
  """Positive / negative pairs of K x M batches grouped by hard labels.

  Each class (a camera-A image c and the camera-B images with label c that
  `keep_b` keeps) is drawn uniformly; its M = 2 images are two distinct
  members, or two augmentations of its only image. Returns the fraction of
  positive pairs of two people (`wrong_pos`), of two images of one person
  (`right_pos`), of one image twice (`self_pos`: classes with one image),
  of negative pairs of one person (`wrong_neg`), and of camera-B images
  kept in a class (`kept_b`) with the accuracy of their labels.
  """
  labels, pids, is_a = map(np.asarray, (labels, pids, is_a))
  keep = np.ones(len(labels), bool)
  if keep_b is not None:
    keep[~is_a] = keep_b
  num_a = int(is_a.sum())
  wrong, right, single = [], [], 0
  ids, pid_index = np.unique(pids, return_inverse=True)
  hist = np.zeros((num_a, len(ids)))
  for c in range(num_a):
    members = pid_index[keep & (labels == c)]
    np.add.at(hist[c], members, 1.0)
    n = len(members)
    if n < 2:
      single += 1
      wrong.append(0.0)
      right.append(0.0)
      continue
    same = (members[:, None] == members[None, :]).sum() - n
    wrong.append(1.0 - same / (n * (n - 1)))
    right.append(same / (n * (n - 1)))
  hist /= hist.sum(axis=1, keepdims=True)
  same_class = hist @ hist.T
  off = ~np.eye(num_a, dtype=bool)
  kept_b = keep[~is_a]
  pa, pb = pids[is_a], pids[~is_a]
  return dict(wrong_pos=float(np.mean(wrong)), right_pos=float(np.mean(right)),
              self_pos=single / num_a,
              wrong_neg=float(same_class[off].mean()),
              kept_b=float(kept_b.mean()),
              kept_accuracy=float(np.mean(pa[labels[~is_a][kept_b]]
                                          == pb[kept_b])) if kept_b.any()
              else float("nan"))


def codes(features, is_a, stage, lam: float, seed: int, init=None):
  u = stage.unsupervised
  lap = graph.laplacian(graph.cross_camera_knn_graph(features, is_a,
                                                     k=u.graph_k))
  return grdl.grdl(features, lap, u.grdl_atoms, lam,
                   max_iter=u.grdl_iterations, seed=seed,
                   init_dictionary=init)


def spaces(features, is_a, stage, lambdas, seed) -> dict:
  """name -> [N, d] label space: features and (raw, normalised) codes."""
  out = {"features": features, "features, L2": l2_normalise(features)}
  for lam in lambdas:
    z = codes(features, is_a, stage, lam, seed).codes
    out[f"codes l={lam:g}"] = z
    out[f"codes l={lam:g}, L2"] = l2_normalise(z)
  return out


CLUSTER_EPS = (0.3, 0.4, 0.5, 0.6)
CLUSTER_K = ((10, 1), (20, 2), (30, 6))


KEEP_FRACTIONS = (1.0, 0.5, 0.25)


def cluster_rows(feats, camids, pids, prefix: str = "") -> dict:
  """(e): {name: {"clusters": cluster_quality(...)}} per grouping."""
  from keras_reid.unsupervised import clustering
  rows = {}
  for centring in (False, True):
    tail = ", centred" if centring else ""
    groups = {}
    for method, title in (("mutual_nn", "mutual NN"),
                          ("assignment", "one-to-one assignment")):
      for keep in KEEP_FRACTIONS:
        kept = f", keep {keep:g}" if keep < 1 else ""
        groups[f"{prefix}{title}{tail}{kept}"] = clustering.cluster_features(
            feats, camids, eps=1.0, min_samples=2, method=method,
            camera_centring=centring, keep_fraction=keep).labels
    space = clustering.camera_centred(feats, camids) if centring else feats
    for k1, k2 in CLUSTER_K:
      distance = clustering.cluster_distance(space, camids, k1=k1, k2=k2,
                                             camera_weight=1.0)
      for eps in CLUSTER_EPS:
        groups[f"{prefix}DBSCAN k1={k1} k2={k2} eps={eps}{tail}"] = (
            clustering.dbscan_labels(distance, eps=eps, min_samples=2))
    for name, labels in groups.items():
      rows[name] = {"clusters": clustering.cluster_quality(labels, pids)}
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--source_run", required=True)
  parser.add_argument("--splits", default="0,1,2,3,4")
  parser.add_argument("--lambdas", default="0.1,0.01,0")
  parser.add_argument("--previous_run", default="",
                      help="run dir with {split}: another network for (b)")
  parser.add_argument("--threshold", type=float, default=0.5)
  parser.add_argument("--cache_dir", default="/tmp/cotraining_labels_cache")
  parser.add_argument("--skip_source", action="store_true",
                      help="no source calibration (c)")
  parser.add_argument("--output_json", default="")
  parser.add_argument("--clustering", action="store_true",
                      help="also (e): the clustering mode's groups")
  parser.add_argument("--flip", action="store_true",
                      help="(e) also on flip-averaged features")
  args = parser.parse_args()
  from keras_reid.data import from_config
  from keras_reid.training import cotraining

  splits = [int(s) for s in args.splits.split(",")]
  lambdas = [float(v) for v in args.lambdas.split(",") if v]  # "" = none
  config = _target_stage(args.source_run)
  stage = config.stages.viper
  top_m = stage.unsupervised.soft_top_m
  cache = os.path.join(args.cache_dir,
                       os.path.basename(os.path.normpath(args.source_run)))
  t0 = time.time()
  result = dict(splits=splits, lambdas=lambdas, rows={})

  # (c) temperatures calibrated on the labelled source (first_image_split).
  temps = {}
  if not args.skip_source:
    from keras_reid import runs
    source_config, _ = runs.load_finished_run(args.source_run)
    source = from_config.load_stage_dataset(source_config.stages.reid_pool,
                                            source_config)
    records = list(source.train)
    pids = np.asarray([r.pid for r in records])
    feats = _features(args.source_run, records, cache, "source_reid_pool")
    is_a = cotraining.first_image_split(pids)
    for name, space in spaces(feats, is_a, stage, lambdas[:1],
                              config.seed).items():
      t = calibrated_temperature(space, is_a, pids, top_m)
      acc = pseudo_labels.label_accuracy(
          pseudo_labels.hard_pseudo_labels(space, is_a), pids, is_a)
      temps[name] = t
      print(f"source {name:>18}: accuracy {100 * acc['accuracy']:.1f}%, "
            f"calibrated T {t:.3f} ({time.time() - t0:.0f} s)", flush=True)
    result["source_temperatures"] = temps

  per_split = []
  for split in splits:
    stage.split = split
    dataset = from_config.load_stage_dataset(stage, config)
    records = list(dataset.train)
    pids = np.asarray([r.pid for r in records])
    is_a = graph.camera_a_mask([r.camid for r in records],
                               stage.unsupervised.camera_a)
    feats = _features(args.source_run, records, cache, f"viper_split{split}")
    rows = {}
    for name, space in spaces(feats, is_a, stage, lambdas,
                              config.seed).items():
      hard = pseudo_labels.hard_pseudo_labels(space, is_a)
      row = dict(accuracy=pseudo_labels.label_accuracy(hard, pids,
                                                       is_a)["accuracy"])
      for t in TEMPERATURES + ((temps[name],) if name in temps else ()):
        key = "T=cal" if name in temps and t == temps[name] else f"T={t:g}"
        row[key] = soft_scores(space, is_a, pids, t, top_m)
      row["pairs"] = pair_stats(hard, pids, is_a)
      row["pairs_mutual"] = pair_stats(hard, pids, is_a,
                                       mutual_nearest(space, is_a))
      t_conf = temps.get(name, 1.0)
      row["pairs_p>=thr"] = pair_stats(
          hard, pids, is_a,
          top_probability(space, is_a, t_conf, top_m) >= args.threshold)
      rows[name] = row
    if args.previous_run:
      prev_dir = args.previous_run.format(split=split)
      if os.path.exists(prev_dir):
        prev = _features(prev_dir, records, cache,
                         f"previous_{os.path.basename(prev_dir)}_split{split}")
        for lam in lambdas:
          d_prev = codes(prev, is_a, stage, lam, config.seed).dictionary
          warm = codes(feats, is_a, stage, lam, config.seed, init=d_prev)
          for norm in (False, True):
            z = l2_normalise(warm.codes) if norm else warm.codes
            name = f"codes l={lam:g}{', L2' if norm else ''}, warm"
            rows[name] = dict(accuracy=pseudo_labels.label_accuracy(
                pseudo_labels.hard_pseudo_labels(z, is_a), pids,
                is_a)["accuracy"])
    if args.clustering:
      camids = np.asarray([r.camid for r in records])
      rows.update(cluster_rows(feats, camids, pids))
      if args.flip:
        flipped = _features(args.source_run, records, cache,
                            f"viper_split{split}", flip=True)
        rows.update(cluster_rows(flipped, camids, pids, prefix="flip, "))
    per_split.append(rows)
    print(f"split {split} done ({time.time() - t0:.0f} s)", flush=True)
  result["per_split"] = per_split
  _print_tables(per_split, temps, args.threshold)
  if args.output_json:
    with open(args.output_json, "w") as f:
      json.dump(result, f, indent=1)


def _mean(per_split, name, *keys):
  vals = []
  for rows in per_split:
    v = rows.get(name)
    for k in keys:
      v = None if v is None else v.get(k)
    if v is not None:
      vals.append(v)
  return (100 * float(np.mean(vals)), len(vals)) if vals else (None, 0)


def _fmt(v):
  return "-" if v[0] is None else f"{v[0]:.1f}"


def _print_tables(per_split, temps, threshold) -> None:
  names = list(dict.fromkeys(n for rows in per_split for n in rows))
  n = len(per_split)
  print(f"\n(a, b) camera-B label accuracy (argmax), mean over {n} splits, %")
  print("| label space | accuracy | splits |\n|---|---|---|")
  for name in names:
    v = _mean(per_split, name, "accuracy")
    print(f"| {name} | {_fmt(v)} | {v[1]} |")
  soft_names = [nm for nm in names if "T=1" in per_split[0].get(nm, {})]
  print("\n(c) soft labels (top 5): mass on the right identity / mean top "
        "probability / Brier score (x100), mean over splits; T=cal: "
        "calibrated on the source")
  keys = [f"T={t:g}" for t in TEMPERATURES] + (["T=cal"] if temps else [])
  print("| label space | accuracy | " + " | ".join(keys) + " |")
  print("|---|---|" + "---|" * len(keys))
  for name in soft_names:
    cells = []
    for k in keys:
      m, top, b = (_mean(per_split, name, k, s)
                   for s in ("soft_mass", "top_prob", "brier"))
      cells.append("-" if m[0] is None else
                   f"{m[0]:.1f} / {top[0]:.1f} / {b[0]:.1f}")
    t = f" (T={temps[name]:.3f})" if name in temps else ""
    print(f"| {name}{t} | {_fmt(_mean(per_split, name, 'accuracy'))} | "
          + " | ".join(cells) + " |")
  print("\n(d) verification pairs of K x M batches (M = 2) from the argmax "
        "labels: positive pairs wrong / right / one image twice, negative "
        "pairs of one person, camera-B images kept, accuracy of the kept "
        f"(%); p >= {threshold} at the calibrated T where there is one, "
        "else T=1")
  print("| label space | all pairs | mutual top-1 | p >= thr |\n|---|---|---|---|")
  for name in soft_names:
    cells = []
    for k in ("pairs", "pairs_mutual", "pairs_p>=thr"):
      vals = [_mean(per_split, name, k, s) for s in
              ("wrong_pos", "right_pos", "self_pos", "wrong_neg", "kept_b",
               "kept_accuracy")]
      cells.append(" / ".join(f"{v[0]:.2f}" if i == 3 else _fmt(v)
                              for i, v in enumerate(vals)))
    print(f"| {name} | " + " | ".join(cells) + " |")
  cluster_names = [nm for nm in names if "clusters" in per_split[0].get(nm, {})]
  if cluster_names:
    print("\n(e) clustering-mode groups: clusters / outliers % / pairwise "
          "precision % / pairwise recall %, mean over splits")
    print("| grouping | clusters | outliers | precision | recall |\n"
          "|---|---|---|---|---|")
    for name in cluster_names:
      num = np.mean([rows[name]["clusters"]["num_clusters"]
                     for rows in per_split])
      cells = [_fmt(_mean(per_split, name, "clusters", k)) for k in (
          "outlier_fraction", "pairwise_precision", "pairwise_recall")]
      print(f"| {name} | {num:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
