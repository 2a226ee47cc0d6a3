"""Evaluates Re-ID features or models: CMC / mAP / mINP as a JSON report.

  # Features from any model (an .npz with query_features, gallery_features,
  # query_pids, gallery_pids, query_camids, gallery_camids; optionally
  # val_features, val_pids for the verification report). Several files
  # (one per random split) are averaged:
  python -m keras_reid.evaluate --features=FILE.npz --output_json=OUT.json
  python -m keras_reid.evaluate --features=split0.npz,split1.npz,...

  # A training run (dataset of its last stage unless --dataset is given):
  python -m keras_reid.evaluate --workdir=RUN [--split=3] [--cir_topk=10]
  python -m keras_reid.evaluate --workdir=RUN --dataset=viper --root=DIR

  # An exported SavedModel (keras_reid.serving.saved_model):
  python -m keras_reid.evaluate --saved_model=DIR/1 --dataset=NAME --root=DIR

Cross-dataset evaluation: pass another --dataset than the run trained on.
Its report, pictures and TensorBoard tags are its own and never replace the
run's: <workdir>/eval_<dataset>.json, eval_<dataset>_report/, tags
eval_<dataset>/ranked_lists, eval_<dataset>/cmc, eval_<dataset>/roc (the
run's own dataset: eval.json, eval_report/, eval/...).

What a report holds (all optional parts can be switched off):
  * SIR metrics: rank1/5/10/20, mAP, mINP (fractions), cmc (to --max_rank),
    num_queries, num_skipped_queries, protocol, timings.
  * "cir" (--cir_topk=K or --cir=full, off by default: it runs the network on
    every scored pair): CIR metrics, the measured SIR and CIR times and
    cir_to_sir_time_ratio.
  * "verification" (--verification, on): ROC AUC, EER and a suggested
    threshold from SIR distances ("sir_distance"), from the cosine
    similarity of the L2-normalised features ("sir_cosine": the threshold
    keras_reid.Embedder.verify decides with) and, for a model, from the
    verification head, on the query x gallery pairs of the evaluated test split as the
    ranking scores them (no junk, no pair of one identity from one camera),
    whose identities the dataset's protocol keeps apart from the training
    split's: "split": "test", "num_ids", "seen_in_training" (true when the
    run trained on them, e.g. another split of VIPeR: the ROC is then
    titled "seen identities"). A features file is reported on its
    val_features / val_pids when it has them.
  * pictures (--pictures, on): ranked lists of the best, median and worst
    AP query and a seeded sample (query + top-10 of the ranking the metric
    scored: junk and the query's identity from its own camera left out;
    green = true match, red = wrong; rank, distance, pid and the camera as
    the dataset names it, e.g. c3, cam_b, under each image; the query's AP
    and first-match rank above), the CMC curve and the verification ROC
    with its EER points (matplotlib) as PNG in --report_dir (default:
    <output_json without .json>_report/), and for --workdir also in
    <workdir>/tensorboard (tags eval/ranked_lists, eval/cmc, eval/roc).
  * "projector" (--projector, off): query + gallery embeddings with pid,
    camera and a thumbnail sprite for TensorBoard's projector, in
    <workdir>/tensorboard (else <report_dir>/projector); at most 3000
    points, a seeded sample beyond (said so in the log and the report).

With --workdir, --max_rank, --rerank, --cir_topk, --flip_test and
--batch_size default to the run's config (eval.max_rank, eval.rerank,
eval.cir_topk, eval.flip_test, data.eval_batch_size), so the evaluation
at the end of training and this one agree unless a flag is given.

CUHK03 classic protocol (reader option protocol=old: 20 splits of 1,367
train / 100 test ids): the CMC is the single-gallery-shot one its published
numbers use (for each query one random gallery image per identity from the
other camera, 10 seeded draws averaged; mAP from the full gallery). On
automatically for that protocol (not with --rerank), or --cuhk03_metric /
--nocuhk03_metric; average the 20 test splits with --splits=0-19.

Repeated random splits (VIPeR, PRID, CUHK01, old CUHK03): --splits=0-9 (or
0,3,5) evaluates each split and reports mean and "<metric>_std" (population
std) plus every split under "splits". A model evaluated on a split it was
not trained on has seen that split's test identities in training, so the
numbers are optimistic: the paper protocol trains one model per split
(one --workdir per split), exports features per split and averages them
with --features=split0.npz,...,split9.npz. --splits with --workdir or
--saved_model is allowed for quick looks and logs a warning.
"""

from __future__ import annotations

import json
from typing import Any

from absl import app
from absl import flags

# Before anything that imports TensorFlow, to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid import user_errors
from keras_reid.evaluation import ranking
from keras_reid.evaluation import report

_FEATURES = flags.DEFINE_list(
    "features", None, "Features .npz to score; several (one per split) are "
    "averaged.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory.")
_SAVED_MODEL = flags.DEFINE_string(
    "saved_model", None, "Exported SavedModel version directory.")
_DATASET = flags.DEFINE_string(
    "dataset", None, "Dataset name (keras_reid.data.datasets.DATASETS); "
    "default for --workdir: the run's last stage dataset.")
_ROOT = flags.DEFINE_string("root", None, "Dataset folder.")
_OPTIONS = flags.DEFINE_string(
    "options", "", "Reader options with --dataset, \"key=value,...\".")
_SPLIT = flags.DEFINE_integer(
    "split", None, "Split index (random-split sets); default: the run's "
    "stage split, or 0.")
_SPLITS = flags.DEFINE_string(
    "splits", None, "Evaluate several splits and average: \"0-9\" or "
    "\"0,2,5\".")
_OUTPUT_JSON = flags.DEFINE_string(
    "output_json", None, "Where to write the report; default: "
    "<workdir>/eval.json (eval_<dataset>.json for another --dataset than "
    "the run's), or <features>.eval.json, or ./eval.json.")
_REPORT_DIR = flags.DEFINE_string(
    "report_dir", None, "Folder for the PNGs; default: next to the JSON.")
# Flags left unset (None) take, with --workdir, the run's own setting
# (config.eval.*, config.data.eval_batch_size), so that this evaluation and
# the one at the end of training agree; elsewhere the default in brackets.
_MAX_RANK = flags.DEFINE_integer(
    "max_rank", None, "CMC curve length [run's eval.max_rank, or 50].")
_MULTI_QUERY = flags.DEFINE_boolean("multi_query", False,
                                    "Market-1501 multi-query pooling.")
_RERANK = flags.DEFINE_boolean(
    "rerank", None, "k-reciprocal re-ranking [run's eval.rerank, or off].")
_CUHK03_METRIC = flags.DEFINE_boolean(
    "cuhk03_metric", None, "CUHK03 classic single-gallery-shot CMC (one "
    "random gallery image per identity from the other camera, 10 draws "
    "averaged) [on for cuhk03 with protocol=old, unless --rerank].")
_CIR = flags.DEFINE_enum("cir", "", ["", "full"],
                         "\"full\": CIR on every query-gallery pair (small "
                         "galleries only).")
_CIR_TOPK = flags.DEFINE_integer(
    "cir_topk", None, "CIR re-scoring of the SIR top-k (0 = off) [run's "
    "eval.cir_topk, or 0].")
_FLIP_TEST = flags.DEFINE_boolean(
    "flip_test", None, "Test-time flip: mean feature of each image and its "
    "mirror image [run's eval.flip_test, or off].")
_VERIFICATION = flags.DEFINE_boolean(
    "verification", True, "Verification report (ROC, EER, threshold) on "
    "the query-gallery pairs of the test split.")
_PICTURES = flags.DEFINE_boolean("pictures", True,
                                 "Ranked-list, CMC and ROC PNGs.")
_PROJECTOR = flags.DEFINE_boolean(
    "projector", False, "Query + gallery embeddings with pid, camera and "
    "thumbnails for TensorBoard's projector (at most 3000 points, a seeded "
    "sample beyond): into <workdir>/tensorboard (tensorboard/eval_<dataset> "
    "for another --dataset), else <report_dir>/projector.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "Images per batch [run's data.eval_batch_size, or "
    "128].")
_IMAGE_SIZE = flags.DEFINE_list(
    "image_size", None, "HEIGHT,WIDTH for --saved_model when it does not "
    "record its input size.")


# Flags that only mean something with a dataset or a model.
_FEATURES_IGNORES = ("dataset", "root", "options", "split", "image_size",
                     "batch_size", "flip_test")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  sources = [n for n, v in (("--features", _FEATURES.value),
                            ("--workdir", _WORKDIR.value),
                            ("--saved_model", _SAVED_MODEL.value)) if v]
  if len(sources) != 1:
    raise app.UsageError(
        "give exactly one of --features, --workdir, --saved_model (got "
        f"{sources or 'none'}).")
  splits = report.parse_splits(_SPLITS.value) if _SPLITS.value else None
  # None = "from the run" for --workdir; the defaults below elsewhere.
  from_run = dict(max_rank=_MAX_RANK.value, rerank=_RERANK.value,
                  cir_topk=_CIR_TOPK.value, batch_size=_BATCH_SIZE.value,
                  flip_test=_FLIP_TEST.value)
  if not _WORKDIR.value:
    for key, default in (("max_rank", 50), ("rerank", False), ("cir_topk", 0),
                         ("batch_size", 128), ("flip_test", False)):
      if from_run[key] is None:
        from_run[key] = default
  common: dict[str, Any] = dict(
      output_json=_OUTPUT_JSON.value, report_dir=_REPORT_DIR.value,
      max_rank=from_run["max_rank"], multi_query=_MULTI_QUERY.value,
      rerank=from_run["rerank"], verification=_VERIFICATION.value,
      pictures=_PICTURES.value, projector=_PROJECTOR.value)
  model_args = dict(common, cir=_CIR.value, cir_topk=from_run["cir_topk"],
                    splits=splits, options=_OPTIONS.value, root=_ROOT.value,
                    batch_size=from_run["batch_size"],
                    cuhk03_metric=_CUHK03_METRIC.value,
                    flip_test=from_run["flip_test"])
  if _FEATURES.value:
    if splits or _CIR.value or _CIR_TOPK.value:
      raise app.UsageError("--features takes no --splits (give one file per "
                           "split) and no CIR (needs a model).")
    ignored = [f"--{name}" for name in _FEATURES_IGNORES
               if flags.FLAGS[name].present]
    if ignored:
      raise app.UsageError(
          f"--features scores the arrays in the file; it reads no dataset and "
          f"runs no model, so {', '.join(ignored)} would be ignored: drop "
          f"{'it' if len(ignored) == 1 else 'them'}.")
    result = report.evaluate_feature_file(
        _FEATURES.value, cuhk03_metric=bool(_CUHK03_METRIC.value), **common)
  elif _WORKDIR.value:
    # Imported here, not at the top: scoring --features must not load
    # TensorFlow (report is TF-free; these two are not).
    from keras_reid import run_evaluation  # pylint: disable=g-import-not-at-top
    result = run_evaluation.evaluate_run(
        _WORKDIR.value, dataset=_DATASET.value, split=_SPLIT.value,
        **model_args)
  else:
    if not _DATASET.value:
      raise app.UsageError("--saved_model needs --dataset (and --root).")
    from keras_reid.evaluation import model_evaluation  # pylint: disable=g-import-not-at-top
    result = model_evaluation.evaluate_saved_model(
        _SAVED_MODEL.value, dataset=_DATASET.value,
        split=_SPLIT.value or 0, image_size=_IMAGE_SIZE.value, **model_args)
  summary = {k: result[k] for k in (
      *ranking.METRIC_KEYS, "num_queries", "num_skipped_queries")
             if k in result}
  if "rank1_std" in result:
    summary.update(rank1_std=result["rank1_std"], mAP_std=result["mAP_std"],
                   num_splits=result["num_splits"])
  if "cir" in result and "cir" in result["cir"]:
    summary["cir_rank1"] = result["cir"]["cir"]["rank1"]
    summary["cir_to_sir_time_ratio"] = result["cir"]["cir_to_sir_time_ratio"]
  if "projector" in result:
    info = result["projector"]
    summary["projector"] = info["dir"]
    summary["projector_points"] = (
        f"{info['num_points']} of {info['num_available']}"
        + (" (random sample)" if info["sampled"] else ""))
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(user_errors.one_line_errors(main))
