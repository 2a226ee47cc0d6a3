"""A run's training model, rebuilt from its config and loaded from its checkpoints.

Training checkpoints hold the model, the optimizer, the data iterator, the
dropout masks' seed states and the iteration counter
(keras_reid.training.loop); evaluation, export and a later stage read the
model weights (and seed states) only. Where the checkpoints are is
keras_reid.runs.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from ml_collections import config_dict

from keras_reid import runs
from keras_reid.models import builders


def seed_state_variables(model: keras.Model) -> list[Any]:
  """The state variables of every Keras SeedGenerator in the model.

  Dropout masks come from these; `tf.train.Checkpoint` does not track them
  through the model, so they are checkpointed explicitly to make a resumed
  run draw the same masks as an uninterrupted one.
  """
  states = []
  for layer in model._flatten_layers(include_self=True, recursive=True):  # pylint: disable=protected-access
    for generator in getattr(layer, "_seed_generators", []):
      states.append(generator.state)
  return states


def restore_weights(model: keras.Model, checkpoint_path: str) -> None:
  """Restores model weights saved by training (optimizer state ignored)."""
  status = tf.train.Checkpoint(model=model).restore(checkpoint_path)
  status.expect_partial()
  status.assert_existing_objects_matched()


def rebuild_model(config: config_dict.ConfigDict, num_classes: int,
                  checkpoint_path: str) -> keras.Model:
  """Builds the training model of `config` and loads a checkpoint into it."""
  model_config = config.model.copy_and_resolve_references()
  model_config.weights = ""  # the checkpoint supplies every weight
  model = builders.build_training_model(
      model_config, num_classes=num_classes,
      input_shape=(config.data.image_height, config.data.image_width, 3),
      seed=config.seed)
  restore_weights(model, checkpoint_path)
  # A step's checkpoint also holds the dropout masks' seed states (see
  # loop.run_fine_tuning_step): the next step of a resumed run draws the
  # masks an uninterrupted run would.
  tf.train.Checkpoint(seeds=seed_state_variables(model)).restore(
      checkpoint_path).expect_partial()
  return model


def rebuild_latest(config: config_dict.ConfigDict,
                   progress: runs.Progress) -> keras.Model | None:
  """The model after the run's last finished step; None before the first."""
  last = progress.last
  if last is None:
    return None
  return rebuild_model(config, last.num_classes, last.checkpoint)


def restore_training_model(
    workdir: str) -> tuple[keras.Model, config_dict.ConfigDict]:
  """Rebuilds a run's training model and loads its latest finished weights.

  Args:
    workdir: the run directory of `python -m keras_reid.train`.

  Returns:
    (training model, the run's config).

  Raises:
    FileNotFoundError: the run has no config or no finished step yet.
  """
  config, progress = runs.load_finished_run(workdir)
  return rebuild_latest(config, progress), config
