"""Model builders: the training model, head replacement, SIR embedder, CIR scorer.

The training model takes {"images" [B, H, W, 3] (normalised), "pair_i" [P],
"pair_j" [P]} and returns a dict with stable keys:
  "embedding" [B, D] (the pooled feature: what the metric losses and the
  verification heads read), "logits" [B, N], "verification_logits" [P, 2],
  with model.aux_heads "aux1_logits", "aux1_verification_logits",
  "aux2_logits", "aux2_verification_logits", and with
  model.retrieval_feature="bnneck" "retrieval_embedding" [B, D] (the
  BNNeck's output, which the SIR embedder then returns instead of
  "embedding").
The backbone is a nested model named "backbone"; heads are named (see
heads.py), the classifiers "classifier", "aux1_classifier", "aux2_classifier".

Verification heads exist only where their loss acts (`verification_heads`:
config.loss.ver_weight > 0). Without them the model has no
"*verification_logits" outputs and no "ver_*" / "verifier" layers (so no
variables without gradients, nothing unused in checkpoints and exports);
it still takes "pair_i" / "pair_j", which the batches carry anyway. With
them the model is, variable for variable, the one built before this switch
existed. What needs a verification head (the CIR pair scorer, the
SavedModel's verify signature) says so naming the key
(`require_verification_head`).

BNNeck (model.bnneck, Luo et al. 2019): a BatchNormalization without shift
("bnneck", "aux1_bnneck", "aux2_bnneck") between each classifier and its
feature, and classifiers without bias: the identity loss reads the
normalised feature, the triplet loss (and the verifiers) the feature before
it. The retrieval feature (model.retrieval_feature) is "pooled" (the
feature before the BNNeck, "embedding") or "bnneck" (after it, in inference
mode). Pooling (GeM) and the last stride live in the backbone (backbones.py).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from ml_collections import config_dict

from keras_reid.models import backbones
from keras_reid.models import heads
from keras_reid.models import layers as reid_layers

CLASSIFIER_LAYER_NAMES = ("classifier", "aux1_classifier", "aux2_classifier")
# config.model.retrieval_feature: what the SIR embedder (evaluation, feature
# extraction, the exported SavedModel) returns.
RETRIEVAL_FEATURES = {
    "pooled": "the pooled backbone feature, before any BNNeck (\"embedding\")",
    "bnneck": "the BNNeck's output in inference mode (needs model.bnneck=True)",
}
# The training model's output holding a retrieval feature other than
# "embedding"; present iff model.retrieval_feature is "bnneck".
RETRIEVAL_OUTPUT = "retrieval_embedding"
AUX_KEYS = ("aux1", "aux2")
# The main verification head's layers (heads.verifier_layers), as the pair
# scorer reuses them; the auxiliary heads' carry an "aux1_" / "aux2_" prefix.
VERIFIER_LAYER_NAMES = ("ver_subtract", "ver_relu", "verifier")
# GoogLeNet's auxiliary classifiers use dropout 0.7.
AUX_CLS_DROPOUT = 0.7


def normalization_for(model_config: config_dict.ConfigDict) -> str:
  """The input normalisation mode the configured backbone expects."""
  if model_config.backbone not in backbones.BACKBONES:
    raise KeyError(f"Unknown backbone {model_config.backbone!r}: expected one "
                   f"of {sorted(backbones.BACKBONES)} (model.backbone).")
  return backbones.BACKBONES[model_config.backbone].normalization


def verification_heads(config: config_dict.ConfigDict) -> bool:
  """Whether a run's training model has verification heads: iff their loss
  is on (config.loss.ver_weight > 0)."""
  return config.loss.ver_weight > 0


def has_verification_head(model: keras.Model) -> bool:
  """Whether a training model has the main verification head ("verifier")."""
  return any(layer.name == "verifier" for layer in model.layers)


def require_verification_head(
    model: keras.Model, what: str,
    fix: str = ("Use SIR only (the cosine similarity of the embeddings), or "
                "train with --config.loss.ver_weight > 0.")) -> None:
  """Raises unless the training model has a verification head.

  Args:
    what: what needs the head, for the message (e.g. "CIR re-scoring
      (--cir_topk)").
    fix: what to do instead, for the message.

  Raises:
    ValueError: naming `what`, the reason (loss.ver_weight=0) and the fix.
  """
  if not has_verification_head(model):
    raise ValueError(
        f"{what} needs a verification head, and this model has none: its "
        "run was trained with config.loss.ver_weight=0, which builds no "
        f"verification heads. {fix}")


def check_model_config(model_config: config_dict.ConfigDict) -> None:
  """The model keys' names against their registries and their combinations.

  Raises:
    ValueError: naming the key(s), the value(s) and what is expected.
  """
  for key, registry in (("pooling", reid_layers.POOLINGS),
                        ("retrieval_feature", RETRIEVAL_FEATURES)):
    value = model_config[key]
    if value not in registry:
      raise ValueError(f"config.model.{key}={value!r}: expected one of "
                       f"{sorted(registry)}.")
  if model_config.backbone in backbones.BACKBONES:  # else build_backbone says
    backbones.check_last_stride(model_config.backbone, model_config.last_stride)


def _build(model_config, *, num_classes: int, input_shape, weights, seed,
           verification: bool):
  check_model_config(model_config)
  backbone = backbones.build_backbone(
      model_config.backbone, input_shape=input_shape, weights=weights,
      alpha=model_config.alpha, pooling=model_config.pooling,
      gem_p=model_config.gem_p,
      gem_p_trainable=model_config.gem_p_trainable,
      last_stride=model_config.last_stride,
      fused_batchnorm=model_config.fused_batchnorm)
  if model_config.freeze_bn:
    backbones.freeze_batch_norm(backbone.model)
  if model_config.aux_heads and "aux1" not in backbone.model.output:
    raise ValueError(f"model.aux_heads=True but backbone "
                     f"{model_config.backbone!r} has no auxiliary taps; set "
                     "model.aux_heads=False.")
  mode = model_config.ver_dropout_mode
  images = keras.Input(shape=tuple(input_shape), dtype="float32", name="images")
  pair_i = keras.Input(shape=(), dtype="int32", name="pair_i")
  pair_j = keras.Input(shape=(), dtype="int32", name="pair_j")
  features = backbone.model(images)
  embedding = features["feature"]
  use_bnneck = bool(model_config.bnneck)
  logits, normalized = heads.classification_head(
      embedding, num_classes=num_classes, dropout=model_config.cls_dropout,
      seed=seed, use_bnneck=use_bnneck)
  outputs = {
      # Embeddings leave the model as float32 under every dtype policy.
      "embedding": keras.ops.cast(embedding, "float32"),
      "logits": logits,
  }
  # Heads are created in the order they always were; without verification
  # the verification heads' layers are still created, never applied (see
  # heads.verification_head_layers): every other layer starts from the
  # weights it had when every model had them.
  ver_seed = None if seed is None else seed + 1
  if verification:
    outputs["verification_logits"] = heads.verification_head(
        embedding, pair_i, pair_j, dropout=model_config.ver_dropout,
        mode=mode, seed=ver_seed)
  else:
    heads.verification_head_layers(dropout=model_config.ver_dropout,
                                   mode=mode, seed=ver_seed)
  if model_config.retrieval_feature == "bnneck":
    outputs[RETRIEVAL_OUTPUT] = keras.ops.cast(normalized, "float32")
  if model_config.aux_heads:
    for n, key in enumerate(AUX_KEYS):
      prefix = f"{key}_"
      aux = heads.auxiliary_feature(features[key], prefix=prefix)
      aux_seed = None if seed is None else seed + 2 * n + 2
      outputs[f"{key}_logits"], _ = heads.classification_head(
          aux, num_classes=num_classes, dropout=AUX_CLS_DROPOUT, prefix=prefix,
          seed=aux_seed, use_bnneck=use_bnneck)
      aux_ver_seed = None if seed is None else aux_seed + 1
      if verification:
        outputs[f"{key}_verification_logits"] = heads.verification_head(
            aux, pair_i, pair_j, dropout=model_config.ver_dropout, mode=mode,
            prefix=prefix, seed=aux_ver_seed)
      else:
        heads.verification_head_layers(dropout=model_config.ver_dropout,
                                       mode=mode, prefix=prefix,
                                       seed=aux_ver_seed)
  return keras.Model({"images": images, "pair_i": pair_i, "pair_j": pair_j},
                     outputs, name="reid_training_model")


def build_training_model(model_config: config_dict.ConfigDict, *,
                         num_classes: int, input_shape: tuple[int, int, int],
                         seed: int | None = None,
                         verification: bool = True) -> keras.Model:
  """Builds the training model (see the module docstring for its I/O).

  Args:
    model_config: config.model (backbone, alpha, weights, cls_dropout,
      ver_dropout, ver_dropout_mode, aux_heads, freeze_bn, pooling, gem_p,
      gem_p_trainable, last_stride, bnneck, retrieval_feature).
    num_classes: N, identities of the training set.
    input_shape: (H, W, 3).
    seed: seeds the dropout masks (None: unseeded).
    verification: build the verification heads (`verification_heads(config)`
      for a run: only where their loss is on).

  Raises:
    ValueError: a model key out of its registry or a last stride the
      backbone cannot take (check_model_config).
  """
  return _build(model_config, num_classes=num_classes, input_shape=input_shape,
                weights=model_config.weights, seed=seed,
                verification=verification)


def replace_classifiers(model: keras.Model, model_config: config_dict.ConfigDict,
                        *, num_classes: int, input_shape: tuple[int, int, int],
                        seed: int | None = None,
                        verification: bool | None = None) -> keras.Model:
  """A new training model with fresh classifiers for `num_classes` identities.

  Every other layer (backbone, verification and auxiliary trunks) takes the
  weights of `model`: this is the start of a stage of staged transfer.

  Args:
    verification: whether the new model has verification heads; None = as
      `model` has. Without them, `model`'s (if any) are left out.

  Raises:
    ValueError: a layer of the new model missing from `model` (another model
      config, or verification heads `model` does not have).
  """
  if verification is None:
    verification = has_verification_head(model)
  elif verification:
    require_verification_head(
        model, "A stage with the verification loss (loss.ver_weight > 0) "
        "continuing this model",
        fix="Start the stage from the backbone (init=\"backbone\") or from "
        "a run trained with loss.ver_weight > 0, or set "
        "--config.loss.ver_weight=0.")
  new = _build(model_config, num_classes=num_classes, input_shape=input_shape,
               weights="", seed=seed, verification=verification)
  for layer in new.layers:
    if layer.name in CLASSIFIER_LAYER_NAMES or not layer.weights:
      continue
    try:
      old = model.get_layer(layer.name)
    except ValueError as e:
      raise ValueError(
          f"replace_classifiers: layer {layer.name!r} of the new model is not "
          "in the given model; build both from the same model config "
          "(backbone, alpha, aux_heads).") from e
    layer.set_weights(old.get_weights())
  return new


def head_layer_names(model: keras.Model) -> list[str]:
  """Every layer with weights outside the backbone: what a stage from
  ImageNet creates (classifiers, verifiers, auxiliary trunks and heads)."""
  return [layer.name for layer in model.layers
          if layer.weights and layer.name != "backbone"]


def set_step_trainable(model: keras.Model, step: int, *, freeze_bn: bool = False,
                       all_heads: bool = False) -> None:
  """Sets trainable flags for a step of two-stepped fine-tuning.

  Step 1 trains only the newly created layers on the frozen base: the
  classifier layers (CLASSIFIER_LAYER_NAMES), or with `all_heads` every
  layer outside the backbone (`head_layer_names`: verifiers and auxiliary
  trunks too, as in a stage started from ImageNet). Step 2 trains
  everything, except BatchNormalization layers when freeze_bn.
  """
  if step not in (1, 2):
    raise ValueError(f"step={step!r}: expected 1 (new layers only) or 2 (all).")
  # Set every layer explicitly: in Keras 3 `model.trainable = True` does not
  # reach the layers of a nested functional model frozen by a previous step.
  for layer in model._flatten_layers(include_self=True, recursive=True):  # pylint: disable=protected-access
    layer.trainable = True
  if step == 1:
    new = set(head_layer_names(model) if all_heads else CLASSIFIER_LAYER_NAMES)
    for layer in model.layers:
      if layer.name not in new:
        layer.trainable = False
  elif freeze_bn:
    backbones.freeze_batch_norm(model)


def build_embedder(training_model: keras.Model) -> keras.Model:
  """SIR embedder sharing the training model's weights: its retrieval feature.

  The pooled backbone feature ("embedding"), or, when the training model
  has a RETRIEVAL_OUTPUT (model.retrieval_feature="bnneck"), that feature
  through the model's "bnneck" layer (in inference mode when called with
  training=False, as evaluation and export do).

  Returns:
    keras.Model images float [B, H, W, 3] (normalised) -> embedding float32
    [B, D] (computed in the backbone's dtype policy).
  """
  backbone = training_model.get_layer("backbone")
  images = keras.Input(shape=backbone.input_shape[1:], dtype="float32",
                       name="images")
  embedding = backbone(images)["feature"]
  if RETRIEVAL_OUTPUT in training_model.output:
    embedding = training_model.get_layer("bnneck")(embedding)
  return keras.Model(images, keras.ops.cast(embedding, "float32"),
                     name="embedder")


def embedding_function(training_model: keras.Model):
  """The SIR embedder of a training model as a traced inference function.

  Returns:
    A `tf.function` images float32 [B, H, W, 3] (normalised) -> embeddings
    float32 [B, D], with dropout and BatchNorm in inference mode; it
    retraces only for a new batch shape class (reduce_retracing).
  """
  embedder = build_embedder(training_model)

  @tf.function(reduce_retracing=True, autograph=False)
  def embed(images):
    return embedder(images, training=False)

  return embed


def build_pair_scorer(training_model: keras.Model) -> keras.Model:
  """CIR pair scorer sharing the backbone and the main verification head.

  Returns:
    keras.Model {"images_a", "images_b"} float [B, H, W, 3] -> probability
    [B] that image a and image b show the same person.

  Raises:
    ValueError: the model has no verification head
      (`require_verification_head`).
  """
  require_verification_head(training_model, "The CIR pair scorer")
  backbone = training_model.get_layer("backbone")
  shape = backbone.input_shape[1:]
  images_a = keras.Input(shape=shape, dtype="float32", name="images_a")
  images_b = keras.Input(shape=shape, dtype="float32", name="images_b")
  verifier = [training_model.get_layer(n) for n in VERIFIER_LAYER_NAMES]
  logits = heads.apply_verifier(backbone(images_a)["feature"],
                                backbone(images_b)["feature"], layers=verifier)
  probability = reid_layers.SameProbability(name="same_probability")(logits)
  return keras.Model({"images_a": images_a, "images_b": images_b}, probability,
                     name="pair_scorer")
