"""The cluster memory of Cluster Contrast (Dai et al. 2021).

One L2-normalised centroid per cluster of a "clustering" round, initialised
as the normalised mean feature of the cluster (the round's labels,
keras_reid.unsupervised.clustering.Clusters.centroids). The training step
reads the cosine similarities of the batch's embeddings to every centroid
(the input of losses.cluster_memory_loss, InfoNCE at temperature
config.loss.cluster_memory_temperature) and, after the optimizer update,
moves each embedding's centroid towards it:

    c_y <- normalise(m * c_y + (1 - m) * x / ||x||)

image by image in batch order (as Cluster Contrast's ClusterMemory
backward), with m = stage.unsupervised.memory_momentum (0.2, Cluster
Contrast's default). The memory is a tf.Module whose variable is part of
the fine-tuning step's checkpoint (training.loop), so a resumed run goes on
from the memory it stopped with.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class ClusterMemory(tf.Module):
  """Momentum-updated cluster centroids.

  Attributes:
    centroids: float32 tf.Variable [C, D], rows of unit norm (not trained
      by the optimizer).
    momentum: m in [0, 1): the old centroid's share of an update.
  """

  def __init__(self, centroids: np.ndarray, momentum: float,
               name: str = "cluster_memory"):
    """Args: centroids: [C, D] initial centroids (normalised here);
    momentum: see the class doc."""
    super().__init__(name=name)
    centroids = np.asarray(centroids, np.float32)
    if centroids.ndim != 2 or not centroids.shape[0]:
      raise ValueError(f"centroids has shape {centroids.shape}: expected "
                       "[num_clusters >= 1, dim].")
    if not 0.0 <= momentum < 1.0:
      raise ValueError(f"momentum={momentum}: expected 0 <= m < 1 "
                       "(stages.<name>.unsupervised.memory_momentum).")
    norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    self.centroids = tf.Variable(centroids / np.maximum(norms, 1e-12),
                                 trainable=False, name="centroids")
    self.momentum = float(momentum)

  @property
  def num_clusters(self) -> int:
    return int(self.centroids.shape[0])

  def similarities(self, embeddings: tf.Tensor) -> tf.Tensor:
    """float32 [B, C] cosine similarities of embeddings [B, D] to the
    centroids (differentiable in the embeddings, not in the memory)."""
    x = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)
    return tf.matmul(x, tf.stop_gradient(self.centroids), transpose_b=True)

  def update(self, embeddings: tf.Tensor, labels: tf.Tensor) -> None:
    """Moves each label's centroid towards its embedding, in batch order.

    Args:
      embeddings: float [B, D] (normalised here; no gradient).
      labels: int [B] cluster ids in [0, C).
    """
    x = tf.stop_gradient(tf.math.l2_normalize(
        tf.cast(embeddings, tf.float32), axis=1))
    labels = tf.cast(labels, tf.int32)
    m = self.momentum
    for i in tf.range(tf.shape(x)[0]):
      y = labels[i]
      moved = m * self.centroids[y] + (1.0 - m) * x[i]
      self.centroids.scatter_nd_update(
          [[y]], [tf.math.l2_normalize(moved)])

