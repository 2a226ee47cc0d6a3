"""Converts torchvision's GoogLeNet ImageNet weights to Keras, without PyTorch.

The library behind `python -m keras_reid.tools.convert_googlenet` (flag-free,
so other programs can import it). The .pth is read by the restricted, NumPy-only
reader `keras_reid.models.torch_state_dict`.

The Keras model takes images normalised to [-1, 1] (the "tf" mode):
torchvision's pretrained GoogLeNet has transform_input=True, which maps its
ImageNet mean/std ("torch") input to (x - 0.5) / 0.5 inside the model, so
feeding [-1, 1] directly is the same function. The output file records this
in its HDF5 root attributes (PREPROCESSING_ATTRS).
"""

from __future__ import annotations

import collections
import os

import h5py
import keras
import numpy as np

from keras_reid.models import googlenet
from keras_reid.models import torch_state_dict

PREPROCESSING_ATTRS = {
    "keras_reid_source": "torchvision googlenet (IMAGENET1K_V1)",
    "keras_reid_normalization": "tf",
    "keras_reid_torch_normalization": "torch",
    "keras_reid_torch_transform_input": True,
}


def _keras_weights(layer: keras.layers.Layer,
                   params: dict[str, np.ndarray]) -> list[np.ndarray]:
  kind = type(layer).__name__
  if kind == "Conv2D":
    return [params["weight"].transpose(2, 3, 1, 0)]  # OIHW -> HWIO
  if kind == "BatchNormalization":
    return [params["weight"], params["bias"], params["running_mean"],
            params["running_var"]]
  if kind == "Dense":
    return [params["weight"].T, params["bias"]]
  raise ValueError(f"No conversion rule for layer {layer.name!r} ({kind}).")


def convert(state: dict[str, np.ndarray], *, include_top: bool = False
            ) -> tuple[keras.Model, list[str]]:
  """Builds the Keras GoogLeNet and sets its weights from a state dict.

  Args:
    state: torchvision googlenet state dict (torch layout), e.g. from
      `torch_state_dict.load_state_dict`.
    include_top: also set the 1000-way classifier "fc".

  Returns:
    (keras.Model, sorted state-dict keys left unused, e.g. the aux heads).

  Raises:
    ValueError: a layer without weights in `state`, or shapes that differ.
  """
  # Weights do not depend on the input size; a small one builds faster.
  model = googlenet.build_googlenet((64, 64, 3), include_top=include_top)
  params = collections.defaultdict(dict)  # module -> {param: array}
  for key, value in state.items():
    module, param = key.rsplit(".", 1)
    params[module][param] = value
  # Keras layer "conv1_conv" <- module conv1.conv; "fc" <- fc.
  module_of = {module.replace(".", "_"): module for module in params}
  unused = torch_state_dict.set_layer_weights(
      model, state, module_of=module_of.get,
      weights_of=lambda layer, module: _keras_weights(layer, params[module]),
      no_module=lambda layer: (
          f"The state dict has no weights for layer {layer!r} (expected keys "
          f"{layer.replace('_', '.')}.*); is it torchvision's googlenet?"))
  return model, unused


def convert_file(src: str, dst: str, *, include_top: bool = False) -> list[str]:
  """Converts src (.pth) to dst (.weights.h5, written atomically).

  Returns:
    The state-dict keys left unused.

  Raises:
    ValueError: dst does not end in .weights.h5, or src is not a readable
      GoogLeNet state dict (the message names the file).
  """
  if not dst.endswith(".weights.h5"):
    raise ValueError(f"Destination {dst!r}: expected a name ending in .weights.h5.")
  model, unused = convert(torch_state_dict.load_state_dict(src),
                          include_top=include_top)
  # Keras wants the .weights.h5 suffix on the temporary file too.
  tmp = f"{dst[:-len('.weights.h5')]}.tmp{os.getpid()}.weights.h5"
  try:
    model.save_weights(tmp)
    with h5py.File(tmp, "a") as f:
      f.attrs.update(PREPROCESSING_ATTRS)
    os.replace(tmp, dst)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return unused
