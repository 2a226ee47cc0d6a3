"""A running training run, and the one resume-aware runner of fine-tuning steps.

A labelled stage and each round of an unsupervised stage are the same thing
to this module: a key ("<stage>" or "<stage>/round<r>"), its two
fine-tuning steps, the number of classes its labels have and a function
making its training batches (from the dataset's identities, or from a
round's pseudo labels). `run_steps` runs the steps progress.json does not
list yet, building the model the key starts from before its first step and
restoring the latest finished one when this process has none.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras
import tensorflow as tf
from ml_collections import config_dict

from keras_reid import runs
from keras_reid.models import restore
from keras_reid.training import cluster_memory
from keras_reid.training import loop
from keras_reid.training import timing

# input_context (and first_batch=, for a resumed pipeline) -> training batches.
MakeDataset = Callable[..., tf.data.Dataset]


@dataclasses.dataclass
class TrainingRun:
  """What every stage and round of one training process shares.

  Attributes:
    config: the run's config.
    strategy: the distribution strategy every model is built under.
    workdir: where this process writes (a cluster's non-chief workers write
      apart, see distribute.output_dir).
    restore_dir: where a resumed step restores from and saved pseudo labels
      are read; None = workdir (the chief's run directory for the others).
    writer: the TensorBoard writer.
    progress: the finished steps (the chief's, in a cluster).
    model: the model in memory; None until this process builds or restores
      one.
    iterations_done: iterations of every step before the current one
      (TensorBoard's x axis), finished or not.
    clock: where this process's time goes (metrics.json "phase_seconds").
  """
  config: config_dict.ConfigDict
  strategy: tf.distribute.Strategy
  workdir: str
  restore_dir: str | None
  writer: tf.summary.SummaryWriter
  progress: runs.Progress
  model: keras.Model | None = None
  iterations_done: int = 0
  clock: timing.PhaseClock = dataclasses.field(
      default_factory=timing.PhaseClock)

  @property
  def read_dir(self) -> str:
    """The run directory a resumed process reads its earlier state from."""
    return self.restore_dir or self.workdir

  def latest_model(self) -> keras.Model | None:
    """The model in memory, or the last finished step's, restored; None
    when no step has finished."""
    if self.model is None and self.progress.last is not None:
      with self.strategy.scope():
        self.model = restore.rebuild_latest(self.config, self.progress)
    return self.model

  def all_finished(self, steps: list[loop.FineTuningStep]) -> bool:
    return all(s.iterations == 0 or self.progress.is_finished(s.stage, s.step)
               for s in steps)

  def skip(self, steps: list[loop.FineTuningStep]) -> None:
    """Counts finished steps' iterations without running them."""
    self.iterations_done += sum(s.iterations for s in steps)


def run_steps(run: TrainingRun, steps: list[loop.FineTuningStep], *,
              num_classes: int,
              make_dataset: Callable[[loop.FineTuningStep], MakeDataset],
              start_model: Callable[[keras.Model | None], keras.Model],
              evaluate: Callable[[keras.Model], dict] | None = None,
              input_images_tag: str | None = None,
              make_memory: Callable[[loop.FineTuningStep],
                                    cluster_memory.ClusterMemory | None]
              | None = None,
              config: config_dict.ConfigDict | None = None) -> None:
  """Runs (or resumes) the fine-tuning steps of one stage or round.

  Args:
    run: the running run; its model, progress and iterations_done advance.
    steps: the key's steps (loop.stage_steps), in order; a step with 0
      iterations or listed in progress.json is skipped.
    num_classes: the classes of the key's labels (recorded per step so that
      a later process can rebuild the model).
    make_dataset: step -> its training batches' factory
      (loop.run_fine_tuning_step's make_dataset).
    start_model: the model before the key's first step -> the model it
      trains (new classifiers for its labels); called under the strategy's
      scope, once, only when no step of the key has finished.
    evaluate: model -> metrics, every step.eval_every iterations.
    input_images_tag: write a batch of each step's inputs to TensorBoard
      under this tag (None = no pictures).
    make_memory: step -> its cluster memory at the step's start (or None),
      called under the strategy's scope ("clustering" rounds).
    config: the config the steps train with (default run.config), e.g. an
      unsupervised round's with the verification loss off.
  """
  config = run.config if config is None else config
  for step in steps:
    step.global_iteration_offset = run.iterations_done
    run.iterations_done += step.iterations
    if step.iterations == 0 or run.progress.is_finished(step.stage, step.step):
      continue
    with run.strategy.scope():
      model = run.latest_model()
      if not run.progress.has_started(step.stage):
        model = start_model(model)
      memory = make_memory(step) if make_memory else None
    run.model = model
    dataset_factory = make_dataset(step)
    if input_images_tag:
      with run.clock.phase("summaries"):
        sample = next(iter(dataset_factory(tf.distribute.InputContext())))
        loop.write_input_images(run.writer, sample["images"].numpy(),
                                input_images_tag, step.global_iteration_offset)
    checkpoint = loop.run_fine_tuning_step(
        model, step, make_dataset=dataset_factory, config=config,
        strategy=run.strategy, workdir=run.workdir,
        restore_dir=run.restore_dir, writer=run.writer, evaluate=evaluate,
        memory=memory, clock=run.clock)
    run.progress.record(run.workdir, runs.FinishedStep(
        step.stage, step.step, num_classes, checkpoint))
