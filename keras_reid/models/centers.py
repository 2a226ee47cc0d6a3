"""Class centres of the center loss (Wen et al. 2016), and the distances to them.

The centres are not a layer of the training model: a fine-tuning step that
has the center loss on (keras_reid.training.loop) creates them for the
model's current classes, trains them with their own optimizer and keeps
them in the step's checkpoints, so a resumed step continues from the same
centres and each new stage (or co-training round, new classes) starts new
ones. The exported and evaluated models never read them.
"""

from __future__ import annotations

import keras

CENTERS_NAME = "centers"


def make_centers(num_classes: int, dim: int) -> keras.Variable:
  """The centres of `num_classes` classes in a `dim`-d embedding, all 0.

  Zero, not random: the first update moves a class's centre towards its
  images whatever the scale of the embedding (random centres would pull
  the features towards points of an arbitrary scale). Create it under the
  distribution strategy's scope.

  Returns:
    float32 trainable keras.Variable [num_classes, dim], named
    CENTERS_NAME (not a "kernel": the coupled L2 decay skips it).
  """
  return keras.Variable(keras.ops.zeros((num_classes, dim), "float32"),
                        trainable=True, name=CENTERS_NAME)


def squared_distances(embeddings, centers):
  """||f_i - c_j||^2 of every embedding to every centre.

  Args:
    embeddings: float [B, D].
    centers: float32 [N, D].

  Returns:
    float32 [B, N], >= 0 (losses.center_loss's input). Its gradient is
    2 (f_i - c_j) for f_i and -2 (f_i - c_j) for c_j, as the direct form's.
  """
  from keras import ops  # pylint: disable=g-import-not-at-top
  x = ops.cast(embeddings, "float32")
  c = ops.cast(centers, "float32")
  d2 = (ops.sum(ops.square(x), axis=1, keepdims=True)
        - 2.0 * ops.matmul(x, ops.transpose(c))
        + ops.sum(ops.square(c), axis=1)[None, :])
  return ops.maximum(d2, 0.0)
