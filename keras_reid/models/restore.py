"""A run's training model, rebuilt from its config and loaded from its checkpoints.

Training checkpoints hold the model, the optimizer, the data iterator, the
dropout masks' seed states and the iteration counter
(keras_reid.training.loop); evaluation, export and a later stage read the
model weights (and seed states) only. Where the checkpoints are is
keras_reid.runs.

A checkpoint is read only after every tensor of it has been read back whole
(`usable_checkpoint`): a truncated, damaged or missing file (a full disk, a
copy cut short) makes evaluation, export and a resumed training fall back to
the newest earlier checkpoint that the step's CheckpointManager kept, saying
so in one warning line, or fail with one line naming the file.

A run's model has verification heads iff config.loss.ver_weight > 0
(builders.verification_heads), except for runs trained before that rule:
they have them whatever ver_weight says. Checkpoints address the model's
layers by position, so `rebuild_model` builds the layout the checkpoint
holds (`checkpoint_has_more_layers`), never a mismatching one.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

from absl import logging
import keras
import tensorflow as tf
from ml_collections import config_dict
from tensorflow.core.protobuf import trackable_object_graph_pb2

from keras_reid import runs
from keras_reid.models import builders

# The tf.train.Checkpoint child the training loop saves the model under, and
# the model's child holding its layers (Keras 3's functional models, by
# position in topological order).
_MODEL_KEY = "model"
_LAYERS_KEY = "_operations"


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


class UnreadableCheckpointError(OSError):
  """No readable checkpoint (an OSError: entry points print it as one line)."""


def _checkpoint_problem(prefix: str) -> tuple[str, str] | None:
  """Why the checkpoint `prefix` cannot be read, or None when it can.

  Reads every tensor (TensorFlow checks each one's CRC32C), so a file cut
  short or damaged anywhere is found, not only where a restore happens to
  read first.

  Returns:
    None, or (the file at fault, the reason).
  """
  index = prefix + ".index"
  if not os.path.isfile(index):
    return index, "missing"
  try:
    reader = tf.train.load_checkpoint(prefix)
  except (tf.errors.OpError, IndexError, ValueError) as e:
    return index, _reason(e)
  data = sorted(glob.glob(glob.escape(prefix) + ".data-*")) or [
      prefix + ".data-00000-of-00001"]
  try:
    dtypes = reader.get_variable_to_dtype_map()
    for key in sorted(dtypes):
      if dtypes[key] != tf.variant:  # a data iterator's state: not numeric
        reader.get_tensor(key)
  except (tf.errors.OpError, IndexError, ValueError) as e:
    # The reader says neither which shard nor which file; a step's
    # checkpoint has one shard.
    return " or ".join(data), _reason(e)
  return None


def _reason(error: Exception) -> str:
  text = getattr(error, "message", None) or str(error)
  text = " ".join(text.split())
  if "Read less bytes than requested" in text:
    return "cut short: " + text
  return text


def usable_checkpoint(prefix: str) -> str:
  """`prefix` if it reads whole, else the newest earlier readable one.

  The earlier checkpoints are the CheckpointManager's others in the same
  folder (<name>-<iteration>.index, lower iterations). A fallback is said in
  one warning line naming the bad file and the checkpoint used instead.

  Args:
    prefix: a checkpoint path prefix, e.g. <run>/checkpoints/<stage>/
      step2/ckpt-6.

  Returns:
    The prefix of the checkpoint to read.

  Raises:
    UnreadableCheckpointError: neither it nor an earlier one reads; names
      the bad file and the folder.
  """
  problem = _checkpoint_problem(prefix)
  if problem is None:
    return prefix
  bad_file, reason = problem
  match = re.fullmatch(r"(.*)-(\d+)", prefix)
  tried = []
  if match:
    base, number = match[1], int(match[2])
    earlier = []
    for index in glob.glob(glob.escape(base) + "-*.index"):
      found = re.fullmatch(re.escape(base) + r"-(\d+)\.index", index)
      if found and int(found[1]) < number:
        earlier.append((int(found[1]), index[:-len(".index")]))
    for iteration, candidate in sorted(earlier, reverse=True):
      if _checkpoint_problem(candidate) is None:
        logging.warning(
            "Checkpoint file %s is unreadable (%s); using the previous "
            "checkpoint %s (iteration %d) instead.", bad_file, reason,
            candidate, iteration)
        return candidate
      tried.append(os.path.basename(candidate))
  folder = os.path.dirname(prefix)
  raise UnreadableCheckpointError(
      f"Checkpoint file {bad_file} is unreadable ({reason}), and "
      + (f"no earlier checkpoint in {folder} reads either (tried "
         f"{', '.join(tried)})" if tried else
         f"{folder} keeps no earlier checkpoint")
      + ". Restore the run directory from a backup, or retrain it with a new "
      "--workdir.")


def restore_weights(model: keras.Model, checkpoint_path: str) -> None:
  """Restores model weights saved by training (optimizer state ignored)."""
  status = tf.train.Checkpoint(model=model).restore(checkpoint_path)
  status.expect_partial()
  status.assert_existing_objects_matched()


def _checkpoint_layer_count(checkpoint_path: str) -> int | None:
  """How many layers the checkpoint's model holds (None: no such record)."""
  reader = tf.train.load_checkpoint(checkpoint_path)
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))

  def child(node_id: int, name: str) -> int | None:
    for c in graph.nodes[node_id].children:
      if c.local_name == name:
        return c.node_id
    return None

  model = child(0, _MODEL_KEY)
  layers = None if model is None else child(model, _LAYERS_KEY)
  return None if layers is None else len(graph.nodes[layers].children)


def _layer_count(model: keras.Model) -> int:
  """How many layers a checkpoint of `model` holds (cf. the above)."""
  view = tf.train.TrackableView(model)
  return len(tf.train.TrackableView.children(view.children(model)[_LAYERS_KEY]))


def checkpoint_has_more_layers(model: keras.Model,
                               checkpoint_path: str) -> bool:
  """Whether the checkpoint's model has layers `model` lacks (for a model
  without verification heads: a run trained before ver_weight=0 dropped
  them)."""
  count = _checkpoint_layer_count(checkpoint_path)
  return count is not None and count > _layer_count(model)


def rebuild_model(config: config_dict.ConfigDict, num_classes: int,
                  checkpoint_path: str) -> keras.Model:
  """Builds the training model of `config` and loads a checkpoint into it.

  An unreadable checkpoint falls back to an earlier one of its folder
  (`usable_checkpoint`, which warns); none readable raises
  UnreadableCheckpointError.

  The model has verification heads where `config` asks for them
  (builders.verification_heads) and where the checkpoint has them (a run
  with loss.ver_weight=0 trained before such runs dropped them).
  """
  checkpoint_path = usable_checkpoint(checkpoint_path)
  model_config = config.model.copy_and_resolve_references()
  model_config.weights = ""  # the checkpoint supplies every weight

  def build(verification: bool) -> keras.Model:
    return builders.build_training_model(
        model_config, num_classes=num_classes,
        input_shape=(config.data.image_height, config.data.image_width, 3),
        seed=config.seed, verification=verification)

  verification = builders.verification_heads(config)
  model = build(verification)
  if not verification and checkpoint_has_more_layers(model, checkpoint_path):
    model = build(True)
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
