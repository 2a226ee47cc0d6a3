r"""Picks co-training's GRDL lambda by cross-validation on the labelled source.

  python -m keras_reid.tools.select_grdl_lambda \
      --workdir=runs/reproduce/pool_mobilenet_v1_0.5 \
      --config=configs/viper_cotrain_cpu.py:cotraining,runs/reproduce/pool_mobilenet_v1_0.5 \
      --target=viper --lambdas=0,0.001,0.01,0.1,1

--workdir is a finished run with labels (the source model the unsupervised
stage starts from); its stage --source_stage (default: the stage its last
finished training step belongs to, e.g. reid_pool for a run whose VIPeR
stage trains 0 iterations) gives the labelled images. A source stage that
reads the target's own images (same dataset and folder) is refused.
--config / --target name the unsupervised stage whose settings
(stage.unsupervised: graph_k, grdl_atoms, grdl_iterations, pseudo_labels,
soft_top_m, soft_temperature, l2_normalize) are used. On the source's training images, each
identity's first image plays camera A and its others camera B
(`cotraining.first_image_split`); every lambda labels camera B through GRDL
codes of the source model's features and is scored against the true
identities, next to self-training's feature-space labels. Prints the table
and the flag to pass to `keras_reid.train`; --output_json keeps it.
The target's identities are never read.
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
from ml_collections import config_flags

# Before anything that imports TensorFlow, to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid import runs
from keras_reid import user_errors
from keras_reid.data import from_config
from keras_reid.models import restore
from keras_reid.training import cotraining

# A mistyped --config.<key> is one line naming the closest key, not the
# traceback ml_collections raises while the flag below parses it.
user_errors.exit_on_bad_config_override()
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config whose --target stage is the unsupervised one.")
_TARGET = flags.DEFINE_string(
    "target", None, "Name of the unsupervised stage in --config.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Finished labelled run (the source model).")
_SOURCE_STAGE = flags.DEFINE_string(
    "source_stage", None, "Stage of --workdir whose training images are "
    "scored (default: the stage of its last finished training step).")
_LAMBDAS = flags.DEFINE_list(
    "lambdas", ["0", "0.001", "0.01", "0.1", "1"], "Candidate lambdas.")
_OUTPUT_JSON = flags.DEFINE_string(
    "output_json", None, "Where to write the table (JSON).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  for name, flag in (("config", _CONFIG.value), ("target", _TARGET.value),
                     ("workdir", _WORKDIR.value)):
    if flag is None:
      raise app.UsageError(f"--{name} is required.")
  config = _CONFIG.value
  if _TARGET.value not in config.stages:
    raise app.UsageError(
        f"--target={_TARGET.value!r}: the config has stages "
        f"{list(config.stages)}.")
  try:
    lambdas = [float(v) for v in _LAMBDAS.value]
  except ValueError as e:
    raise app.UsageError(f"--lambdas={_LAMBDAS.value}: {e}") from None
  model, source_config = restore.restore_training_model(_WORKDIR.value)
  # An unsupervised stage's steps are listed as "<stage>/round<r>".
  source_stage = (_SOURCE_STAGE.value or runs.Progress.load(
      _WORKDIR.value).last.stage.split("/")[0])
  if source_stage not in source_config.stages:
    raise app.UsageError(
        f"--source_stage={source_stage!r}: {_WORKDIR.value} has stages "
        f"{list(source_config.stages)}.")
  source, target = (source_config.stages[source_stage],
                    config.stages[_TARGET.value])
  if (source.dataset, os.path.abspath(source.root)) == (
      target.dataset, os.path.abspath(target.root)):
    raise app.UsageError(
        f"--source_stage={source_stage!r} reads {source.dataset} at "
        f"{source.root!r}, the target's own images: cross-validating there "
        "would read the target's identities. Pick the labelled source stage "
        "(e.g. --source_stage=reid_pool).")
  dataset = from_config.load_stage_dataset(
      source_config.stages[source_stage], source_config)
  records = list(dataset.train)
  print(f"Source: {_WORKDIR.value} stage {source_stage!r}, "
        f"{len(records)} training images of "
        f"{len({r.pid for r in records})} identities; extracting features.",
        flush=True)
  features = cotraining.extract_features(model, records, source_config)

  def show(row: dict) -> None:
    name = ("self-training" if row["lambda"] is None
            else f"lambda {row['lambda']:g}")
    print(f"  {name:>16}: label accuracy {100 * row['accuracy']:.1f}%, "
          f"soft mass {100 * row['soft_mass']:.1f}% (reachable "
          f"{100 * row['reachable']:.1f}%)", flush=True)

  result = cotraining.cross_validate_lambda(
      features, [r.pid for r in records], config.stages[_TARGET.value],
      lambdas, seed=config.seed, callback=show)
  result.update(workdir=os.path.abspath(_WORKDIR.value),
                source_stage=source_stage, target=_TARGET.value)
  print(f"Best: --config.stages.{_TARGET.value}.unsupervised.grdl_lambda="
        f"{result['best_lambda']:g} ({result['num_a']} camera-A, "
        f"{result['num_b']} camera-B images)", flush=True)
  if _OUTPUT_JSON.value:
    with open(_OUTPUT_JSON.value, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  app.run(user_errors.one_line_errors(main))
