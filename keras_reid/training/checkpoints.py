"""Checkpoints and run progress: resume a killed run where it stopped.

A run directory holds, per fine-tuning step of every stage,
`checkpoints/<stage>/step<1|2>/` managed by `tf.train.CheckpointManager`
(model, optimizer, data iterator, dropout seed states, iteration counter),
and `progress.json`, which lists the steps already finished with the number of
classes of the model at that point and its final checkpoint. Knowing the
class count is what lets a later process rebuild the model before restoring.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from absl import logging
import keras
import tensorflow as tf
from ml_collections import config_dict

from keras_reid import config as config_lib
from keras_reid.models import builders

PROGRESS_FILE = "progress.json"


def step_dir(workdir: str, stage_name: str, step: int) -> str:
  return os.path.join(workdir, "checkpoints", stage_name, f"step{step}")


@dataclasses.dataclass
class FinishedStep:
  stage: str
  step: int  # 1 or 2
  num_classes: int
  checkpoint: str  # path prefix of the step's final checkpoint


# progress.json key of `FinishedStep.step` in runs written before the rename
# of "phase" to "step"; still read.
_OLD_STEP_KEY = "phase"


@dataclasses.dataclass
class Progress:
  """Which fine-tuning steps of a run are finished; saved after each one."""
  finished: list[FinishedStep] = dataclasses.field(default_factory=list)

  def is_finished(self, stage: str, step: int) -> bool:
    return any(f.stage == stage and f.step == step for f in self.finished)

  @property
  def last(self) -> FinishedStep | None:
    return self.finished[-1] if self.finished else None

  @classmethod
  def load(cls, workdir: str) -> "Progress":
    path = os.path.join(workdir, PROGRESS_FILE)
    if not os.path.exists(path):
      return cls()
    try:
      with open(path) as f:
        data = json.load(f)
      finished = []
      for item in data["finished"]:
        if isinstance(item, dict) and _OLD_STEP_KEY in item:
          item = dict(item)
          item["step"] = item.pop(_OLD_STEP_KEY)
        step = FinishedStep(**item)
        if not (isinstance(step.stage, str) and step.step in (1, 2)
                and isinstance(step.num_classes, int)
                and isinstance(step.checkpoint, str)):
          raise TypeError(f"bad entry {item!r}")
        # Stored relative to the run directory, so a run can be moved.
        step.checkpoint = os.path.join(workdir, step.checkpoint)
        finished.append(step)
    except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError too
      raise ValueError(
          f"{path} is damaged or not a keras_reid progress file "
          f"({type(e).__name__}: {e}). It should be {{\"finished\": [{{"
          "\"stage\", \"step\", \"num_classes\", \"checkpoint\"}, ...]}, "
          "written by python -m keras_reid.train. Restore it from a backup "
          "if you have one; otherwise move it away to retrain this run from "
          "the start, or pass a new --workdir.") from None
    return cls(finished)

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
  # A step's checkpoint also holds the dropout masks' seed states (see
  # loop.run_fine_tuning_step): the next step of a resumed run draws the
  # masks an uninterrupted run would.
  tf.train.Checkpoint(seeds=seed_state_variables(model)).restore(
      checkpoint_path).expect_partial()
  return model


def _finished_run(workdir: str) -> tuple[config_dict.ConfigDict, Progress]:
  """A run's config and progress, which must hold a finished step.

  Raises:
    FileNotFoundError: the run has no config or no finished step.
  """
  config = config_lib.load_config(workdir)
  progress = Progress.load(workdir)
  if progress.last is None:
    raise FileNotFoundError(
        f"Run {workdir!r} has no finished training step yet "
        f"({PROGRESS_FILE} is missing or empty); train it first.")
  return config, progress


def weights_origin(workdir: str) -> dict:
  """Which stage and step a run's latest weights come from.

  A run whose last finished step is not the last step of its config (it was
  interrupted, or is still training) is partial: a warning says so, and the
  returned dict, which evaluation reports and export_info.json record, has
  "complete": False.

  Returns:
    {"stage": name, "step": 1 or 2, "complete": bool, "finished": ["stage/
    stepN", ...], "config_ends_at": "stage/stepN"}.

  Raises:
    FileNotFoundError: the run has no config or no finished step.
  """
  config, progress = _finished_run(workdir)
  # An unsupervised stage (training/cotraining.py) trains its steps once per
  # round, as stage "<name>/round<r>".
  planned = [(key, step) for name, stage in config.stages.items()
             for key in ([f"{name}/round{r}"
                          for r in range(1, int(stage.unsupervised.rounds) + 1)]
                         if stage.get("supervision", "labels") != "labels"
                         else [name])
             for step, iterations in ((1, stage.step1_iterations),
                                      (2, stage.step2_iterations))
             if int(iterations) > 0]
  last = (progress.last.stage, progress.last.step)
  origin = {
      "stage": last[0], "step": last[1],
      "complete": bool(planned) and last == planned[-1],
      "finished": [f"{f.stage}/step{f.step}" for f in progress.finished],
      "config_ends_at": (f"{planned[-1][0]}/step{planned[-1][1]}"
                         if planned else None),
  }
  if not origin["complete"]:
    logging.warning(
        "Run %s is partial: its latest weights come from stage %r step %d, "
        "but its config ends at %s (the run was interrupted or is still "
        "training). Resume it with python -m keras_reid.train --workdir=%s "
        "for the final weights.", workdir, last[0], last[1],
        origin["config_ends_at"], workdir)
  return origin


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
  config, progress = _finished_run(workdir)
  model = rebuild_model(config, progress.last.num_classes,
                        progress.last.checkpoint)
  return model, config
