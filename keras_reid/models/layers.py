"""Re-ID layers: pairwise-consistent dropout, ceil-mode and GeM pooling, pair
scoring.

Every layer here stores one attribute per constructor argument and
round-trips through `get_config`, so models using them save and load with
`keras.saving` (they are registered under the "keras_reid" package).
"""

from __future__ import annotations

import math

import keras
from keras import ops

PAIR_DROPOUT_MODES = ("pairwise", "independent", "none")
# config.model.pooling: how the backbone's last feature map becomes the
# feature vector (keras_reid.models.backbones.build_backbone).
POOLINGS = {
    "avg": "global average pooling (the backbones' own)",
    "gem": "generalised-mean pooling, GeneralizedMeanPooling2D",
}


@keras.saving.register_keras_serializable(package="keras_reid")
class PairwiseConsistentDropout(keras.layers.Layer):
  """Gathers the two members of each pair and drops features out of both.

  In "pairwise" mode (the paper's) ONE Bernoulli mask r is drawn per pair and
  applied to both members, giving r*y_i and r*y_j: a per-image mask would
  zero different units in the two features and the subtraction that follows
  would see noise instead of a difference. "independent" draws a mask per
  pair member (the ablation); "none" only gathers. Kept units are scaled by
  1 / (1 - rate), as in `keras.layers.Dropout`; at inference the layer only
  gathers.

  Call args:
    inputs: a list `[features, pair_i, pair_j]`: features float [B, D],
      pair_i and pair_j int [P] indices into the batch.
    training: bool; dropout is active only when true.

  Returns:
    A list `[features_i, features_j]`, each float [P, D].
  """

  def __init__(self, rate: float, mode: str = "pairwise", seed: int | None = None,
               **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= rate < 1.0:
      raise ValueError(f"PairwiseConsistentDropout rate={rate!r}: expected a "
                       "float in [0, 1).")
    if mode not in PAIR_DROPOUT_MODES:
      raise ValueError(f"PairwiseConsistentDropout mode={mode!r}: expected one "
                       f"of {PAIR_DROPOUT_MODES}.")
    self.rate = rate
    self.mode = mode
    self.seed = seed
    self.seed_generator = keras.random.SeedGenerator(seed)

  def _mask(self, shape, dtype):
    keep = 1.0 - self.rate
    kept = keras.random.uniform(shape, seed=self.seed_generator) < keep
    return ops.cast(kept, dtype) / keep

  def call(self, inputs, training=None):
    features, pair_i, pair_j = inputs
    features_i = ops.take(features, ops.cast(pair_i, "int32"), axis=0)
    features_j = ops.take(features, ops.cast(pair_j, "int32"), axis=0)
    if not training or self.mode == "none" or self.rate == 0.0:
      return [features_i, features_j]
    shape = ops.shape(features_i)
    mask_i = self._mask(shape, features_i.dtype)
    # Pairwise: the same mask for both members; independent: a fresh one.
    mask_j = mask_i if self.mode == "pairwise" else self._mask(shape, features_i.dtype)
    return [features_i * mask_i, features_j * mask_j]

  def compute_output_shape(self, input_shape):
    features_shape, pair_shape, _ = input_shape
    out = (pair_shape[0], features_shape[-1])
    return [out, out]

  def get_config(self):
    config = super().get_config()
    config.update(rate=self.rate, mode=self.mode, seed=self.seed)
    return config


@keras.saving.register_keras_serializable(package="keras_reid")
class CeilMaxPooling2D(keras.layers.Layer):
  """Max pooling with PyTorch's `ceil_mode=True` and no padding.

  The output has ceil((size - pool_size) / strides) + 1 positions per axis;
  the last window may run past the bottom/right edge and then only covers
  the real pixels (padding is -inf). On even map sizes this equals Keras's
  "same" pooling; on odd sizes it does not, hence this layer.

  Input: float [B, H, W, C] (static H and W). Output: [B, H', W', C].
  """

  def __init__(self, pool_size: int, strides: int, **kwargs):
    super().__init__(**kwargs)
    self.pool_size = pool_size
    self.strides = strides

  def _out_size(self, size):
    return int(math.ceil((size - self.pool_size) / self.strides)) + 1

  def _pad(self, size):
    return (self._out_size(size) - 1) * self.strides + self.pool_size - size

  def call(self, inputs):
    height, width = inputs.shape[1], inputs.shape[2]
    pad_h, pad_w = self._pad(height), self._pad(width)
    if pad_h or pad_w:
      inputs = ops.pad(inputs, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]],
                       constant_values=float("-inf"))
    return ops.max_pool(inputs, self.pool_size, self.strides, padding="valid")

  def compute_output_shape(self, input_shape):
    b, h, w, c = input_shape
    return (b, self._out_size(h), self._out_size(w), c)

  def get_config(self):
    config = super().get_config()
    config.update(pool_size=self.pool_size, strides=self.strides)
    return config


@keras.saving.register_keras_serializable(package="keras_reid")
class AdaptiveAveragePooling2D(keras.layers.Layer):
  """PyTorch's `AdaptiveAvgPool2d`: average over bins to a fixed output size.

  Bin i of an axis of size n covers [floor(i*n/out), ceil((i+1)*n/out)), so a
  map smaller than the output repeats pixels instead of failing: the
  auxiliary heads work at any input size (`keras.layers.AdaptiveAveragePooling2D`
  gives the same values but fails on maps like 2x1, at 32x16 input). Needs
  static H and W.

  Input: float [B, H, W, C]. Output: [B, out_h, out_w, C].
  """

  def __init__(self, output_size: tuple[int, int] | list[int], **kwargs):
    super().__init__(**kwargs)
    self.output_size = tuple(output_size)

  @staticmethod
  def _bins(size, out):
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]

  def call(self, inputs):
    height, width = inputs.shape[1], inputs.shape[2]
    rows = []
    for h0, h1 in self._bins(height, self.output_size[0]):
      cols = [ops.mean(inputs[:, h0:h1, w0:w1, :], axis=(1, 2))
              for w0, w1 in self._bins(width, self.output_size[1])]
      rows.append(ops.stack(cols, axis=1))
    return ops.stack(rows, axis=1)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], *self.output_size, input_shape[-1])

  def get_config(self):
    config = super().get_config()
    config.update(output_size=list(self.output_size))
    return config


@keras.saving.register_keras_serializable(package="keras_reid")
class GeneralizedMeanPooling2D(keras.layers.Layer):
  """Generalised-mean (GeM) global pooling (Radenovic et al., 2018).

  Per channel: (mean over H x W of max(x, epsilon) ** p) ** (1 / p). p = 1
  is average pooling and p -> inf approaches max pooling; re-ID's strong
  baselines use p = 3. With `trainable_p` p is one trainable scalar weight
  named "p" (initialised to `p`), else a constant (no weight). The clamp at
  `epsilon` keeps the power of a non-positive activation defined.

  Computed in float32 whatever the dtype policy: x ** 3 of a float16
  activation of ~40 overflows, and the mean of cubes loses low bits in
  bfloat16 (construct it with dtype="float32", as build_backbone does).

  Input: float [B, H, W, C]. Output: float [B, C].
  """

  def __init__(self, p: float = 3.0, trainable_p: bool = True,
               epsilon: float = 1e-6, **kwargs):
    super().__init__(**kwargs)
    if not p > 0:
      raise ValueError(f"GeneralizedMeanPooling2D p={p!r}: expected a "
                       "positive float (3.0 in re-ID's strong baselines).")
    self.p = float(p)
    self.trainable_p = bool(trainable_p)
    self.epsilon = float(epsilon)
    self.p_weight = None
    if self.trainable_p:
      self.p_weight = self.add_weight(
          name="p", shape=(), initializer=keras.initializers.Constant(self.p),
          trainable=True)

  def call(self, inputs):
    p = self.p_weight if self.trainable_p else self.p
    p = ops.cast(p, inputs.dtype)
    x = ops.power(ops.maximum(inputs, self.epsilon), p)
    return ops.power(ops.mean(x, axis=(1, 2)), 1.0 / p)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], input_shape[-1])

  def get_config(self):
    config = super().get_config()
    config.update(p=self.p, trainable_p=self.trainable_p, epsilon=self.epsilon)
    return config


@keras.saving.register_keras_serializable(package="keras_reid")
class SameProbability(keras.layers.Layer):
  """Verification logits [P, 2] -> probability of "same person" [P].

  Class 1 is "same" (pair_same = 1 in the training batches).
  """

  def call(self, logits):
    return ops.softmax(ops.cast(logits, "float32"), axis=-1)[:, 1]

  def compute_output_shape(self, input_shape):
    return (input_shape[0],)
