"""Losses of the method: identity classification, pair verification, triplet.

`compute_losses` turns the training model's output dict into named terms and
their weighted total:
  total = cls_weight * cls + ver_weight * ver
        + aux_weight * sum_k (cls_weight * auxk_cls + ver_weight * auxk_ver)
        + triplet_weight * triplet
(the auxiliary heads keep the main 1 : 3 ratio and are scaled as a whole,
like GoogLeNet's 0.3 per auxiliary classifier). A term whose weight is 0, or
whose output is absent, is not computed: switching a loss off is a config
change (ablations).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


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
  logits = ops.cast(logits, "float32")
  return ops.mean(keras.losses.sparse_categorical_crossentropy(
      ops.cast(pair_same, "int32"), logits, from_logits=True))


def batch_hard_triplet_loss(embeddings, labels, *, margin: float = 0.3):
  """Batch-hard triplet loss (Hermans et al. 2017), for the ablations.

  For each anchor: the farthest same-id image and the nearest other-id image
  in Euclidean distance, hinge max(0, margin + d_pos - d_neg), averaged.

  Args:
    embeddings: float [B, D].
    labels: int [B] (soft [B, N] labels are reduced to their argmax).
    margin: the hinge margin.

  Returns:
    Scalar float32.
  """
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
  return ops.mean(ops.relu(margin + hardest_positive - hardest_negative))


def compute_losses(outputs: dict, labels, pair_same, *, cls_weight: float = 1.0,
                   ver_weight: float = 3.0, aux_weight: float = 0.3,
                   label_smoothing: float = 0.0, triplet_weight: float = 0.0,
                   triplet_margin: float = 0.3) -> dict[str, tf.Tensor]:
  """Named loss terms and their weighted total.

  Args:
    outputs: the training model's dict ("embedding", "logits",
      "verification_logits", optionally "aux1_logits", ...).
    labels: int [B] identity ids or float [B, N] soft labels.
    pair_same: [P], 1 same person, 0 different.
    cls_weight, ver_weight: weights of classification and verification.
    aux_weight: scale of each auxiliary head's (weighted) losses.
    label_smoothing: for the classification terms.
    triplet_weight, triplet_margin: batch-hard triplet on the embedding.

  Returns:
    Dict of scalar float32 tensors: "cls", "ver", "aux1_cls", "aux1_ver",
    "aux2_cls", "aux2_ver", "triplet" where used, and "total".
  """
  terms = {}
  weights = {}
  for prefix, scale in (("", 1.0), ("aux1_", aux_weight), ("aux2_", aux_weight)):
    if scale <= 0:
      continue
    if cls_weight > 0 and f"{prefix}logits" in outputs:
      terms[f"{prefix}cls"] = classification_loss(
          outputs[f"{prefix}logits"], labels, label_smoothing=label_smoothing)
      weights[f"{prefix}cls"] = scale * cls_weight
    if ver_weight > 0 and f"{prefix}verification_logits" in outputs:
      terms[f"{prefix}ver"] = verification_loss(
          outputs[f"{prefix}verification_logits"], pair_same)
      weights[f"{prefix}ver"] = scale * ver_weight
  if triplet_weight > 0:
    terms["triplet"] = batch_hard_triplet_loss(
        outputs["embedding"], labels, margin=triplet_margin)
    weights["triplet"] = triplet_weight
  if not terms:
    raise ValueError("compute_losses: every loss is switched off or missing "
                     f"from the outputs {sorted(outputs)}; set a positive "
                     "loss.cls_weight, loss.ver_weight or loss.triplet_weight.")
  terms["total"] = ops.sum(ops.stack(
      [weights[name] * value for name, value in terms.items()]))
  return terms
