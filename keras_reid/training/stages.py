"""Staged transfer: ImageNet -> large Re-ID set -> small Re-ID set.

`train(config, workdir)` runs every stage of config.stages in order; each
stage is two-stepped (see loop.py). A run killed at any point resumes from
its checkpoints when started again with the same workdir and config.
"""

from __future__ import annotations

import functools
import json
import os
import time

from absl import logging
import keras
import tensorflow as tf
from ml_collections import config_dict

from keras_reid import config as config_lib
from keras_reid.data import augmentation
from keras_reid.data import datasets
from keras_reid.data import describe
from keras_reid.data import from_config
from keras_reid.data import image_files
from keras_reid.data import pipeline
from keras_reid.data import records as records_lib
from keras_reid.evaluation import extract
from keras_reid.evaluation import model_report
from keras_reid.evaluation import protocols
from keras_reid.evaluation import ranking
from keras_reid.evaluation import report
from keras_reid.models import backbones
from keras_reid.models import builders
from keras_reid.models import layers
from keras_reid.models import precision
from keras_reid.training import checkpoints
from keras_reid.training import cotraining
from keras_reid.training import distribute
from keras_reid.training import hparams
from keras_reid.training import loop

METRICS_FILE = "metrics.json"
# What the run resolved at its (last) start: {"precision": {"requested",
# "policy", "reason"}} (config.json keeps train.precision as given, "auto").
RUNTIME_FILE = "runtime.json"


def input_shape(config: config_dict.ConfigDict) -> tuple[int, int, int]:
  return (config.data.image_height, config.data.image_width, 3)


def train_dataset_fn(dataset: records_lib.ReidDataset,
                     stage: config_dict.ConfigDict,
                     config: config_dict.ConfigDict, normalization: str,
                     seed: int, labels=None):
  """input_context -> the stage's training batches (one pipeline per worker).

  The returned function also takes `first_batch` (make_train_dataset's), to
  resume a pipeline whose iterator could not be checkpointed. `labels`:
  pseudo labels instead of the pids (make_train_dataset's, co-training).
  """
  def make(context: tf.distribute.InputContext,
           first_batch: int = 0) -> tf.data.Dataset:
    return pipeline.make_train_dataset(
        dataset.train, ids_per_batch=stage.ids_per_batch,
        images_per_id=stage.images_per_id,
        image_size=(config.data.image_height, config.data.image_width),
        normalization=normalization,
        augment_copies=config.data.augment_copies,
        max_shift=config.data.max_shift, max_scale=config.data.max_scale,
        max_rotation_deg=config.data.max_rotation_deg, flip=config.data.flip,
        seed=seed + 7919 * context.input_pipeline_id,
        augment_seed=(config.seed if config.data.augment_mode == "fixed"
                      else None),
        skip_corrupt=config.data.skip_corrupt, first_batch=first_batch,
        cache_max_bytes=int(config.data.train_cache_mb * 2**20),
        labels=labels)
  return make


def evaluate_model(model: keras.Model, dataset: records_lib.ReidDataset,
                   config: config_dict.ConfigDict, *,
                   cuhk03_metric: bool = False) -> dict:
  """Evaluation of the training model on a dataset's query / gallery.

  SIR with config.eval's max_rank and rerank; with config.eval.cir_topk > 0
  also CIR re-scoring of the SIR top-k by the verification head (under
  "cir", see model_report.evaluate_dataset). cuhk03_metric: CUHK03's
  classic single-gallery-shot CMC (stage_uses_cuhk03_metric).
  """
  embedder = builders.build_embedder(model)

  @tf.function(reduce_retracing=True, autograph=False)
  def embed_images(images):
    return embedder(images, training=False)

  flip_test = bool(config.eval.flip_test)
  embed = extract.flip_averaged(embed_images) if flip_test else embed_images

  kwargs = dict(
      image_size=(config.data.image_height, config.data.image_width),
      normalization=builders.normalization_for(config.model),
      batch_size=config.data.eval_batch_size, max_rank=config.eval.max_rank,
      rerank=config.eval.rerank, cuhk03_metric=cuhk03_metric)
  if config.eval.cir_topk:
    scorer = extract.keras_pair_scorer(builders.build_pair_scorer(model))
    result = model_report.evaluate_dataset(
        embed, dataset, pair_scorer=scorer, cir_topk=config.eval.cir_topk,
        verification=False, **kwargs)
  else:
    result = extract.evaluate_embedder(embed, dataset, **kwargs)
  result["flip_test"] = flip_test
  return result


def stage_uses_cuhk03_metric(stage: config_dict.ConfigDict,
                             config: config_dict.ConfigDict) -> bool:
  """Whether the stage evaluates CUHK03's classic protocol (its first
  dataset is cuhk03 with protocol=old) and so its CMC is the
  single-gallery-shot one (not with config.eval.rerank)."""
  names = stage.dataset.split("+")
  options = from_config.parse_stage_options(stage.options, names)[names[0]]
  return (protocols.is_cuhk03_classic(names[0], options)
          and not config.eval.rerank)


def _init_stage_model(model: keras.Model | None, stage: config_dict.ConfigDict,
                      config: config_dict.ConfigDict,
                      num_classes: int) -> keras.Model:
  """The model a stage starts from, with new heads for its identities."""
  if stage.init == "backbone" or (stage.init == "previous" and model is None):
    return builders.build_training_model(
        config.model, num_classes=num_classes, input_shape=input_shape(config),
        seed=config.seed)
  if stage.init != "previous":  # a previous run's workdir
    model, _ = checkpoints.restore_training_model(stage.init)
  return builders.replace_classifiers(model, config.model,
                                      num_classes=num_classes,
                                      input_shape=input_shape(config),
                                      seed=config.seed)


# stage.step1_trains: what step 1 trains on the frozen base.
#   "new_layers": every newly created layer: all heads (classifiers,
#     verifiers, auxiliary trunks) in a stage built from the backbone's
#     weights, the replaced classifiers in a stage continuing a model;
#   "classifiers": the classifiers only (ablation; verifiers and auxiliary
#     trunks stay random through step 1 in a stage from ImageNet).
STEP1_TRAINS = ("new_layers", "classifiers")


def step1_trains_all_heads(stage: config_dict.ConfigDict,
                           stage_index: int) -> bool:
  """Whether the stage's step 1 trains every head (see STEP1_TRAINS).

  A stage builds all its heads anew when it starts from the backbone's
  weights: init="backbone", or init="previous" in the first stage (see
  `_init_stage_model`); otherwise only its classifiers are new.
  """
  fresh = stage.init == "backbone" or (stage.init == "previous" and
                                       stage_index == 0)
  return fresh and stage.step1_trains == "new_layers"


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
  expect_in("train.distribute", config.train.distribute, distribute.STRATEGIES)
  expect_in("data.augment_mode", config.data.augment_mode,
            augmentation.AUGMENT_MODES)
  expect_in("train.optimizer", config.train.optimizer, loop.OPTIMIZERS)
  expect_in("train.precision", config.train.precision, precision.PRECISIONS)
  expect_in("train.weight_decay_mode", config.train.weight_decay_mode,
            loop.WEIGHT_DECAY_MODES)
  for name, stage in config.stages.items():
    expect_in(f"stages.{name}.step1_trains", stage.step1_trains, STEP1_TRAINS)
    cotraining.check_stage(name, stage, config)
    for dataset in stage.dataset.split("+"):
      expect_in(f"stages.{name}.dataset", dataset, datasets.DATASETS)


def _has_trained(workdir: str) -> bool:
  """Whether any training step of the run has been checkpointed."""
  ckpt_root = os.path.join(workdir, "checkpoints")
  return os.path.exists(os.path.join(workdir, checkpoints.PROGRESS_FILE)) or (
      os.path.isdir(ckpt_root) and any(
          files for _, _, files in os.walk(ckpt_root)))


def _check_same_config(config: config_dict.ConfigDict, workdir: str) -> None:
  """A run resumes only with the config it started with.

  A run that has not checkpointed a single training step (e.g. it failed
  on a wrong dataset root) has nothing to resume: a changed config is then
  accepted and replaces config.json.
  """
  path = os.path.join(workdir, config_lib.CONFIG_FILE)
  if not os.path.exists(path):
    return
  previous = config_lib.load_config(workdir).to_dict()
  current = json.loads(config.to_json_best_effort())
  changed = sorted(k for k in set(previous) | set(current)
                   if previous.get(k) != current.get(k))
  if changed:
    if not _has_trained(workdir):
      logging.warning("Run directory %s has no checkpoint yet; its config "
                      "changed (sections %s) and is replaced.", workdir,
                      changed)
      return
    raise ValueError(
        f"Run directory {workdir!r} was started with a different config "
        f"(sections differing: {changed}). Resume with the same config, or "
        "pass a new --workdir.")



@precision.restores_policy
def train(config: config_dict.ConfigDict, workdir: str) -> dict:
  """Trains every stage of `config` in `workdir` and returns final metrics.

  Args:
    config: an experiment config (see configs/default.py).
    workdir: run directory: config.json, progress.json, checkpoints/,
      tensorboard/, eval/<stage>.json, metrics.json and runtime.json (the
      resolved train.precision) go here.

  Returns:
    The last evaluated stage's metrics (rank1, rank5, rank10, rank20, mAP,
    mINP as fractions, ...), also written to workdir/metrics.json; empty if
    no stage has a query / gallery split.
  """
  check_config(config)
  _check_same_config(config, workdir)
  # First: MultiWorkerMirroredStrategy must exist before other TF ops run.
  strategy = distribute.make_strategy(config.train.distribute)
  # The chief writes `workdir`; other workers of a cluster write apart.
  out = distribute.output_dir(strategy, workdir)
  # Every stage's dataset is read and every image it will use (train, query,
  # gallery) checked before config.json is written and before the first
  # training step: a wrong root, a corrupt query image or a stage training
  # on a later stage's test images fails here.
  stage_datasets, skipped_images = {}, {}
  for name, stage in config.stages.items():
    dataset = from_config.load_stage_dataset(stage, config)
    stage_datasets[name], skipped_images[name] = (
        image_files.check_dataset_images(
            dataset, skip_corrupt=config.data.skip_corrupt))
    dataset = stage_datasets[name]
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
  config_lib.save_config(config, out)
  keras.utils.set_random_seed(config.seed)
  if config.train.deterministic:
    tf.config.experimental.enable_op_determinism()
  # Every model of the run is built under this policy (restored on return).
  resolved = precision.resolve(config.train.precision,
                               backbone=config.model.backbone)
  logging.info("Precision %s (train.precision=%r: %s).", resolved.policy,
               resolved.requested, resolved.reason)
  report.write_json(os.path.join(out, RUNTIME_FILE),
                    {"precision": resolved.to_json()})
  keras.config.set_dtype_policy(resolved.policy)
  writer = tf.summary.create_file_writer(os.path.join(out, "tensorboard"))
  hparams.write_session_start(writer, config, workdir)  # HParams dashboard
  progress = checkpoints.Progress.load(workdir)  # the chief's, in a cluster
  normalization = builders.normalization_for(config.model)
  model = None
  global_offset = 0
  final_metrics: dict = {}
  started = time.perf_counter()

  for stage_index, (name, stage) in enumerate(config.stages.items()):
    dataset = stage_datasets[name]
    num_classes = len({r.pid for r in dataset.train})
    logging.info("Stage %s: %s", name, dataset.summary())
    if dataset.pid_names:  # string pids of a manifest: keep their numbering
      describe.write_pid_names(
          dataset, os.path.join(out, "pid_names", f"{name}.json"))
      logging.info("Stage %s: %s", name,
                   describe.pid_names_summary(dataset.pid_names))
    fine_tuning_steps = loop.stage_steps(
        name, stage, all_heads=step1_trains_all_heads(stage, stage_index))
    evaluate = None
    if dataset.query and dataset.gallery:
      evaluate = functools.partial(
          evaluate_model, dataset=dataset, config=config,
          cuhk03_metric=stage_uses_cuhk03_metric(stage, config))
    if cotraining.is_unsupervised(stage):  # rounds of pseudo labels instead
      model, global_offset = cotraining.run_stage(
          name=name, stage=stage, stage_index=stage_index, dataset=dataset,
          model=model, progress=progress, config=config, strategy=strategy,
          workdir=out, restore_dir=None if out == workdir else workdir,
          writer=writer, global_offset=global_offset, evaluate=evaluate,
          init_model=lambda m, n, stage=stage: _init_stage_model(
              m, stage, config, n),
          dataset_fn=lambda labels, seed, stage=stage, dataset=dataset: (
              train_dataset_fn(dataset, stage, config, normalization, seed,
                               labels=labels)),
          all_heads_first_round=step1_trains_all_heads(stage, stage_index))
      fine_tuning_steps = []
    stage_started = any(f.stage == name for f in progress.finished)
    for step in fine_tuning_steps:
      step.global_iteration_offset = global_offset
      global_offset += step.iterations
      if step.iterations == 0 or progress.is_finished(name, step.step):
        continue
      with strategy.scope():
        if model is None and progress.last is not None:
          model = checkpoints.rebuild_model(
              config, progress.last.num_classes, progress.last.checkpoint)
        if not stage_started:
          model = _init_stage_model(model, stage, config, num_classes)
          stage_started = True
      seed = config.seed + 1000 * stage_index + step.step
      make_dataset = train_dataset_fn(dataset, stage, config, normalization,
                                      seed)
      sample = next(iter(make_dataset(tf.distribute.InputContext())))
      loop.write_input_images(writer, sample["images"].numpy(),
                              f"inputs/{name}", step.global_iteration_offset)
      path = loop.run_fine_tuning_step(
          model, step, make_dataset=make_dataset, config=config,
          strategy=strategy, workdir=out,
          restore_dir=None if out == workdir else workdir, writer=writer,
          evaluate=evaluate)
      progress.finished.append(checkpoints.FinishedStep(
          name, step.step, num_classes, path))
      progress.save(out)

    if evaluate is not None:
      if model is None:
        with strategy.scope():
          if progress.last is not None:  # finished before this process
            model = checkpoints.rebuild_model(
                config, progress.last.num_classes, progress.last.checkpoint)
          else:  # no training at all: evaluates the initial features
            model = _init_stage_model(None, stage, config, num_classes)
      final_metrics = evaluate(model)
      if skipped_images[name]["num_skipped"]:
        # Listed once, here and in metrics.json, not logged per pipeline.
        final_metrics["skipped_corrupt_images"] = skipped_images[name]
      loop.write_eval_summaries(writer, final_metrics, global_offset)
      report.write_json(os.path.join(out, "eval", f"{name}.json"),
                        final_metrics)
      print(f"Stage {name!r} evaluation: " + format_metrics(final_metrics),
            flush=True)

  writer.flush()
  final_metrics = dict(final_metrics, train_seconds=time.perf_counter() - started)
  final_metrics["num_skipped_corrupt_images"] = sum(
      v["num_skipped"] for v in skipped_images.values())
  hparams.write_session_end(writer, final_metrics, global_offset)
  report.write_json(os.path.join(out, METRICS_FILE), final_metrics)
  return final_metrics


def format_metrics(metrics: dict) -> str:
  """"rank1 43.3%, rank5 ..." for the metrics present."""
  return ", ".join(f"{k} {100 * metrics[k]:.1f}%" for k in ranking.METRIC_KEYS
                   if k in metrics)
