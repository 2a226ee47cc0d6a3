"""The run directory of `python -m keras_reid.train`: its layout, read and written here only.

    <workdir>/
      config.json                      the resolved config (keras_reid.config)
      runtime.json                     what train.precision resolved to
      progress.json                    finished fine-tuning steps (resume from here)
      metrics.json                     the final evaluation, train_seconds, phase_seconds
      checkpoints/<stage>/step<n>/     tf.train.CheckpointManager checkpoints;
      checkpoints/<stage>/round<r>/step<n>/   an unsupervised stage's rounds
      eval/<stage>.json                each stage's evaluation
      eval/<stage>/round<r>.json       before round r + 1 of an unsupervised stage
      cotrain/<stage>/round<r>.npz     a round's pseudo labels (and .json: their
                                       accuracy against the hidden identities;
                                       for clustering the clusters' quality)
      pid_names/<stage>.json           string pids of a manifest -> integers
      tensorboard/                     summaries, HParams, pictures
      eval.json, eval_report/          `python -m keras_reid.evaluate --workdir`
      eval_<dataset>.json,             the same with --dataset=<dataset>, another
        eval_<dataset>_report/         dataset than the run's (cross-dataset)
      tensorboard/eval_<dataset>/      its projector files (--projector)

Every module that reads or writes one of these goes through the paths and
helpers below (tests/layering_test.py checks that no other module names
them). This module and what it imports are TensorFlow-free, so comparing
runs needs NumPy only; rebuilding a run's model from its checkpoints is
keras_reid.models.restore.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
from typing import Any

from absl import logging

from keras_reid import config as config_lib

CONFIG_FILE = config_lib.CONFIG_FILE
PROGRESS_FILE = "progress.json"
METRICS_FILE = "metrics.json"
# What the run resolved at its (last) start: {"precision": {"requested",
# "policy", "reason"}, "onednn": {"TF_ENABLE_ONEDNN_OPTS", "enabled"}}
# (config.json keeps train.precision as given, "auto"; keras_reid/onednn.py).
RUNTIME_FILE = "runtime.json"
EVAL_REPORT_FILE = "eval.json"
_CHECKPOINTS_DIR = "checkpoints"
_EVAL_DIR = "eval"
_LABELS_DIR = "cotrain"
_PID_NAMES_DIR = "pid_names"
_TENSORBOARD_DIR = "tensorboard"
# Held (fcntl.flock) while a training writes the run: `training_lock`.
_LOCK_FILE = "train.lock"


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_FILE)


def progress_path(workdir: str) -> str:
  return os.path.join(workdir, PROGRESS_FILE)


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, METRICS_FILE)


def runtime_path(workdir: str) -> str:
  return os.path.join(workdir, RUNTIME_FILE)


_EVAL_REPORT_DIR = "eval_report"
# The TensorBoard tag prefix of the run's own evaluation (training's
# eval/rank1 ...); a cross-dataset one's is "eval_<dataset>", also the stem
# of its file names.
_EVAL_PREFIX = "eval"
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def _eval_name(dataset: str | None) -> str:
  """"eval" for the run's own dataset (None), else "eval_<dataset>"."""
  if dataset is None:
    return _EVAL_PREFIX
  if not _DATASET_NAME.match(dataset):
    raise ValueError(
        f"dataset {dataset!r} cannot name a report file: expected a "
        "dataset reader's name (letters, digits, '_', '-'), e.g. 'viper'.")
  return f"eval_{dataset}"


def eval_report_path(workdir: str, dataset: str | None = None) -> str:
  """Where `python -m keras_reid.evaluate --workdir` writes by default.

  Args:
    dataset: None for the run's own dataset (eval.json); another dataset's
      name for a cross-dataset evaluation, which gets its own file
      (eval_<dataset>.json) and never replaces the run's own report.
  """
  if dataset is None:
    return os.path.join(workdir, EVAL_REPORT_FILE)
  return os.path.join(workdir, f"{_eval_name(dataset)}.json")


def eval_report_dir(workdir: str, dataset: str | None = None) -> str:
  """The pictures of `eval_report_path`'s report: eval_report/, or
  eval_<dataset>_report/ for a cross-dataset evaluation."""
  if dataset is None:
    return os.path.join(workdir, _EVAL_REPORT_DIR)
  return os.path.join(workdir, f"{_eval_name(dataset)}_report")


def eval_tensorboard_prefix(dataset: str | None = None) -> str:
  """The TensorBoard tag prefix of an evaluation's pictures: "eval" (the
  run's own dataset, beside training's eval/rank1), "eval_<dataset>"."""
  return _eval_name(dataset)


def eval_projector_dir(workdir: str, dataset: str | None = None) -> str:
  """The TensorBoard run folder of `--projector`'s files: tensorboard/, or
  tensorboard/eval_<dataset>/ for a cross-dataset evaluation."""
  if dataset is None:
    return tensorboard_dir(workdir)
  return os.path.join(tensorboard_dir(workdir), _eval_name(dataset))


def tensorboard_dir(workdir: str) -> str:
  return os.path.join(workdir, _TENSORBOARD_DIR)


def checkpoints_dir(workdir: str) -> str:
  return os.path.join(workdir, _CHECKPOINTS_DIR)


def step_dir(workdir: str, key: str, step: int) -> str:
  """The CheckpointManager folder of step 1 or 2 of a stage or round.

  Args:
    key: the stage's name, or "<stage>/round<r>" (`round_key`).
  """
  return os.path.join(workdir, _CHECKPOINTS_DIR, key, f"step{step}")


def stage_eval_path(workdir: str, stage_name: str) -> str:
  return os.path.join(workdir, _EVAL_DIR, f"{stage_name}.json")


def round_eval_path(workdir: str, stage_name: str, round_index: int) -> str:
  """The evaluation of the model that makes round `round_index + 1`'s labels."""
  return os.path.join(workdir, _EVAL_DIR, stage_name, f"round{round_index}.json")


def round_labels_path(workdir: str, stage_name: str, round_index: int) -> str:
  """A round's pseudo labels (.npz, see training.cotraining.save_labels)."""
  return os.path.join(workdir, _LABELS_DIR, stage_name, f"round{round_index}.npz")


def round_label_report_path(workdir: str, stage_name: str,
                            round_index: int) -> str:
  """A round's pseudo-label accuracy against the hidden identities (for
  clustering: cluster count, outliers, pairwise precision / recall, purity)."""
  return os.path.join(workdir, _LABELS_DIR, stage_name, f"round{round_index}.json")


def pid_names_path(workdir: str, stage_name: str) -> str:
  return os.path.join(workdir, _PID_NAMES_DIR, f"{stage_name}.json")


@contextlib.contextmanager
def atomic_text_file(path: str, newline: str | None = None):
  """Yields a text file that replaces `path` whole when the block ends.

  Written to a temporary file beside `path`, then os.replace'd: a kill
  never leaves a half-written file, and a failure (the block's or the
  replace's) leaves no temporary file behind.

  Raises:
    IsADirectoryError: `path` is a folder; names it.
    OSError: the file could not be written (a full disk); names `path`.
  """
  if os.path.isdir(path):
    raise IsADirectoryError(
        f"{path} is a folder; expected the path of a file to write (e.g. "
        f"{os.path.join(path, 'out.json')}).")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "w", newline=newline) as f:
      yield f
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, OSError) and e.errno and not e.filename:
      # A write's error (a full disk) names no file: name the one written.
      raise OSError(e.errno, e.strerror, path) from e
    raise


def write_json(path: str, data: Any) -> None:
  """Writes `data` as indented JSON, atomically (`atomic_text_file`).

  NumPy scalars are written as floats.
  """
  with atomic_text_file(path) as f:
    json.dump(data, f, indent=2, default=float)


def read_metrics(workdir: str) -> dict | None:
  """The run's metrics.json, or None while the run has not finished."""
  path = metrics_path(workdir)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); it is written by "
                     "python -m keras_reid.train at the end of a run: "
                     "rerun the run's last command to rewrite it.") from None


def write_metrics(workdir: str, metrics: dict) -> None:
  write_json(metrics_path(workdir), metrics)


def has_trained(workdir: str) -> bool:
  """Whether any training step of the run has been checkpointed."""
  root = checkpoints_dir(workdir)
  return os.path.exists(progress_path(workdir)) or (
      os.path.isdir(root) and any(files for _, _, files in os.walk(root)))


# ---------------------------------------------------------------- progress


@dataclasses.dataclass
class FinishedStep:
  """A finished fine-tuning step.

  Attributes:
    stage: the stage's name, or "<stage>/round<r>" for a round (`round_key`).
    step: 1 or 2.
    num_classes: the model's classes at that point (rebuilding the model
      before restoring needs it).
    checkpoint: path prefix of the step's final checkpoint.
  """
  stage: str
  step: int
  num_classes: int
  checkpoint: str


# progress.json key of `FinishedStep.step` in runs written before the rename
# of "phase" to "step"; still read.
_OLD_STEP_KEY = "phase"


@dataclasses.dataclass
class Progress:
  """Which fine-tuning steps of a run are finished; saved after each one."""
  finished: list[FinishedStep] = dataclasses.field(default_factory=list)

  def is_finished(self, stage: str, step: int) -> bool:
    return any(f.stage == stage and f.step == step for f in self.finished)

  def has_started(self, stage: str) -> bool:
    """Whether any step of the stage (or round) `stage` has finished."""
    return any(f.stage == stage for f in self.finished)

  @property
  def last(self) -> FinishedStep | None:
    return self.finished[-1] if self.finished else None

  @classmethod
  def load(cls, workdir: str) -> "Progress":
    path = progress_path(workdir)
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
        _check_entry(step, finished)
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

  def check_order(self, config, workdir: str) -> None:
    """The finished steps must be the first steps `config` plans, in order.

    A hand-edited or swapped progress.json would otherwise make evaluate,
    export and resume use another step's weights silently.

    Raises:
      ValueError: naming progress.json, the entries and the planned order.
    """
    done = [(f.stage, f.step) for f in self.finished]
    planned = [(key, step) for key, step, _ in planned_steps(config)]
    if done != planned[:len(done)]:
      def names(steps):
        return [f"{key}/step{step}" for key, step in steps]
      raise ValueError(
          f"{progress_path(workdir)} lists the finished steps "
          f"{names(done)}, but the run's config trains "
          f"{names(planned)} in that order, so its entries were edited or "
          "belong to another run. Restore the file from a backup, or move "
          "it away to retrain this run from the start.")

  def save(self, workdir: str) -> None:
    write_json(progress_path(workdir), {"finished": [
        dict(dataclasses.asdict(p),
             checkpoint=os.path.relpath(p.checkpoint, workdir))
        for p in self.finished]})

  def record(self, workdir: str, step: FinishedStep) -> None:
    """Appends a finished step and saves progress.json."""
    self.finished.append(step)
    self.save(workdir)


def _check_entry(step: FinishedStep, earlier: list[FinishedStep]) -> None:
  """A progress entry names its own step's checkpoint, once.

  Raises:
    TypeError: the checkpoint lies outside the step's folder (or outside
      the run directory), or the step is listed twice.
  """
  expected_dir = os.path.relpath(step_dir("", step.stage, step.step))
  rel = step.checkpoint
  if (os.path.isabs(rel) or os.path.normpath(rel) != rel
      or os.path.dirname(rel) != expected_dir):
    raise TypeError(
        f"entry of {step.stage!r} step {step.step} names the checkpoint "
        f"{rel!r}; expected {expected_dir}/ckpt-<iteration> inside the run "
        "directory")
  if any(f.stage == step.stage and f.step == step.step for f in earlier):
    raise TypeError(f"{step.stage!r} step {step.step} is listed twice")


class RunInUseError(BlockingIOError):
  """Another process is training the run directory."""


@contextlib.contextmanager
def training_lock(workdir: str):
  """Holds the run directory's lock while a training writes it.

  An advisory lock (fcntl.flock) on workdir/train.lock, which holds the
  holder's pid: the kernel releases it when the process ends, however it
  ends, so a run killed with SIGKILL resumes without a stale lock.

  Raises:
    RunInUseError (an OSError, which entry points print as one line):
      another process holds the lock; names it and its pid.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, _LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
      raise RunInUseError(
          f"Run directory {workdir!r} is being trained by another process "
          f"(pid {holder or 'unknown'}, holding {path}). Wait for it to "
          "finish or stop it, or pass another --workdir.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    yield
  finally:
    os.close(fd)  # releases the lock


def round_key(stage_name: str, round_index: int) -> str:
  """The progress / checkpoint key of a round: "<stage>/round<r>" (r from 1)."""
  return f"{stage_name}/round{round_index}"


def stage_keys(name: str, stage) -> list[str]:
  """The keys a stage's steps are recorded under: its name for a labelled
  stage, one `round_key` per round for an unsupervised one."""
  if not config_lib.is_unsupervised(stage):
    return [name]
  return [round_key(name, r) for r in range(1, int(stage.unsupervised.rounds) + 1)]


def planned_steps(config) -> list[tuple[str, int, int]]:
  """Every fine-tuning step a config trains, in order.

  Returns:
    [(key, step, iterations), ...] for steps with iterations > 0; key as in
    `stage_keys`.
  """
  return [(key, step, int(iterations))
          for name, stage in config.stages.items()
          for key in stage_keys(name, stage)
          for step, iterations in ((1, stage.step1_iterations),
                                   (2, stage.step2_iterations))
          if int(iterations) > 0]


def total_iterations(config) -> int:
  """The run's last global iteration (TensorBoard's x axis at its end)."""
  return sum(iterations for _, _, iterations in planned_steps(config))


def load_finished_run(workdir: str) -> tuple[Any, Progress]:
  """A run's config and progress, which must hold a finished step.

  Raises:
    FileNotFoundError: the run has no config or no finished step.
  """
  config = config_lib.load_config(workdir)
  progress = Progress.load(workdir)
  progress.check_order(config, workdir)
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
  config, progress = load_finished_run(workdir)
  planned = [(key, step) for key, step, _ in planned_steps(config)]
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
