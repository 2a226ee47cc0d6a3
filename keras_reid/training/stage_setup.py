"""What a stage trains from: its start model, its training batches, its evaluation.

Shared by labelled stages (stages.py) and the rounds of unsupervised ones
(cotraining.py).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from ml_collections import config_dict

from keras_reid.data import from_config
from keras_reid.data import pipeline
from keras_reid.data import records as records_lib
from keras_reid.evaluation import embedders
from keras_reid.evaluation import model_evaluation
from keras_reid.evaluation import protocols
from keras_reid.models import builders
from keras_reid.models import restore


def input_shape(config: config_dict.ConfigDict) -> tuple[int, int, int]:
  return (config.data.image_height, config.data.image_width, 3)


def train_dataset_fn(dataset: records_lib.ReidDataset,
                     stage: config_dict.ConfigDict,
                     config: config_dict.ConfigDict, seed: int, labels=None):
  """input_context -> the stage's training batches (one pipeline per worker).

  The returned function also takes `first_batch` (make_train_dataset's), to
  resume a pipeline whose iterator could not be checkpointed. `labels`:
  pseudo labels instead of the pids (make_train_dataset's, co-training).
  """
  normalization = builders.normalization_for(config.model)

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
        erasing_probability=config.data.random_erasing_prob,
        labels=labels)
  return make


def evaluate_model(model: keras.Model, dataset: records_lib.ReidDataset,
                   config: config_dict.ConfigDict, *,
                   cuhk03_metric: bool = False) -> dict:
  """Evaluation of the training model on a dataset's query / gallery.

  SIR with config.eval's max_rank and rerank; with config.eval.cir_topk > 0
  also CIR re-scoring of the SIR top-k by the verification head (under
  "cir", see model_evaluation.evaluate_dataset). cuhk03_metric: CUHK03's
  classic single-gallery-shot CMC (stage_uses_cuhk03_metric).
  """
  embed_images = builders.embedding_function(model)
  flip_test = bool(config.eval.flip_test)
  embed = embedders.flip_averaged(embed_images) if flip_test else embed_images

  kwargs = dict(
      image_size=(config.data.image_height, config.data.image_width),
      normalization=builders.normalization_for(config.model),
      batch_size=config.data.eval_batch_size, max_rank=config.eval.max_rank,
      rerank=config.eval.rerank, cuhk03_metric=cuhk03_metric)
  if config.eval.cir_topk:
    scorer = embedders.keras_pair_scorer(builders.build_pair_scorer(model))
    result = model_evaluation.evaluate_dataset(
        embed, dataset, pair_scorer=scorer, cir_topk=config.eval.cir_topk,
        verification=False, **kwargs)
  else:
    result = embedders.evaluate_embedder(embed, dataset, **kwargs)
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


def init_stage_model(model: keras.Model | None, stage: config_dict.ConfigDict,
                      config: config_dict.ConfigDict,
                      num_classes: int) -> keras.Model:
  """The model a stage starts from, with new heads for its identities.

  It has verification heads iff config.loss.ver_weight > 0
  (builders.verification_heads), except a stage continuing this run's
  model (init="previous"), which keeps that model's: a run trained before
  ver_weight=0 dropped them resumes with the layout its checkpoints hold.
  """
  if stage.init == "backbone" or (stage.init == "previous" and model is None):
    return builders.build_training_model(
        config.model, num_classes=num_classes, input_shape=input_shape(config),
        seed=config.seed, verification=builders.verification_heads(config))
  if stage.init != "previous":  # a previous run's workdir
    model, _ = restore.restore_training_model(stage.init)
    return new_classifiers(model, config, num_classes,
                           verification=builders.verification_heads(config))
  return new_classifiers(model, config, num_classes)


def new_classifiers(model: keras.Model, config: config_dict.ConfigDict,
                    num_classes: int, *,
                    verification: bool | None = None) -> keras.Model:
  """The model with its classifiers replaced by new ones for `num_classes`.

  verification: whether it has verification heads; None = as `model` has
  (builders.replace_classifiers).
  """
  return builders.replace_classifiers(model, config.model,
                                      num_classes=num_classes,
                                      input_shape=input_shape(config),
                                      seed=config.seed,
                                      verification=verification)


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
  `init_stage_model`); otherwise only its classifiers are new.
  """
  fresh = stage.init == "backbone" or (stage.init == "previous" and
                                       stage_index == 0)
  return fresh and stage.step1_trains == "new_layers"
