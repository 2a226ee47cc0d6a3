"""Classification (optionally behind a BNNeck), verification and
GoogLeNet-style auxiliary heads.

Each function applies freshly created, named layers to Keras tensors inside
a functional model. Layer names are `<prefix><role>` with prefix "" for the
main heads and "aux1_" / "aux2_" for the auxiliary ones, so freezing, head
replacement and the pair scorer can find them by name.
"""

from __future__ import annotations

import keras

from keras_reid.models import layers as reid_layers


# BNNeck's BatchNormalization: torch BatchNorm1d's defaults, as in the
# strong baseline (momentum 0.1 there == 0.9 in Keras; epsilon 1e-5).
BNNECK_MOMENTUM = 0.9
BNNECK_EPSILON = 1e-5


def bnneck(features, *, prefix: str = ""):
  """BNNeck (Luo et al., "Bag of Tricks", 2019): BatchNorm without shift.

  The feature is normalised per unit and scaled (a trainable gamma) but not
  shifted: `center=False` plays the strong baseline's BN with a bias frozen at
  zero, so the normalised feature stays centred at the origin, where the
  classifier's hyperplanes (without bias) pass.

  Args:
    features: float [B, D].
    prefix: layer-name prefix.

  Returns:
    float [B, D] from the layer named `<prefix>bnneck`.
  """
  return keras.layers.BatchNormalization(
      center=False, momentum=BNNECK_MOMENTUM, epsilon=BNNECK_EPSILON,
      name=f"{prefix}bnneck")(features)


def classification_head(features, *, num_classes: int, dropout: float,
                        prefix: str = "", seed: int | None = None,
                        use_bnneck: bool = False):
  """Identity classifier: [BNNeck ->] dropout (a mask per image) -> Dense(N).

  Args:
    features: float [B, D].
    num_classes: N, the number of training identities.
    dropout: dropout rate before the classifier.
    prefix: layer-name prefix ("" or "aux1_" ...).
    seed: dropout seed.
    use_bnneck: put `bnneck` (layer `<prefix>bnneck`) before the dropout,
      and give the classifier no bias.

  Returns:
    (logits float [B, N] from the layer named `<prefix>classifier`, the
    BNNeck's output float [B, D] or None without it).
  """
  normalized = bnneck(features, prefix=prefix) if use_bnneck else None
  x = features if normalized is None else normalized
  x = keras.layers.Dropout(dropout, seed=seed, name=f"{prefix}cls_dropout")(x)
  logits = keras.layers.Dense(num_classes, use_bias=not use_bnneck,
                              name=f"{prefix}classifier")(x)
  return logits, normalized


def verification_head(features, pair_i, pair_j, *, dropout: float,
                      mode: str = "pairwise", prefix: str = "",
                      seed: int | None = None):
  """Pair verifier: dropout on both members -> y_i - y_j -> ReLU -> Dense(2).

  Args:
    features: float [B, D].
    pair_i, pair_j: int [P], indices into the batch.
    dropout: rate of the verification dropout.
    mode: "pairwise" (one mask per pair), "independent" or "none".
    prefix: layer-name prefix.
    seed: dropout seed.

  Returns:
    Logits float [P, 2] (class 1 = same person) from `<prefix>verifier`.
  """
  pair_dropout, *verifier = verification_head_layers(
      dropout=dropout, mode=mode, prefix=prefix, seed=seed)
  a, b = pair_dropout([features, pair_i, pair_j])
  return apply_verifier(a, b, layers=verifier)


def verification_head_layers(*, dropout: float, mode: str = "pairwise",
                             prefix: str = "", seed: int | None = None
                             ) -> list[keras.layers.Layer]:
  """The verification head's layers, created but not applied (no weights).

  `verification_head` applies them. A model built without verification
  heads creates them all the same and drops them: their unseeded kernel
  initialisers and seed generators draw from Keras' global seed when
  created, so creating them keeps every later layer's initial weights (and
  generator names) those of the model with heads.

  Returns:
    [PairwiseConsistentDropout `<prefix>ver_dropout`, then verifier_layers].
  """
  return [reid_layers.PairwiseConsistentDropout(
      dropout, mode=mode, seed=seed, name=f"{prefix}ver_dropout"),
          *verifier_layers(prefix)]


def verifier_layers(prefix: str = "") -> list[keras.layers.Layer]:
  """The three layers after the dropout: subtract, ReLU, Dense(2).

  They compute in float32 under every dtype policy: the difference of two
  nearby features loses its low bits in bfloat16 / float16, and the layers
  are tiny ([P, D] -> [P, 2]).
  """
  return [keras.layers.Subtract(name=f"{prefix}ver_subtract", dtype="float32"),
          keras.layers.ReLU(name=f"{prefix}ver_relu", dtype="float32"),
          keras.layers.Dense(2, name=f"{prefix}verifier", dtype="float32")]


def apply_verifier(a, b, *, prefix: str = "", layers=None):
  """Subtract -> ReLU -> Dense(2) on pair features a, b [P, D] -> [P, 2].

  `layers` reuses existing (trained) layers, e.g. in the pair scorer.
  """
  subtract, relu, dense = layers or verifier_layers(prefix)
  return dense(relu(subtract([a, b])))


def auxiliary_feature(feature_map, *, prefix: str, pool_size=(4, 4),
                      conv_filters: int = 128, units: int = 1024):
  """GoogLeNet's auxiliary trunk: pool 4x4 -> 1x1 conv + BN + ReLU -> FC + ReLU.

  Adaptive pooling (PyTorch's bins) makes it work on maps smaller than 4x4
  too (e.g. 8x4 at 128x64 input). GoogLeNet's dropout 0.7 is the
  classification head's dropout, applied by the caller.

  Args:
    feature_map: float [B, h, w, C].
    prefix: "aux1_" or "aux2_".

  Returns:
    float [B, units].
  """
  x = reid_layers.AdaptiveAveragePooling2D(pool_size, name=f"{prefix}pool")(feature_map)
  x = keras.layers.Conv2D(conv_filters, 1, use_bias=False, name=f"{prefix}conv")(x)
  x = keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.9, name=f"{prefix}bn")(x)
  x = keras.layers.ReLU(name=f"{prefix}conv_relu")(x)
  x = keras.layers.Flatten(name=f"{prefix}flatten")(x)
  x = keras.layers.Dense(units, name=f"{prefix}fc")(x)
  return keras.layers.ReLU(name=f"{prefix}fc_relu")(x)
