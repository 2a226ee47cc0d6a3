"""Staged transfer: ImageNet -> large Re-ID set -> small Re-ID set.

`train(config, workdir)` runs every stage of config.stages in order; each
stage is two-stepped (see loop.py). A run killed at any point resumes from
its checkpoints when started again with the same workdir and config.
"""

from __future__ import annotations

import functools
import json
import os

from absl import logging
import keras
import tensorflow as tf
from ml_collections import config_dict

from keras_reid import config as config_lib
from keras_reid import cpu_kind
from keras_reid import onednn
from keras_reid import runs
from keras_reid.data import augmentation
from keras_reid.data import datasets
from keras_reid.data import from_config
from keras_reid.data import image_files
from keras_reid.data import inspection
from keras_reid.data import records as records_lib
from keras_reid.evaluation import ranking
from keras_reid.models import backbones
from keras_reid.models import builders
from keras_reid.models import layers
from keras_reid.models import precision
from keras_reid.training import cotraining
from keras_reid.training import distribute
from keras_reid.training import hparams
from keras_reid.training import loop
from keras_reid.training import runner
from keras_reid.training import stage_setup
from keras_reid.training import timing


def check_config(config: config_dict.ConfigDict) -> None:
  """Ranges (config.validate_config) and every name against its registry.

  Raises:
    ValueError: naming the key, the value and the valid names.
  """
  config_lib.validate_config(config)

  def expect_in(key: str, value: str, registry) -> None:
    if value not in registry:
      raise ValueError(f"config.{key}={value!r}: expected one of "
                       f"{sorted(registry)}.")

  expect_in("model.backbone", config.model.backbone, backbones.BACKBONES)
  expect_in("model.ver_dropout_mode", config.model.ver_dropout_mode,
            layers.PAIR_DROPOUT_MODES)
  builders.check_model_config(config.model)
  expect_in("train.distribute", config.train.distribute, distribute.STRATEGIES)
  expect_in("data.augment_mode", config.data.augment_mode,
            augmentation.AUGMENT_MODES)
  expect_in("train.optimizer", config.train.optimizer, loop.OPTIMIZERS)
  expect_in("train.precision", config.train.precision, precision.PRECISIONS)
  expect_in("train.weight_decay_mode", config.train.weight_decay_mode,
            loop.WEIGHT_DECAY_MODES)
  for name, stage in config.stages.items():
    expect_in(f"stages.{name}.step1_trains", stage.step1_trains,
              stage_setup.STEP1_TRAINS)
    expect_in(f"stages.{name}.lr_schedule", stage.lr_schedule,
              loop.LR_SCHEDULES)
    cotraining.check_stage(name, stage, config)
    for dataset in stage.dataset.split("+"):
      expect_in(f"stages.{name}.dataset", dataset, datasets.DATASETS)
    source = stage.unsupervised.source_dataset
    for dataset in source.split("+") if source else ():
      expect_in(f"stages.{name}.unsupervised.source_dataset", dataset,
                datasets.DATASETS)


def _check_same_config(config: config_dict.ConfigDict, workdir: str) -> None:
  """A run resumes only with the config it started with.

  A run that has not checkpointed a single training step (e.g. it failed
  on a wrong dataset root) has nothing to resume: a changed config is then
  accepted and replaces config.json.
  """
  if not os.path.exists(runs.config_path(workdir)):
    return
  previous = config_lib.load_config(workdir).to_dict()
  current = json.loads(config.to_json_best_effort())
  changed = sorted(k for k in set(previous) | set(current)
                   if previous.get(k) != current.get(k))
  if changed:
    if not runs.has_trained(workdir):
      logging.warning("Run directory %s has no checkpoint yet; its config "
                      "changed (sections %s) and is replaced.", workdir,
                      changed)
      return
    raise ValueError(
        f"Run directory {workdir!r} was started with a different config "
        f"(sections differing: {changed}). Resume with the same config, or "
        "pass a new --workdir.")


def _load_stage_datasets(config: config_dict.ConfigDict
                         ) -> tuple[dict[str, records_lib.ReidDataset], dict]:
  """Every stage's dataset, every image it will use checked.

  A wrong root, a corrupt query image, a test split no query of which can
  be scored or a stage training on a later stage's test images fails here,
  before config.json is written and before the first training step.

  Returns:
    (stage name -> dataset, without the skipped images; stage name -> the
     skipped-image report of data.pipeline.check_dataset_images).
  """
  stage_datasets, skipped_images = {}, {}
  for name, stage in config.stages.items():
    if config_lib.is_unsupervised(stage) and stage.unsupervised.source_dataset:
      # Before its stage: check_test_images_not_trained sees it trained there.
      key = source_key(name)
      source = _load_source_dataset(name, stage, config)
      stage_datasets[key], skipped_images[key] = (
          image_files.check_dataset_images(
              source, skip_corrupt=config.data.skip_corrupt))
    dataset = from_config.load_stage_dataset(stage, config)
    dataset, skipped_images[name] = image_files.check_dataset_images(
        dataset, skip_corrupt=config.data.skip_corrupt)
    stage_datasets[name] = dataset
    if dataset.query and dataset.gallery:
      try:  # an evaluation with no scorable query fails now, not after training
        ranking.check_queries_usable(
            [r.pid for r in dataset.query], [r.camid for r in dataset.query],
            [r.pid for r in dataset.gallery],
            [r.camid for r in dataset.gallery])
      except ranking.NoValidQueryError as e:
        raise ranking.NoValidQueryError(
            f"stage {name!r} ({dataset.name}) cannot be evaluated: {e}"
        ) from None
  from_config.check_test_images_not_trained(stage_datasets)
  for name in config.stages:
    if source_key(name) in stage_datasets:
      _check_source_apart(name, stage_datasets[source_key(name)],
                          stage_datasets[name])
  return stage_datasets, skipped_images


def source_key(name: str) -> str:
  """The key of stage `name`'s labelled source set among the datasets."""
  return f"{name}/source"


def _load_source_dataset(name: str, stage: config_dict.ConfigDict,
                         config: config_dict.ConfigDict
                         ) -> records_lib.ReidDataset:
  """unsupervised.source_dataset / source_root, read as a stage's dataset;
  a failure names the two keys."""
  u = stage.unsupervised
  as_stage = config_dict.ConfigDict(dict(
      dataset=u.source_dataset, root=u.source_root, options="", split=0,
      split_seed=0))
  try:
    return from_config.load_stage_dataset(as_stage, config)
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise type(e)(
        f"config.stages.{name}.unsupervised.source_dataset="
        f"{u.source_dataset!r}, source_root={u.source_root!r}: {e}") from None


def _check_source_apart(name: str, source: records_lib.ReidDataset,
                        target: records_lib.ReidDataset) -> None:
  """Refuses a source holding the unlabelled stage's own training images:
  their labels would be the target's."""
  own = {os.path.realpath(r.path) for r in target.train}
  shared = [r.path for r in source.train if os.path.realpath(r.path) in own]
  if shared:
    raise ValueError(
        f"config.stages.{name}.unsupervised.source_root holds {len(shared)} "
        f"of stage {name!r}'s own training images (e.g. {shared[0]!r}): "
        "their labels would be the target's, which an unsupervised stage "
        "never reads. Point source_dataset / source_root at another set.")


def _start_run(config: config_dict.ConfigDict, workdir: str,
               strategy: tf.distribute.Strategy) -> runner.TrainingRun:
  """Seeds, precision, runtime.json, TensorBoard and progress of a run whose
  config.json is written."""
  # The chief writes `workdir`; other workers of a cluster write apart.
  out = distribute.output_dir(strategy, workdir)
  config_lib.save_config(config, out)
  keras.utils.set_random_seed(config.seed)
  if config.train.deterministic:
    tf.config.experimental.enable_op_determinism()
  # Every model of the run is built under this policy (restored on return).
  resolved = precision.resolve(config.train.precision,
                               backbone=config.model.backbone)
  logging.info("Precision %s (train.precision=%r: %s).", resolved.policy,
               resolved.requested, resolved.reason)
  kernels = onednn.status()
  hint = onednn.late_import_warning(kernels)
  if hint:
    logging.warning(hint)
  # The kernels and the CPU kind decide a float32 run's exact numbers.
  runs.write_json(runs.runtime_path(out), {"precision": resolved.to_json(),
                                           "onednn": kernels,
                                           "cpu": cpu_kind.describe()})
  keras.config.set_dtype_policy(resolved.policy)
  writer = tf.summary.create_file_writer(runs.tensorboard_dir(out))
  hparams.write_session_start(writer, config, workdir)  # HParams dashboard
  progress = runs.Progress.load(workdir)  # the chief's, in a cluster
  progress.check_order(config, workdir)
  return runner.TrainingRun(
      config=config, strategy=strategy, workdir=out,
      restore_dir=None if out == workdir else workdir, writer=writer,
      progress=progress)


def _train_labelled_stage(run: runner.TrainingRun, name: str,
                          stage: config_dict.ConfigDict, stage_index: int,
                          dataset: records_lib.ReidDataset,
                          evaluate) -> None:
  """Runs (or resumes) a supervised stage's two steps on its identities."""
  config = run.config
  num_classes = len({r.pid for r in dataset.train})
  steps = loop.stage_steps(
      name, stage,
      all_heads=stage_setup.step1_trains_all_heads(stage, stage_index))
  runner.run_steps(
      run, steps, num_classes=num_classes,
      make_dataset=lambda step: stage_setup.train_dataset_fn(
          dataset, stage, config, config.seed + 1000 * stage_index + step.step),
      start_model=lambda model: stage_setup.init_stage_model(
          model, stage, config, num_classes),
      evaluate=evaluate, input_images_tag=f"inputs/{name}")


def _evaluate_stage(run: runner.TrainingRun, name: str,
                    stage: config_dict.ConfigDict,
                    dataset: records_lib.ReidDataset, evaluate,
                    skipped: dict) -> dict:
  """Evaluates the model after a stage; writes eval/<stage>.json."""
  model = run.latest_model()
  if model is None:  # no training at all: evaluates the initial features
    with run.strategy.scope():
      model = run.model = stage_setup.init_stage_model(
          None, stage, run.config, len({r.pid for r in dataset.train}))
  with run.clock.phase("evaluation"):
    metrics = evaluate(model)
  if skipped["num_skipped"]:
    # Listed once, here and in metrics.json, not logged per pipeline.
    metrics["skipped_corrupt_images"] = skipped
  loop.write_eval_summaries(run.writer, metrics, run.iterations_done)
  runs.write_json(runs.stage_eval_path(run.workdir, name), metrics)
  print(f"Stage {name!r} evaluation: " + format_metrics(metrics), flush=True)
  return metrics


@precision.restores_policy
def train(config: config_dict.ConfigDict, workdir: str) -> dict:
  """Trains every stage of `config` in `workdir` and returns final metrics.

  Args:
    config: an experiment config (see configs/default.py).
    workdir: the run directory (its layout: keras_reid.runs).

  Returns:
    The last evaluated stage's metrics (rank1, rank5, rank10, rank20, mAP,
    mINP as fractions, ...), also written to workdir/metrics.json; empty if
    no stage has a query / gallery split.
  """
  check_config(config)
  _check_same_config(config, workdir)
  # First: MultiWorkerMirroredStrategy must exist before other TF ops run.
  strategy = distribute.make_strategy(config.train.distribute)
  stage_datasets, skipped_images = _load_stage_datasets(config)
  # One training at a time per run directory (a second start is refused
  # naming the holder's pid); released on return, on error and on SIGKILL.
  with runs.training_lock(distribute.output_dir(strategy, workdir)):
    return _train_stages(config, workdir, strategy, stage_datasets,
                         skipped_images)


def _train_stages(config: config_dict.ConfigDict, workdir: str,
                  strategy: tf.distribute.Strategy,
                  stage_datasets: dict[str, records_lib.ReidDataset],
                  skipped_images: dict) -> dict:
  """`train` once the config, the data and the run directory are checked."""
  run = _start_run(config, workdir, strategy)
  final_metrics: dict = {}

  for stage_index, (name, stage) in enumerate(config.stages.items()):
    dataset = stage_datasets[name]
    logging.info("Stage %s: %s", name, dataset.summary())
    if dataset.pid_names:  # string pids of a manifest: keep their numbering
      inspection.write_pid_names(dataset, runs.pid_names_path(run.workdir, name))
      logging.info("Stage %s: %s", name,
                   inspection.pid_names_summary(dataset.pid_names))
    evaluate = None
    if dataset.query and dataset.gallery:
      evaluate = functools.partial(
          stage_setup.evaluate_model, dataset=dataset, config=config,
          cuhk03_metric=stage_setup.stage_uses_cuhk03_metric(stage, config))
    if config_lib.is_unsupervised(stage):  # rounds of pseudo labels instead
      cotraining.run_stage(run, name=name, stage=stage,
                           stage_index=stage_index, dataset=dataset,
                           evaluate=evaluate,
                           source=stage_datasets.get(source_key(name)))
    else:
      _train_labelled_stage(run, name, stage, stage_index, dataset, evaluate)
    if evaluate is not None:
      final_metrics = _evaluate_stage(run, name, stage, dataset, evaluate,
                                      skipped_images[name])

  run.writer.flush()
  # Wall-clock, both from the run's clock: "_seconds" marks what varies
  # per run.
  phases = run.clock.breakdown()
  final_metrics = dict(final_metrics, train_seconds=phases["total_seconds"],
                       phase_seconds=phases)
  final_metrics["num_skipped_corrupt_images"] = sum(
      v["num_skipped"] for v in skipped_images.values())
  print(timing.describe(phases), flush=True)
  hparams.write_session_end(run.writer, final_metrics, run.iterations_done)
  runs.write_metrics(run.workdir, final_metrics)
  return final_metrics


def format_metrics(metrics: dict) -> str:
  """"rank1 43.3%, rank5 ..." for the metrics present."""
  return ", ".join(f"{k} {100 * metrics[k]:.1f}%" for k in ranking.METRIC_KEYS
                   if k in metrics)
