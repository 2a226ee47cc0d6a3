"""The tf.distribute strategy a run trains under."""

from __future__ import annotations

import json
import os

from absl import logging
import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")


def _mirrored_devices() -> list[str] | None:
  """Every local GPU; without GPUs, every logical CPU device if several.

  Several logical CPUs (tf.config.set_logical_device_configuration) let a
  machine without GPUs run (and test) two replicas; MirroredStrategy's own
  default would use one CPU only.
  """
  if tf.config.list_physical_devices("GPU"):
    return None  # MirroredStrategy's default: all local GPUs
  cpus = tf.config.list_logical_devices("CPU")
  return [d.name for d in cpus] if len(cpus) > 1 else None


def make_strategy(name: str) -> tf.distribute.Strategy:
  """Returns the strategy named by config.train.distribute.

  Args:
    name: "default" (one device), "mirrored" (all local GPUs, or all
      logical CPU devices on a machine without GPU),
      "multi_worker" (MultiWorkerMirroredStrategy across the machines listed
      in the TF_CONFIG environment variable), or "auto": multi_worker when
      TF_CONFIG names several workers, mirrored with several local GPUs,
      default otherwise.
  """
  if name not in STRATEGIES:
    raise ValueError(f"Unknown distribution strategy {name!r}; expected one "
                     f"of {STRATEGIES}.")
  if name == "auto":
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    if len(tf_config.get("cluster", {}).get("worker", [])) > 1:
      name = "multi_worker"
    elif len(tf.config.list_physical_devices("GPU")) > 1:
      name = "mirrored"
    else:
      name = "default"
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError(
          'train.distribute="multi_worker" needs the TF_CONFIG environment '
          "variable (cluster and task of this worker); see README.md.")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  elif name == "mirrored":
    strategy = tf.distribute.MirroredStrategy(devices=_mirrored_devices())
  else:
    strategy = tf.distribute.get_strategy()
  logging.info("Distribution: %s with %d replica(s).", name,
               strategy.num_replicas_in_sync)
  return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run directory (always, but in a cluster
  only the chief: worker 0, or the task of type "chief")."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (
      resolver.task_type == "worker" and resolver.task_id == 0
      and "chief" not in resolver.cluster_spec().as_dict())


def output_dir(strategy: tf.distribute.Strategy, workdir: str) -> str:
  """Where this process writes: `workdir` for the chief, and a private
  `workdir/workers/<task>` for the other workers of a cluster.

  Every worker must save its checkpoints (a collective save), but only the
  chief's are the run's: the others write theirs apart, so two processes
  never write one file, and every worker resumes from the chief's.
  """
  if is_chief(strategy):
    return workdir
  resolver = strategy.cluster_resolver
  return os.path.join(workdir, "workers",
                      f"{resolver.task_type}{resolver.task_id}")
