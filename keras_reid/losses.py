"""Losses: identity classification, pair verification (the method's), and
the strong baseline's batch-hard triplet and center losses.

LOSS_TERMS, one LossTerm per loss, says how each loss is computed, weighted
and named. `compute_losses` (the training step), `step_settings` (the
weights of a fine-tuning step, keras_reid.training.loop.loss_weights) and
keras_reid.config.describe_run (a run's list of losses) all iterate it, so a
new loss is one LossTerm plus its config.loss keys in keras_reid.schema.

`compute_losses` turns the training model's output dict into named terms and
their weighted total:
  total = cls_weight * cls + ver_weight * ver
        + aux_weight * sum_k (cls_weight * auxk_cls + ver_weight * auxk_ver)
        + triplet_weight * triplet + center_weight * center
(the auxiliary heads keep the main 1 : 3 ratio and are scaled as a whole,
like GoogLeNet's 0.3 per auxiliary classifier). A term whose weight is 0, or
whose output is absent, is not computed: switching a loss off is a config
change (ablations).

Keras (and TensorFlow under it) is imported when a loss is computed, not
with this module: keras_reid.config reads the table and stays
TensorFlow-free.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from keras_reid import schema

# What a loss can train (LossTerm.acts_on) and compare with (LossTerm.target).
PARTS = ("classifiers", "verifiers", "base")
TARGETS = ("labels", "pair_same")


@dataclasses.dataclass(frozen=True)
class LossTerm:
  """One loss: what it reads, what weights it, when it applies.

  Attributes:
    name: the term's name: compute_losses' key, TensorBoard's loss/<name>,
      describe_run's entry in "losses"; an auxiliary head's copy is
      "<head><name>" (aux1_cls).
    fn: (prediction, target, **options) -> scalar float32 loss.
    weight_key: the config.loss key of its weight; 0 switches it off.
    output: the key of the training model's output dict it reads
      ("logits", "verification_logits": a head's outputs; "embedding";
      "center_distances", which the train step adds, see center_loss).
    target: what it compares with: "labels" (int [B] identity ids or float
      [B, N] soft labels) or "pair_same" ([P], 1 same person).
    acts_on: what of the model it trains (PARTS): "classifiers",
      "verifiers" or "base" (the embedding itself); it applies in the
      fine-tuning steps that train that part (`applies_in`).
    per_head: also computed on each auxiliary head's output
      ("aux1_<output>"), weighted aux_weight * its weight.
    options: (fn keyword, config.loss key) of the extra settings fn reads.
    step_keys: config.loss keys the train step reads for the term, not fn
      (the center loss's center_lr); in step_settings, not passed to fn.
  """
  name: str
  fn: Callable[..., Any]
  weight_key: str
  output: str
  target: str
  acts_on: str
  per_head: bool = False
  options: tuple[tuple[str, str], ...] = ()
  step_keys: tuple[str, ...] = ()

  def __post_init__(self):
    for field, value, expected in (("acts_on", self.acts_on, PARTS),
                                   ("target", self.target, TARGETS)):
      if value not in expected:
        raise ValueError(f"LossTerm {self.name!r}: {field}={value!r}: "
                         f"expected one of {list(expected)}.")

  def applies_in(self, step: int, *, verifiers_train: bool = False) -> bool:
    """Whether the term is in the loss of fine-tuning step `step` (1 or 2);
    `verifiers_train`: step 1 trains the verifiers too."""
    return self.acts_on in trained_parts(step, verifiers_train=verifiers_train)

# The auxiliary heads' output prefixes and the config.loss key that scales
# their terms; describe_run lists them as AUX_NAME.
AUX_HEADS = ("aux1_", "aux2_")
AUX_WEIGHT_KEY = "aux_weight"
AUX_NAME = "aux"


def trained_parts(step: int, *, verifiers_train: bool = False) -> frozenset:
  """What fine-tuning step `step` trains (keras_reid.training.loop).

  Step 1 trains the new heads on a frozen base: the classifiers, and the
  verifiers too when it trains every new head (`verifiers_train`,
  FineTuningStep.all_heads); step 2 trains every layer.
  """
  if step == 2:
    return frozenset(PARTS)
  return frozenset(("classifiers", "verifiers") if verifiers_train
                   else ("classifiers",))


def classification_loss(logits, labels, *, label_smoothing: float = 0.0):
  """Mean softmax cross-entropy.

  Args:
    logits: float [B, N].
    labels: int [B] class ids, or float [B, N] (soft) label distributions
      (co-training).
    label_smoothing: mixes the targets with the uniform distribution.

  Returns:
    Scalar float32.
  """
  import keras  # pylint: disable=g-import-not-at-top
  from keras import ops  # pylint: disable=g-import-not-at-top
  logits = ops.cast(logits, "float32")
  labels = ops.convert_to_tensor(labels)
  if len(labels.shape) == 1:
    targets = ops.one_hot(ops.cast(labels, "int32"), ops.shape(logits)[-1])
  else:
    targets = ops.cast(labels, "float32")
  return ops.mean(keras.losses.categorical_crossentropy(
      targets, logits, from_logits=True, label_smoothing=label_smoothing))


def verification_loss(logits, pair_same):
  """Mean 2-way softmax cross-entropy over the (balanced) pairs.

  Args:
    logits: float [P, 2], class 1 = same person.
    pair_same: float or int [P], 1 same, 0 different.

  Returns:
    Scalar float32.
  """
  import keras  # pylint: disable=g-import-not-at-top
  from keras import ops  # pylint: disable=g-import-not-at-top
  logits = ops.cast(logits, "float32")
  return ops.mean(keras.losses.sparse_categorical_crossentropy(
      ops.cast(pair_same, "int32"), logits, from_logits=True))


def batch_hard_triplet_loss(embeddings, labels, *, margin: float = 0.3,
                            soft: bool = False):
  """Batch-hard triplet loss (Hermans et al. 2017).

  For each anchor: the farthest same-id image and the nearest other-id image
  in Euclidean distance, hinge max(0, margin + d_pos - d_neg), or with
  `soft` the soft margin log(1 + exp(d_pos - d_neg)) (Hermans et al.'s
  default; no margin to tune, and it keeps pulling satisfied triplets),
  averaged over the anchors. The K x M batches (K identities x M images)
  give every anchor M - 1 positives and (K - 1) M negatives.

  Args:
    embeddings: float [B, D].
    labels: int [B] (soft [B, N] labels are reduced to their argmax).
    margin: the hinge margin (not read with `soft`).
    soft: the soft margin instead of the hinge.

  Returns:
    Scalar float32.
  """
  from keras import ops  # pylint: disable=g-import-not-at-top
  x = ops.cast(embeddings, "float32")
  labels = ops.convert_to_tensor(labels)
  if len(labels.shape) == 2:
    labels = ops.argmax(labels, axis=-1)
  labels = ops.cast(labels, "int32")
  squared = ops.sum(ops.square(x), axis=1)
  d2 = squared[:, None] - 2.0 * ops.matmul(x, ops.transpose(x)) + squared[None, :]
  # The floor keeps the sqrt's gradient finite at zero distance.
  distances = ops.sqrt(ops.maximum(d2, 1e-12))
  same = ops.equal(labels[:, None], labels[None, :])
  hardest_positive = ops.max(ops.where(same, distances, 0.0), axis=1)
  big = ops.max(distances) + 1.0
  hardest_negative = ops.min(ops.where(same, big, distances), axis=1)
  if soft:
    return ops.mean(ops.softplus(hardest_positive - hardest_negative))
  return ops.mean(ops.relu(margin + hardest_positive - hardest_negative))


def center_loss(center_distances, labels):
  """Center loss (Wen et al. 2016) as the bag of tricks weights it.

  mean over the batch of ||f_i - c_{y_i}||^2, f_i the image's embedding and
  c_y its class's centre (no 1/2 and a batch mean, as in Luo et al.'s code,
  whose weight 5e-4 is for this form). The centres are trained by the
  train step (keras_reid.models.centers), which also computes the
  distances.

  Args:
    center_distances: float [B, N], ||f_i - c_j||^2 to every class centre
      (keras_reid.models.centers.squared_distances).
    labels: int [B] classes, or float [B, N] soft labels: the expected
      squared distance to the centres under the label distribution.

  Returns:
    Scalar float32.
  """
  from keras import ops  # pylint: disable=g-import-not-at-top
  distances = ops.cast(center_distances, "float32")
  labels = ops.convert_to_tensor(labels)
  if len(labels.shape) == 1:
    weights = ops.one_hot(ops.cast(labels, "int32"), ops.shape(distances)[-1])
  else:
    weights = ops.cast(labels, "float32")
  return ops.mean(ops.sum(weights * distances, axis=-1))


def cluster_memory_loss(similarities, labels, *, temperature: float = 0.05):
  """InfoNCE over a memory of cluster centroids (Cluster Contrast, Dai et al.
  2021): softmax cross-entropy of the cosine similarities / temperature.

  Args:
    similarities: float [B, C] cosine similarity of each L2-normalised
      embedding to each centroid of the memory
      (keras_reid.training.cluster_memory.ClusterMemory.similarities).
    labels: int [B] cluster ids.
    temperature: > 0 (Cluster Contrast: 0.05).

  Returns:
    Scalar float32.
  """
  import keras  # pylint: disable=g-import-not-at-top
  from keras import ops  # pylint: disable=g-import-not-at-top
  logits = ops.cast(similarities, "float32") / temperature
  return ops.mean(keras.losses.sparse_categorical_crossentropy(
      ops.cast(labels, "int32"), logits, from_logits=True))


# The losses, in the order their terms are computed and summed (per-head
# terms head by head, then the others). A new loss: a LossTerm here and its
# weight (and options) in keras_reid.schema's config.loss.
LOSS_TERMS: tuple[LossTerm, ...] = (
    LossTerm("cls", classification_loss, weight_key="cls_weight",
             output="logits", target="labels", acts_on="classifiers",
             per_head=True, options=(("label_smoothing", "label_smoothing"),)),
    LossTerm("ver", verification_loss, weight_key="ver_weight",
             output="verification_logits", target="pair_same",
             acts_on="verifiers", per_head=True),
    # On the base only (no head reads it), so it waits for step 2.
    LossTerm("triplet", batch_hard_triplet_loss, weight_key="triplet_weight",
             output="embedding", target="labels", acts_on="base",
             options=(("margin", "triplet_margin"),
                      ("soft", "triplet_soft_margin"))),
    # On the embedding too; its centres (config.loss.center_lr) are the
    # train step's (keras_reid.training.loop).
    LossTerm("center", center_loss, weight_key="center_weight",
             output="center_distances", target="labels", acts_on="base",
             step_keys=("center_lr",)),
    # The memory's similarities exist in "clustering" stages only.
    LossTerm("cluster_memory", cluster_memory_loss,
             weight_key="cluster_memory_weight", output="cluster_similarities",
             target="labels", acts_on="base",
             options=(("temperature", "cluster_memory_temperature"),)),
)

# compute_losses' settings when not given: the schema's config.loss.
DEFAULT_SETTINGS = schema.base_config().loss.to_dict()


def setting_keys(table: Sequence[LossTerm] = LOSS_TERMS) -> list[str]:
  """The config.loss keys the table reads: weights, options, step keys,
  aux_weight."""
  keys = []
  for term in table:
    keys += [term.weight_key, *(key for _, key in term.options),
             *term.step_keys]
  return list(dict.fromkeys([*keys, AUX_WEIGHT_KEY]))


def _resolve(settings: Mapping[str, Any],
             table: Sequence[LossTerm]) -> dict[str, Any]:
  """`settings` over DEFAULT_SETTINGS, for the keys the table reads."""
  keys = setting_keys(table)
  unknown = [k for k in settings if k not in keys]
  if unknown:
    raise TypeError(f"compute_losses: unknown settings {unknown}: expected "
                    f"config.loss keys the loss table reads, {keys}.")
  resolved = {k: settings[k] if k in settings else DEFAULT_SETTINGS.get(k)
              for k in keys}
  missing = [k for k, v in resolved.items() if v is None]
  if missing:
    raise TypeError(f"compute_losses: no value for {missing} (read by the "
                    "loss table, not in keras_reid.schema's config.loss): "
                    "pass them, or add them to the schema's loss section.")
  return resolved


def step_settings(loss_config: Mapping[str, Any], step: int, *,
                  verifiers_train: bool = False,
                  table: Sequence[LossTerm] = LOSS_TERMS) -> dict[str, Any]:
  """compute_losses' settings for fine-tuning step `step`.

  Args:
    loss_config: config.loss (a ConfigDict or dict).
    step: 1 or 2.
    verifiers_train: step 1 trains the verifiers too (FineTuningStep.all_heads).
    table: the losses.

  Returns:
    {config.loss key: value} of every key the table reads, with the weight
    of each term that does not apply in the step (LossTerm.applies_in) 0.0.
  """
  settings = {key: loss_config[key] for key in setting_keys(table)}
  for term in table:
    if not term.applies_in(step, verifiers_train=verifiers_train):
      settings[term.weight_key] = 0.0
  return settings


def active_names(settings: Mapping[str, Any], *, aux_heads: bool,
                 table: Sequence[LossTerm] = LOSS_TERMS) -> list[str]:
  """The names of the losses a config turns on, in table order.

  Args:
    settings: config.loss values by key (a key missing counts as 0).
    aux_heads: model.aux_heads.
    table: the losses.

  Returns:
    Each term with a positive weight, and AUX_NAME after the per-head terms
    when the auxiliary heads are on with a positive aux_weight.
  """
  aux = aux_heads and settings.get(AUX_WEIGHT_KEY, 0) > 0
  last_per_head = max((i for i, t in enumerate(table) if t.per_head),
                      default=None)
  names = []
  for i, term in enumerate(table):
    if settings.get(term.weight_key, 0) > 0:
      names.append(term.name)
    if i == last_per_head and aux:
      names.append(AUX_NAME)
  return names


def compute_losses(outputs: dict, labels, pair_same, *,
                   table: Sequence[LossTerm] = LOSS_TERMS,
                   **settings) -> dict[str, Any]:
  """Named loss terms and their weighted total.

  Args:
    outputs: the training model's dict ("embedding", "logits",
      "verification_logits", optionally "aux1_logits", ...).
    labels: int [B] identity ids or float [B, N] soft labels.
    pair_same: [P], 1 same person, 0 different.
    table: the losses (LOSS_TERMS).
    **settings: config.loss values by key (cls_weight, ver_weight,
      aux_weight, label_smoothing, triplet_weight, triplet_margin,
      triplet_soft_margin, center_weight for LOSS_TERMS); a key not given
      takes the schema's default.

  Returns:
    Dict of scalar float32 tensors: "cls", "ver", "aux1_cls", "aux1_ver",
    "aux2_cls", "aux2_ver", "triplet", "center" where used, and "total".

  Raises:
    TypeError: a setting the table does not read, or one it reads that
      has no value.
    ValueError: every term is off or its output missing.
  """
  from keras import ops  # pylint: disable=g-import-not-at-top
  settings = _resolve(settings, table)
  targets = {"labels": labels, "pair_same": pair_same}
  aux_weight = settings[AUX_WEIGHT_KEY]
  # Summed in this order: per-head terms head by head, then the others.
  computed = [(prefix, scale, term)
              for prefix, scale in (("", 1.0),
                                    *((h, aux_weight) for h in AUX_HEADS))
              if scale > 0 for term in table if term.per_head]
  computed += [("", None, term) for term in table if not term.per_head]
  terms, weights = {}, {}
  for prefix, scale, term in computed:
    weight = settings[term.weight_key]
    output = f"{prefix}{term.output}"
    if weight > 0 and output in outputs:
      name = f"{prefix}{term.name}"
      terms[name] = term.fn(outputs[output], targets[term.target],
                            **{kw: settings[key] for kw, key in term.options})
      weights[name] = weight if scale is None else scale * weight
  if not terms:
    keys = ", ".join(f"loss.{t.weight_key}" for t in table)
    raise ValueError("compute_losses: every loss is switched off or missing "
                     f"from the outputs {sorted(outputs)}; set a positive "
                     f"one of {keys}.")
  terms["total"] = ops.sum(ops.stack(
      [weights[name] * value for name, value in terms.items()]))
  return terms
