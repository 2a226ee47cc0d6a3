"""BatchNormalization that trains through TensorFlow's fused kernel.

Keras 3 normalises a batch with `ops.moments` + `ops.batch_normalization`: a
dozen element-wise ops per layer and as many in the backward pass, which on
a CPU are the largest single cost of a MobileNet / GoogLeNet train step
(bench/training_results.md, "Where a train step's time goes").
`FusedBatchNormalization` computes the same thing in training with one
FusedBatchNormV3 op (and its fused gradient). config.model.fused_batchnorm
puts it in place of every BatchNormalization of the backbone
(keras_reid.models.backbones); off by default.

Same maths as keras.layers.BatchNormalization: the output normalises by the
batch's biased variance, and the moving variance is updated with the biased
variance too (the fused op returns the unbiased one, rescaled here by
(n - 1) / n, n = batch x height x width). Outputs, gradients and moving
statistics agree with Keras' to float32 rounding, not bit for bit
(tests/models/fused_batchnorm_test.py). Same variables, so checkpoints load
either way. Inference, masks, renorm, synchronized BatchNorm and inputs that
are not 4-D channels-last keep Keras' own path.
"""

from __future__ import annotations

import keras
from keras import ops
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_reid")
class FusedBatchNormalization(keras.layers.BatchNormalization):
  """keras.layers.BatchNormalization whose training step is one fused op.

  Same constructor, variables and config as the Keras layer.

  Call args:
    inputs: [B, H, W, C] (the fused path) or any shape Keras accepts.
    training: batch statistics and moving-statistics updates when true and
      the layer is trainable, as in Keras.
    mask: as in Keras (its path).
  """

  def _fuses(self, inputs, training, mask) -> bool:
    return bool(training and self.trainable and mask is None
                and not self.renorm and not self.synchronized
                and len(inputs.shape) == 4 and self.axis in (-1, 3))

  def call(self, inputs, training=None, mask=None):
    if not self._fuses(inputs, training, mask):
      return super().call(inputs, training=training, mask=mask)
    # As Keras: statistics in float32 whatever the compute dtype.
    x = tf.cast(inputs, tf.float32)
    channels = x.shape[-1]
    gamma = (tf.cast(self.gamma, tf.float32) if self.scale
             else tf.ones([channels], tf.float32))
    beta = (tf.cast(self.beta, tf.float32) if self.center
            else tf.zeros([channels], tf.float32))
    y, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
        x, gamma, beta, epsilon=self.epsilon, is_training=True)
    n = tf.cast(tf.size(x) // channels, tf.float32)
    variance = unbiased_variance * ((n - 1.0) / n)
    self.moving_mean.assign(self.moving_mean * self.momentum
                            + mean * (1.0 - self.momentum))
    self.moving_variance.assign(self.moving_variance * self.momentum
                                + variance * (1.0 - self.momentum))
    return ops.cast(y, self.compute_dtype)
