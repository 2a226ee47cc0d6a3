"""Evaluates Re-ID features or models: CMC / mAP / mINP as a JSON report.

  # Features from any model (an .npz with query_features, gallery_features,
  # query_pids, gallery_pids, query_camids, gallery_camids):
  python -m keras_reid.evaluate --features=FILE.npz --output_json=OUT.json

  # A training run (dataset from its config unless --dataset is given):
  python -m keras_reid.evaluate --workdir=RUN [--dataset=market1501 --root=DIR]

  # An exported SavedModel:
  python -m keras_reid.evaluate --saved_model=DIR --dataset=NAME --root=DIR

Cross-dataset evaluation: pass another --dataset than the run trained on.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from absl import app
from absl import flags
from absl import logging

from keras_reid.evaluation import extract

_FEATURES = flags.DEFINE_string("features", None, "Features .npz to score.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory.")
_SAVED_MODEL = flags.DEFINE_string("saved_model", None,
                                   "Exported SavedModel directory.")
_DATASET = flags.DEFINE_string(
    "dataset", None, "Dataset name (keras_reid.data.datasets.DATASETS); "
    "default for --workdir: the run's last stage dataset.")
_ROOT = flags.DEFINE_string("root", None, "Dataset folder.")
_SPLIT = flags.DEFINE_integer("split", 0, "Split index (repeated-split sets).")
_OUTPUT_JSON = flags.DEFINE_string(
    "output_json", None, "Where to write the report; default: "
    "<workdir>/eval.json, or <features>.eval.json, or ./eval.json.")
_MAX_RANK = flags.DEFINE_integer("max_rank", 50, "CMC curve length.")
_MULTI_QUERY = flags.DEFINE_boolean("multi_query", False,
                                    "Market-1501 multi-query pooling.")
_RERANK = flags.DEFINE_boolean("rerank", False, "k-reciprocal re-ranking.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Images per batch.")
_IMAGE_SIZE = flags.DEFINE_list(
    "image_size", None, "HEIGHT,WIDTH for --saved_model when its signature "
    "has dynamic sizes.")


def _write(result: dict, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)


def _load_dataset(name: str, root: Optional[str], split: int):
  from keras_reid.data import datasets  # pylint: disable=g-import-not-at-top
  return datasets.load_dataset(name, root or "", split=split)


def run(argv_flags=flags.FLAGS) -> dict:
  """Runs the evaluation the flags ask for and returns the report."""
  del argv_flags
  sources = [n for n, v in (("--features", _FEATURES.value),
                            ("--workdir", _WORKDIR.value),
                            ("--saved_model", _SAVED_MODEL.value)) if v]
  if len(sources) != 1:
    raise app.UsageError(
        "give exactly one of --features, --workdir, --saved_model (got "
        f"{sources or 'none'}).")
  common = dict(max_rank=_MAX_RANK.value, multi_query=_MULTI_QUERY.value,
                rerank=_RERANK.value)
  if _FEATURES.value:
    arrays = extract.load_feature_file(_FEATURES.value)
    result = extract.evaluate_arrays(arrays, **common)
    result["features"] = os.path.abspath(_FEATURES.value)
    default_out = os.path.splitext(_FEATURES.value)[0] + ".eval.json"
  elif _WORKDIR.value:
    from keras_reid.training import checkpoints  # pylint: disable=g-import-not-at-top
    embedder, config = checkpoints.load_embedder(_WORKDIR.value)
    from keras_reid.models import builders  # pylint: disable=g-import-not-at-top
    name, root = _DATASET.value, _ROOT.value
    if not name:
      stages = list(config.stages.values())
      if not stages:
        raise app.UsageError(f"run {_WORKDIR.value!r} has no stages; give "
                             "--dataset.")
      name, root = stages[-1].dataset, root or stages[-1].root
    dataset = _load_dataset(name, root, _SPLIT.value)
    result = extract.evaluate_embedder(
        lambda images: embedder(images, training=False), dataset,
        image_size=(config.data.image_height, config.data.image_width),
        normalization=builders.normalization_for(config.model),
        batch_size=_BATCH_SIZE.value, **common)
    result["workdir"] = os.path.abspath(_WORKDIR.value)
    default_out = os.path.join(_WORKDIR.value, "eval.json")
  else:
    if not _DATASET.value:
      raise app.UsageError("--saved_model needs --dataset (and --root).")
    embed_fn, size = extract.saved_model_embed_fn(_SAVED_MODEL.value)
    if _IMAGE_SIZE.value:
      size = tuple(int(v) for v in _IMAGE_SIZE.value)
    if None in size:
      raise app.UsageError("the SavedModel's input size is dynamic; give "
                           "--image_size=HEIGHT,WIDTH.")
    dataset = _load_dataset(_DATASET.value, _ROOT.value, _SPLIT.value)
    result = extract.evaluate_embedder(
        embed_fn, dataset, image_size=size, normalization="none",
        batch_size=_BATCH_SIZE.value, **common)
    result["saved_model"] = os.path.abspath(_SAVED_MODEL.value)
    default_out = "eval.json"
  out = _OUTPUT_JSON.value or default_out
  _write(result, out)
  logging.info("wrote %s", out)
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  result = run()
  print(json.dumps({k: result[k] for k in (
      "rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "num_queries",
      "num_skipped_queries")}))


if __name__ == "__main__":
  app.run(main)
