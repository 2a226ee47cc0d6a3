"""The custom training loop for one fine-tuning step of a stage.

Vocabulary: each stage fine-tunes in two *steps*; a step runs a number of
*iterations* (optimizer updates).

Step 1 trains only the newly created layers with the base frozen, so that a
random new layer does not push garbage gradients into the pretrained base:
every head (classifiers, verifiers with the verification loss, auxiliary
trunks) in a stage from ImageNet, the replaced classifiers (classification
loss only) in a later stage (stage setting `step1_trains`); step 2 trains
every layer with classification + verification (+ auxiliary) losses. Each
step builds a fresh optimizer and a freshly traced `tf.function`, as the
paper's two steps are separate optimisations.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

from absl import logging
import keras
import numpy as np
import tensorflow as tf
from ml_collections import config_dict

from keras_reid import losses
from keras_reid import progress
from keras_reid import runs
from keras_reid.evaluation import ranking
from keras_reid.models import builders
from keras_reid.models import centers as centers_lib
from keras_reid.models import precision
from keras_reid.models import restore
from keras_reid.training import cluster_memory
from keras_reid.training import timing


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class FineTuningStep:
  """One fine-tuning step of a stage.

  Attributes:
    stage: the stage's name in config.stages.
    step: 1 (new layers only, base frozen) or 2 (all layers).
    iterations: optimizer updates to run.
    lr: initial learning rate.
    lr_decay_iterations: multiply the lr by lr_decay_factor every this many
      iterations.
    lr_decay_factor: see lr_decay_iterations.
    global_iteration_offset: iterations of the run before this step
      (TensorBoard x axis).
    eval_every: evaluate every this many iterations (0 = never inside the
      step).
    batch_size: images in one replica's batch (K x M), for images/s.
    all_heads: step 1 trains every layer outside the backbone (classifiers,
      verifiers with the verification loss, auxiliary trunks) instead of the
      classifiers only: a stage whose heads are all new (from ImageNet).
    lr_schedule: a name of LR_SCHEDULES: "step" (lr_decay_*) or "cosine".
    warmup_iterations: the lr rises linearly from warmup_start_factor * lr
      to lr over this many first iterations (0 = no warmup).
    warmup_start_factor: see warmup_iterations.
  """
  stage: str
  step: int
  iterations: int
  lr: float
  lr_decay_iterations: int
  lr_decay_factor: float
  global_iteration_offset: int = 0
  eval_every: int = 0
  batch_size: int = 0
  all_heads: bool = False
  lr_schedule: str = "step"
  warmup_iterations: int = 0
  warmup_start_factor: float = 0.1


def stage_steps(key: str, stage: config_dict.ConfigDict, *,
                all_heads: bool) -> list[FineTuningStep]:
  """A stage's (or a co-training round's) two fine-tuning steps.

  Args:
    key: FineTuningStep.stage (the stage's name, or "<stage>/round<r>").
    stage: the stage's config (step1_/step2_ iterations and lr, lr decay,
      eval_every, K x M).
    all_heads: step 1 trains every new head (see FineTuningStep).
  """
  batch_size = stage.ids_per_batch * stage.images_per_id
  schedule = dict(lr_schedule=stage.lr_schedule,
                  warmup_start_factor=stage.warmup_start_factor)
  return [
      FineTuningStep(key, 1, stage.step1_iterations, stage.step1_lr,
                     stage.lr_decay_iterations, stage.lr_decay_factor,
                     batch_size=batch_size, all_heads=all_heads,
                     warmup_iterations=stage.step1_warmup_iterations,
                     **schedule),
      FineTuningStep(key, 2, stage.step2_iterations, stage.step2_lr,
                     stage.lr_decay_iterations, stage.lr_decay_factor,
                     eval_every=stage.eval_every, batch_size=batch_size,
                     warmup_iterations=stage.step2_warmup_iterations,
                     **schedule)]


def loss_weights(loss_config: config_dict.ConfigDict, step: int, *,
                 verifiers_train: bool = False) -> dict:
  """The keyword arguments of losses.compute_losses for a fine-tuning step.

  Each loss of losses.LOSS_TERMS counts in the steps that train what it acts
  on (losses.step_settings): classification in both, verification in step 1
  only when the verifiers train too (`verifiers_train`,
  FineTuningStep.all_heads), the triplet and center losses (on the base) in
  step 2.
  """
  return losses.step_settings(loss_config, step,
                              verifiers_train=verifiers_train)


# config.train.optimizer -> (learning_rate, momentum, decoupled weight decay
# or None) -> optimizer. "adamw" decays decoupled by definition; "sgd" and
# "adam" decay as config.train.weight_decay_mode says.
OPTIMIZERS: dict[str, Callable[..., keras.optimizers.Optimizer]] = {
    "sgd": lambda lr, momentum, wd: keras.optimizers.SGD(
        learning_rate=lr, momentum=momentum, weight_decay=wd),
    "adam": lambda lr, momentum, wd: keras.optimizers.Adam(
        learning_rate=lr, weight_decay=wd),
    "adamw": lambda lr, momentum, wd: keras.optimizers.AdamW(
        learning_rate=lr, weight_decay=wd or 0.0),
}

# How config.train.weight_decay acts:
#   "coupled_l2": the paper's Caffe setup, wd * w added to the gradient of
#     every kernel (not biases, not BatchNorm parameters), i.e. the loss gets
#     wd / 2 * sum ||kernel||^2 (see `weight_decay_loss`);
#   "decoupled": Keras' optimizer `weight_decay` (w -= lr * wd * w on every
#     variable, outside the momentum), an ablation; about 10x weaker than
#     coupled at momentum 0.9 for the same value.
WEIGHT_DECAY_MODES = ("coupled_l2", "decoupled")


def coupled_weight_decay(train_config: config_dict.ConfigDict) -> float:
  """The coupled L2 coefficient the train step adds (0 when decoupled)."""
  if train_config.weight_decay_mode == "coupled_l2":
    return float(train_config.weight_decay)
  return 0.0


def decayed_variables(variables) -> list:
  """The kernels among `variables`: Conv / Dense / depthwise / pointwise.

  Biases, BatchNorm gamma / beta and moving statistics are not decayed, as
  in the paper's Caffe setup (decay_mult 0 on them).
  """
  return [v for v in variables if v.name.split(":")[0].endswith("kernel")]


def weight_decay_loss(variables, weight_decay: float) -> tf.Tensor:
  """wd / 2 * sum of squared kernels: its gradient is wd * kernel (Caffe L2).

  Args:
    variables: the trainable variables; only kernels count
      (`decayed_variables`).
    weight_decay: the L2 coefficient.

  Returns:
    float32 scalar.
  """
  kernels = decayed_variables(variables)
  if not weight_decay or not kernels:
    return tf.constant(0.0, tf.float32)
  return 0.5 * weight_decay * tf.add_n(
      [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in kernels])


# stage.lr_schedule: how a fine-tuning step's lr falls after its warmup.
#   "step": the paper's, lr * lr_decay_factor ** floor(t / lr_decay_iterations);
#   "cosine": half a cosine from lr down to 0 over the step's iterations after
#     the warmup (keras.optimizers.schedules.CosineDecay).
LR_SCHEDULES = ("step", "cosine")


class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
  """`schedule` scaled by a factor rising linearly from `start_factor` to 1.

  lr(t) = schedule(t) * (start_factor + (1 - start_factor) * min(t / W, 1)),
  t the optimizer's iteration (0 for the first update), W
  `warmup_iterations`: the bag-of-tricks warmup (Luo et al. 2019) in front
  of the step decay, whose decay points stay where they were.
  (keras.optimizers.schedules.CosineDecay has its own warmup, used for
  "cosine".)
  """

  def __init__(self, schedule: keras.optimizers.schedules.LearningRateSchedule,
               warmup_iterations: int, start_factor: float):
    self.schedule = schedule
    self.warmup_iterations = int(warmup_iterations)
    self.start_factor = float(start_factor)

  def __call__(self, step):
    t = keras.ops.cast(step, "float32")
    done = keras.ops.minimum(t / float(max(1, self.warmup_iterations)), 1.0)
    factor = self.start_factor + (1.0 - self.start_factor) * done
    return self.schedule(step) * factor

  def get_config(self) -> dict:
    return dict(
        schedule=keras.optimizers.schedules.serialize(self.schedule),
        warmup_iterations=self.warmup_iterations,
        start_factor=self.start_factor)

  @classmethod
  def from_config(cls, config: dict) -> "LinearWarmup":
    config = dict(config)
    config["schedule"] = keras.optimizers.schedules.deserialize(
        config["schedule"])
    return cls(**config)


def learning_rate_schedule(
    step: FineTuningStep) -> keras.optimizers.schedules.LearningRateSchedule:
  """The lr of `step` as a function of its optimizer's iteration t.

  A fresh optimizer per step counts t from 0, and the checkpoint restores
  it, so a resumed step continues on the same lr curve.

  Returns:
    "step" without warmup: the paper's ExponentialDecay(staircase) exactly;
    "step" with warmup: LinearWarmup over it; "cosine": CosineDecay from
    warmup_start_factor * lr up to lr over the warmup, then down to 0 at the
    step's last iteration.

  Raises:
    ValueError: an unknown step.lr_schedule.
  """
  if step.lr_schedule not in LR_SCHEDULES:
    raise ValueError(f"lr_schedule={step.lr_schedule!r} (stage "
                     f"{step.stage!r}): expected one of {list(LR_SCHEDULES)}.")
  warmup = int(step.warmup_iterations)
  if step.lr_schedule == "cosine":
    return keras.optimizers.schedules.CosineDecay(
        step.lr * step.warmup_start_factor if warmup else step.lr,
        decay_steps=max(1, step.iterations - warmup), alpha=0.0,
        warmup_target=step.lr if warmup else None, warmup_steps=warmup)
  schedule = keras.optimizers.schedules.ExponentialDecay(
      step.lr, decay_steps=max(1, step.lr_decay_iterations),
      decay_rate=step.lr_decay_factor, staircase=True)
  if warmup:
    schedule = LinearWarmup(schedule, warmup, step.warmup_start_factor)
  return schedule


def make_optimizer(train_config: config_dict.ConfigDict,
                   step: FineTuningStep, *,
                   loss_scaling: bool = False) -> keras.optimizers.Optimizer:
  """The configured optimizer with the step's lr schedule
  (`learning_rate_schedule`; by default the paper's step-wise decay).

  With weight_decay_mode "coupled_l2" the optimizer itself has no weight
  decay: the train step adds the L2 term (`weight_decay_loss`).
  `loss_scaling` wraps it in a LossScaleOptimizer: for a float16 model only
  (precision.uses_loss_scaling); bfloat16 has float32's exponent range.
  """
  schedule = learning_rate_schedule(step)
  if train_config.optimizer not in OPTIMIZERS:
    raise ValueError(f"config.train.optimizer={train_config.optimizer!r}: "
                     f"expected one of {sorted(OPTIMIZERS)}.")
  if train_config.weight_decay_mode not in WEIGHT_DECAY_MODES:
    raise ValueError(
        f"config.train.weight_decay_mode={train_config.weight_decay_mode!r}: "
        f"expected one of {list(WEIGHT_DECAY_MODES)}.")
  decoupled = train_config.weight_decay_mode == "decoupled"
  if train_config.optimizer == "adamw" and not decoupled:
    raise ValueError(
        "config.train.optimizer='adamw' decays decoupled by definition, but "
        "train.weight_decay_mode='coupled_l2'; set "
        "--config.train.weight_decay_mode=decoupled, or "
        "--config.train.optimizer=adam for Adam with coupled L2.")
  wd = (train_config.weight_decay or None) if decoupled else None
  optimizer = OPTIMIZERS[train_config.optimizer](
      schedule, train_config.momentum, wd)
  if loss_scaling:
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def _accuracies(outputs: dict, labels: tf.Tensor,
                pair_same: tf.Tensor) -> dict[str, tf.Tensor]:
  if labels.shape.rank == 2:  # soft labels: the most likely class
    labels = tf.argmax(labels, axis=-1)
  predicted = tf.argmax(outputs["logits"], axis=-1)
  result = {"accuracy/cls": tf.reduce_mean(tf.cast(
      tf.equal(predicted, tf.cast(labels, predicted.dtype)), tf.float32))}
  if "verification_logits" in outputs:
    same = tf.argmax(outputs["verification_logits"], axis=-1)
    result["accuracy/ver"] = tf.reduce_mean(tf.cast(
        tf.equal(same, tf.cast(pair_same > 0.5, same.dtype)), tf.float32))
  return result


@dataclasses.dataclass
class CenterState:
  """The center loss's class centres and their own optimizer in a step.

  Attributes:
    centers: float32 [N, D] variable (keras_reid.models.centers).
    optimizer: plain SGD at config.loss.center_lr on the unweighted center
      loss (the bag of tricks: the centres' gradient divided by the loss
      weight, lr 0.5), so that their speed does not depend on the weight,
      the step's lr schedule or its optimizer.
  """
  centers: keras.Variable
  optimizer: keras.optimizers.Optimizer


def make_center_state(model: keras.Model,
                      weights: dict) -> CenterState | None:
  """Fresh centres for the model's classes when the step has the center
  loss on, else None. Call it under the strategy's scope.

  Args:
    model: the training model ("logits" [B, N], "embedding" [B, D]).
    weights: the step's `loss_weights` (center_weight, center_lr).
  """
  if not weights.get("center_weight", 0) > 0:
    return None
  num_classes = int(model.output["logits"].shape[-1])
  dim = int(model.output["embedding"].shape[-1])
  centers = centers_lib.make_centers(num_classes, dim)
  optimizer = keras.optimizers.SGD(learning_rate=float(weights["center_lr"]))
  optimizer.build([centers])
  return CenterState(centers, optimizer)


def distinct_pair_indices(pair_i, pair_j):
  """The distinct pairs of a batch's pairs, and where each pair is among them.

  Args:
    pair_i, pair_j: int [P] batch indices (pipeline.pair_indices repeats
      each positive pair about negatives / positives times).

  Returns:
    (distinct_i int32 [U], distinct_j int32 [U], copies int32 [P]), the U
    distinct (i, j) in order of first appearance: pair p is distinct pair
    copies[p], so tf.gather(f(distinct pairs), copies) == f(pairs) for any
    per-pair f.
  """
  pair_i, pair_j = tf.cast(pair_i, tf.int64), tf.cast(pair_j, tf.int64)
  stride = tf.maximum(tf.reduce_max(pair_j), 0) + 1  # j < stride
  keys, copies = tf.unique(pair_i * stride + pair_j, out_idx=tf.int32)
  return (tf.cast(keys // stride, tf.int32), tf.cast(keys % stride, tf.int32),
          copies)


def make_train_iteration(model: keras.Model,
                         optimizer: keras.optimizers.Optimizer,
                         strategy: tf.distribute.Strategy, weights: dict, *,
                         jit_compile: bool,
                         distinct_pairs: bool = False,
                         weight_decay: float = 0.0,
                         center_state: CenterState | None = None,
                         memory: cluster_memory.ClusterMemory | None = None
                         ) -> Callable:
  """A `tf.function` running one distributed iteration from an iterator.

  Args:
    model, optimizer, strategy: what trains, how, where.
    weights: keyword arguments of losses.compute_losses (`loss_weights`).
    jit_compile: XLA-compile the replica step.
    distinct_pairs: run the verification heads once per distinct
      (pair_i, pair_j) of the batch and gather their logits back to the
      batch's P pairs (`distinct_pair_indices`), instead of once per pair:
      the loss is the same mean over the P pairs, but the repeated copies of
      a positive pair (pipeline.pair_indices tiles them to match the
      negatives) share one pairwise dropout mask instead of one each. Not
      with jit_compile (tf.unique has no XLA kernel).
    weight_decay: coupled L2 on the trainable kernels
      (`weight_decay_loss`; 0 = none, e.g. when the optimizer decays).
    center_state: the center loss's centres (`make_center_state`): the
      step adds the "center_distances" output losses.center_loss reads and
      updates the centres by their own optimizer.
    memory: a "clustering" round's cluster memory: its similarities to the
      embeddings are the output "cluster_similarities" the cluster-memory
      loss reads, and it is updated with the batch after the optimizer
      step (one replica only).

  Returns:
    iteration(iterator) -> dict of scalars: "loss/<term>" for every loss term
    (including "loss/total", which excludes the L2 term), "loss/l2" when
    weight_decay > 0, and "accuracy/cls", "accuracy/ver".
  """
  variables = model.trainable_variables
  num_replicas = strategy.num_replicas_in_sync

  if distinct_pairs and jit_compile:
    raise ValueError(
        "config.train.distinct_pairs=True with config.train.jit_compile=True: "
        "the distinct pairs come from tf.unique, which XLA cannot compile; "
        "set one of them to False.")

  def replica_iteration(batch):
    pair_i, pair_j = batch["pair_i"], batch["pair_j"]
    if distinct_pairs:
      pair_i, pair_j, copies = distinct_pair_indices(pair_i, pair_j)
    with tf.GradientTape(persistent=center_state is not None) as tape:
      outputs = model({"images": batch["images"], "pair_i": pair_i,
                       "pair_j": pair_j}, training=True)
      if distinct_pairs:
        outputs = {k: tf.gather(v, copies)
                   if k.endswith("verification_logits") else v
                   for k, v in outputs.items()}
      # Mixed precision computes in bfloat16 / float16; the losses, their
      # softmax and the L2 term are taken in float32.
      outputs = {k: tf.cast(v, tf.float32) for k, v in outputs.items()}
      if center_state is not None:
        outputs["center_distances"] = centers_lib.squared_distances(
            outputs["embedding"], center_state.centers)
      if memory is not None:
        outputs["cluster_similarities"] = memory.similarities(
            outputs["embedding"])
      terms = losses.compute_losses(outputs, batch["labels"],
                                    batch["pair_same"], **weights)
      l2 = weight_decay_loss(variables, weight_decay)
      # Each replica averages over its own batch; gradients are summed
      # across replicas, hence the division.
      loss = (terms["total"] + l2) / num_replicas
      if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        loss = optimizer.scale_loss(loss)
      if center_state is not None:
        # The unweighted term (float32, never loss-scaled) moves the centres.
        center_loss = terms["center"] / num_replicas
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    if center_state is not None:
      center_grad = tape.gradient(center_loss, center_state.centers)
      center_state.optimizer.apply_gradients(
          [(center_grad, center_state.centers)])
    if memory is not None:
      memory.update(outputs["embedding"], batch["labels"])
    result = {f"loss/{k}": v for k, v in terms.items()}
    if weight_decay:
      result["loss/l2"] = l2
    result.update(_accuracies(outputs, batch["labels"], batch["pair_same"]))
    return result

  if jit_compile:
    replica_iteration = tf.function(replica_iteration, jit_compile=True)

  @tf.function
  def iteration(iterator):
    per_replica = strategy.run(replica_iteration, args=(next(iterator),))
    return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in per_replica.items()}

  return iteration


def _all_finite(variables) -> bool:
  return all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in variables)


@dataclasses.dataclass
class _StepState:
  """What a fine-tuning step checkpoints, and where."""
  checkpoint: tf.train.Checkpoint
  manager: tf.train.CheckpointManager
  iterator: object
  iterations_done: tf.Variable


def _restore_or_start(model: keras.Model, optimizer, step: FineTuningStep, *,
                      make_dataset, config: config_dict.ConfigDict,
                      strategy: tf.distribute.Strategy, workdir: str,
                      restore_dir: str | None,
                      center_state: CenterState | None = None,
                      memory: cluster_memory.ClusterMemory | None = None
                      ) -> _StepState:
  """The step's checkpointed state, restored from its latest checkpoint if
  it has one (model, optimizer, data iterator, dropout seeds, counter, and
  the center loss's centres and their optimizer when it is on, the cluster
  memory of a "clustering" round's step)."""
  dataset = strategy.distribute_datasets_from_function(make_dataset)
  iterator = iter(dataset)
  iterations_done = tf.Variable(0, dtype=tf.int64, trainable=False)
  # Checkpoint key "step" kept, so that earlier versions' checkpoints restore.
  state = dict(model=model, optimizer=optimizer, step=iterations_done,
               seeds=restore.seed_state_variables(model))
  if center_state is not None:  # only then: older checkpoints still match
    state.update(centers=center_state.centers,
                 center_optimizer=center_state.optimizer)
  if memory is not None:
    state["cluster_memory"] = memory
  # The iterators of MirroredStrategy and MultiWorkerMirroredStrategy cannot
  # be checkpointed (not Trackable in TF 2.21): their pipelines are restarted
  # at the batch where the run stopped instead (below).
  iterator_saved = isinstance(iterator, tf.__internal__.tracking.Trackable)
  if iterator_saved:
    state["iterator"] = iterator
  checkpoint = tf.train.Checkpoint(**state)
  manager = tf.train.CheckpointManager(
      checkpoint, runs.step_dir(workdir, step.stage, step.step),
      max_to_keep=config.train.max_checkpoints)
  latest = (tf.train.latest_checkpoint(runs.step_dir(
      restore_dir, step.stage, step.step)) if restore_dir
            else manager.latest_checkpoint)
  if latest:
    # A checkpoint cut short (a full disk, a kill mid-write of a copy) falls
    # back to the manager's previous one: its iterations are trained again.
    latest = restore.usable_checkpoint(latest)
    checkpoint.restore(latest).assert_existing_objects_matched()
    done = int(iterations_done.numpy())
    logging.info("Resuming %s step %d at iteration %d from %s", step.stage,
                 step.step, done, latest)
    if not iterator_saved and done:
      # Batch t of a pipeline depends on (seed, t) only; each pipeline has
      # fed num_replicas_in_sync / num_input_pipelines batches per
      # iteration.
      def resumed(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_iteration = (context.num_replicas_in_sync
                         // max(1, context.num_input_pipelines))
        return make_dataset(context, first_batch=done * per_iteration)
      iterator = iter(strategy.distribute_datasets_from_function(resumed))
  return _StepState(checkpoint, manager, iterator, iterations_done)


def _write_scalars(writer: tf.summary.SummaryWriter, values: dict,
                   optimizer, throughput: float, step: int) -> None:
  with writer.as_default(step=step):
    for name, value in values.items():
      tf.summary.scalar(name, value)
    tf.summary.scalar("lr", optimizer.learning_rate)
    tf.summary.scalar("throughput/images_per_sec", throughput)


def run_fine_tuning_step(
    model: keras.Model, step: FineTuningStep, *,
    make_dataset: Callable[[tf.distribute.InputContext], tf.data.Dataset],
    config: config_dict.ConfigDict, strategy: tf.distribute.Strategy,
    workdir: str, writer: tf.summary.SummaryWriter,
    evaluate: Callable[[keras.Model], dict] | None = None,
    restore_dir: str | None = None,
    memory: cluster_memory.ClusterMemory | None = None,
    clock: timing.PhaseClock | None = None) -> str:
  """Runs (or resumes) one fine-tuning step and returns its final checkpoint.

  Args:
    model: the training model (see builders.build_training_model).
    step: what to run.
    make_dataset: input_context -> infinite tf.data.Dataset of training
      batches (see keras_reid.data.pipeline.make_train_dataset). Under a
      strategy whose iterator cannot be checkpointed (mirrored,
      multi_worker) a resumed step calls it with `first_batch=` too.
    config: the run's config (train, loss, model sections are read).
    strategy: the distribution strategy the model was built under.
    workdir: run directory; checkpoints go to runs.step_dir.
    writer: TensorBoard writer.
    evaluate: model -> metrics dict, called every step.eval_every
      iterations.
    restore_dir: the run directory whose latest checkpoint a resumed step
      restores; default `workdir`. A cluster's non-chief workers save into
      their own `workdir` but resume from the chief's checkpoints, so that
      every worker restarts from the same iteration.
    memory: the cluster memory of a "clustering" round's step (see
      make_train_iteration), checkpointed with the step; None = none.
    clock: the run's phase clock (keras_reid.training.timing): the step's
      start-up through its first iteration, its other iterations, its
      evaluations, checkpoints and summaries; None = a clock of this call
      alone.

  Raises:
    NonFiniteLossError: the loss became NaN/inf (the checkpoints keep the
      last good state).
  """
  if memory is not None and strategy.num_replicas_in_sync > 1:
    # Each replica would update the memory with its own batch slice.
    raise ValueError(
        f"config.loss.cluster_memory_weight={config.loss.cluster_memory_weight}"
        f" in stage {step.stage!r} runs on one replica, not "
        f"{strategy.num_replicas_in_sync}: set --config.train.distribute="
        "default, or --config.loss.cluster_memory_weight=0.")
  clock = clock or timing.PhaseClock()
  step_started = time.perf_counter()
  builders.set_step_trainable(model, step.step,
                              freeze_bn=config.model.freeze_bn,
                              all_heads=step.all_heads)
  with strategy.scope():
    optimizer = make_optimizer(
        config.train, step,
        loss_scaling=precision.uses_loss_scaling(model.dtype_policy.name))
    optimizer.build(model.trainable_variables)
    weights = loss_weights(config.loss, step.step,
                           verifiers_train=step.all_heads)
    center_state = make_center_state(model, weights)
  state = _restore_or_start(model, optimizer, step, make_dataset=make_dataset,
                            config=config, strategy=strategy, workdir=workdir,
                            restore_dir=restore_dir, center_state=center_state,
                            memory=memory)
  manager = state.manager
  train_iteration = make_train_iteration(
      model, optimizer, strategy, weights,
      jit_compile=config.train.jit_compile,
      distinct_pairs=config.train.distinct_pairs,
      weight_decay=coupled_weight_decay(config.train),
      center_state=center_state, memory=memory)
  start = int(state.iterations_done.numpy())
  trains = ("all layers" if step.step == 2 else
            "new heads only" if step.all_heads else "new classifiers only")
  print(f"Stage {step.stage!r}, step {step.step} ({trains}): "
        f"iterations {start}..{step.iterations}", flush=True)
  progbar = progress.make_progress(step.iterations, initial=start)
  progbar.update(start)
  images_per_iteration = step.batch_size * strategy.num_replicas_in_sync
  last_time, last_iteration = time.perf_counter(), start

  def save():
    if not _all_finite(model.trainable_variables):
      raise NonFiniteLossError(
          f"Weights became NaN/inf in stage {step.stage!r} step "
          f"{step.step} at iteration {int(state.iterations_done.numpy())}; "
          f"not saving. Last good checkpoint: {manager.latest_checkpoint}.")
    with clock.phase("checkpoint_saves"):
      return manager.save(
          checkpoint_number=int(state.iterations_done.numpy()))

  for iteration in range(start, step.iterations):
    began = time.perf_counter()
    values = train_iteration(state.iterator)
    total = float(values["loss/total"])  # waits for the iteration to end
    first = iteration == start  # traces the step: start-up's last part
    ended = time.perf_counter()
    clock.add("step_start" if first else "iterations",
              ended - (step_started if first else began))
    clock.count_iteration(images_per_iteration, first=first)
    if not math.isfinite(total):
      raise NonFiniteLossError(
          f"Loss is {total} in stage {step.stage!r} step {step.step} at "
          f"iteration {iteration} (lr {step.lr}). The last good checkpoint is "
          f"kept: {manager.latest_checkpoint}. Lower the learning rate "
          "(--config.stages.<name>.step<n>_lr) or check the data, then rerun "
          "with the same --workdir to resume from it.")
    completed = iteration + 1
    state.iterations_done.assign(completed)
    progbar.update(completed, [("loss", total),
                               ("acc", float(values["accuracy/cls"]))])
    global_iteration = step.global_iteration_offset + completed
    if completed % config.train.log_every == 0 or completed == step.iterations:
      now = time.perf_counter()
      throughput = (images_per_iteration * (completed - last_iteration)
                    / (now - last_time))
      last_time, last_iteration = now, completed
      with clock.phase("summaries"):
        _write_scalars(writer, values, optimizer, throughput,
                       global_iteration)
    if completed % config.train.checkpoint_every == 0:
      save()
    if evaluate and step.eval_every and completed % step.eval_every == 0:
      with clock.phase("evaluation"):
        metrics = evaluate(model)
      with clock.phase("summaries"):
        write_eval_summaries(writer, metrics, global_iteration)
  if start == step.iterations:  # resumed at its end: start-up only
    clock.add("step_start", time.perf_counter() - step_started)
  path = save()
  with clock.phase("summaries"):
    writer.flush()
  return path


def write_eval_summaries(writer: tf.summary.SummaryWriter, metrics: dict,
                         step: int) -> None:
  with writer.as_default(step=step):
    for key in ranking.METRIC_KEYS:
      if key in metrics:
        tf.summary.scalar(f"eval/{key}", metrics[key])
      # CIR re-scoring of the SIR top-k (config.eval.cir_topk).
      if key in metrics.get("cir", {}).get("cir", {}):
        tf.summary.scalar(f"eval/cir_{key}", metrics["cir"]["cir"][key])


def write_input_images(writer: tf.summary.SummaryWriter, images: np.ndarray,
                       name: str, step: int, max_outputs: int = 8) -> None:
  """A few training inputs, rescaled to [0, 1] for display."""
  images = np.asarray(images[:max_outputs], np.float32)
  low = images.min(axis=(1, 2, 3), keepdims=True)
  high = images.max(axis=(1, 2, 3), keepdims=True)
  with writer.as_default(step=step):
    tf.summary.image(name, (images - low) / np.maximum(high - low, 1e-6),
                     max_outputs=max_outputs)
