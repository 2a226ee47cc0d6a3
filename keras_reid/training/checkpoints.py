"""Checkpoints and run progress: resume a killed run where it stopped.

A run directory holds, per fine-tuning step ("phase") of every stage,
`checkpoints/<stage>/step<1|2>/` managed by `tf.train.CheckpointManager`
(model, optimizer, data iterator, dropout seed states, step counter), and
`progress.json`, which lists the phases already finished with the number of
classes of the model at that point and its final checkpoint. Knowing the
class count is what lets a later process rebuild the model before restoring.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import keras
import tensorflow as tf
from ml_collections import config_dict

from keras_reid import config as config_lib
from keras_reid.models import builders

PROGRESS_FILE = "progress.json"


def phase_dir(workdir: str, stage_name: str, phase: int) -> str:
  return os.path.join(workdir, "checkpoints", stage_name, f"step{phase}")


@dataclasses.dataclass
class FinishedPhase:
  stage: str
  phase: int
  num_classes: int
  checkpoint: str  # path prefix of the phase's final checkpoint


@dataclasses.dataclass
class Progress:
  """Which phases of a run are finished; persisted as JSON after each one."""
  finished: list[FinishedPhase] = dataclasses.field(default_factory=list)

  def is_finished(self, stage: str, phase: int) -> bool:
    return any(f.stage == stage and f.phase == phase for f in self.finished)

  @property
  def last(self) -> FinishedPhase | None:
    return self.finished[-1] if self.finished else None

  @classmethod
  def load(cls, workdir: str) -> "Progress":
    path = os.path.join(workdir, PROGRESS_FILE)
    if not os.path.exists(path):
      return cls()
    with open(path) as f:
      data = json.load(f)
    # Stored relative to the run directory, so a run can be moved or copied.
    return cls([FinishedPhase(**dict(
        item, checkpoint=os.path.join(workdir, item["checkpoint"])))
                for item in data["finished"]])

  def save(self, workdir: str) -> None:
    path = os.path.join(workdir, PROGRESS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump({"finished": [
          dict(dataclasses.asdict(p),
               checkpoint=os.path.relpath(p.checkpoint, workdir))
          for p in self.finished]}, f, indent=2)
    os.replace(tmp, path)  # atomic: a kill never leaves a half-written file


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


def model_checkpoint(model: keras.Model) -> tf.train.Checkpoint:
  """A checkpoint of the model weights only (what evaluation and export read)."""
  return tf.train.Checkpoint(model=model)


def restore_weights(model: keras.Model, checkpoint_path: str) -> None:
  """Restores model weights saved by training (optimizer state ignored)."""
  status = model_checkpoint(model).restore(checkpoint_path)
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
  return model


def restore_training_model(
    workdir: str) -> tuple[keras.Model, config_dict.ConfigDict]:
  """Rebuilds a run's training model and loads its latest finished weights.

  Args:
    workdir: the run directory of `python -m keras_reid.train`.

  Returns:
    (training model, the run's config).

  Raises:
    FileNotFoundError: the run has no config or no finished phase yet.
  """
  config = config_lib.load_config(workdir)
  progress = Progress.load(workdir)
  if progress.last is None:
    raise FileNotFoundError(
        f"Run {workdir!r} has no finished training step yet "
        f"({PROGRESS_FILE} is missing or empty); train it first.")
  model = rebuild_model(config, progress.last.num_classes,
                        progress.last.checkpoint)
  return model, config
