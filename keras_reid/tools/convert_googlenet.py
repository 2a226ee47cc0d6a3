r"""Converts torchvision's GoogLeNet ImageNet weights to Keras, without PyTorch.

  python -m keras_reid.tools.convert_googlenet googlenet-1378be20.pth \
      ~/.keras/models/googlenet_imagenet_no_top.weights.h5

A .pth file is either a zip (`<name>/data.pkl`, the pickled state dict whose
tensors are persistent ids, and `<name>/data/<key>`, raw little-endian
storages) or, from PyTorch < 1.6, the legacy stream of pickles followed by
the raw storages. Unpickling runs code named by the file, so a restricted
unpickler accepts only the globals a state dict needs (OrderedDict, the
tensor rebuild functions, storage types) and refuses anything else.

The Keras model takes images normalised to [-1, 1] (the "tf" mode):
torchvision's pretrained GoogLeNet has transform_input=True, which maps its
ImageNet mean/std ("torch") input to (x - 0.5) / 0.5 inside the model, so
feeding [-1, 1] directly is the same function. The output file records this
in its HDF5 root attributes (see PREPROCESSING_ATTRS) and the tool prints it.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

from absl import app
from absl import flags
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_bool("include_top", False,
                  "Also convert the 1000-way ImageNet classifier 'fc' (the "
                  "backbone loader expects the file without it).")

PREPROCESSING_ATTRS = {
    "keras_reid_source": "torchvision googlenet (IMAGENET1K_V1)",
    "keras_reid_normalization": "tf",
    "keras_reid_torch_normalization": "torch",
    "keras_reid_torch_transform_input": True,
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


class _StorageType:
  """Stands for torch.<X>Storage in the pickle: only its dtype matters."""

  def __init__(self, name: str, dtype):
    self.name = name
    self.dtype = np.dtype(dtype)

  def __repr__(self):
    return f"torch.{self.name}"


STORAGE_TYPES = {name: _StorageType(name, dtype) for name, dtype in [
    ("FloatStorage", "<f4"), ("DoubleStorage", "<f8"), ("HalfStorage", "<f2"),
    ("LongStorage", "<i8"), ("IntStorage", "<i4"), ("ShortStorage", "<i2"),
    ("CharStorage", "i1"), ("ByteStorage", "u1"), ("BoolStorage", "?")]}


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  """torch._utils._rebuild_tensor_v2 for NumPy: a strided view, copied."""
  del requires_grad, backward_hooks, metadata
  size, stride = tuple(size), tuple(stride)
  needed = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
  if all(size) and needed > storage.size:
    raise pickle.UnpicklingError(
        f"tensor of size {size} stride {stride} offset {storage_offset} runs "
        f"past its storage of {storage.size} elements: the file is corrupt.")
  return np.lib.stride_tricks.as_strided(
      storage[storage_offset:], shape=size,
      strides=[s * storage.itemsize for s in stride]).copy()


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): storage for name, storage in STORAGE_TYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickles a PyTorch state dict and nothing else.

  Args:
    file: the pickle stream.
    load_storage: (key, dtype, numel) -> 1-D np.ndarray of the raw storage.
  """

  def __init__(self, file, load_storage):
    super().__init__(file)
    self._load_storage = load_storage
    self.storages = {}

  def find_class(self, module, name):
    if (module, name) in ALLOWED_GLOBALS:
      return ALLOWED_GLOBALS[(module, name)]
    allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
    raise pickle.UnpicklingError(
        f"Refusing to unpickle the global {module}.{name}: a PyTorch state dict "
        f"needs only {allowed}. The file is not a plain state dict (or is "
        "malicious); convert only torchvision's googlenet-1378be20.pth or "
        "another plain state dict.")

  def persistent_load(self, pid):
    if (not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage"
        or not isinstance(pid[1], _StorageType)):
      raise pickle.UnpicklingError(
          f"Unexpected persistent id {pid!r}: expected ('storage', "
          "torch.<Type>Storage, key, location, numel, ...).")
    _, storage_type, key, _, numel = pid[:5]
    key = str(key)
    if key not in self.storages:
      self.storages[key] = self._load_storage(key, storage_type.dtype, int(numel))
    return self.storages[key]


def _load_zip(path: str) -> dict:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("data.pkl")]
    if len(pickles) != 1:
      raise ValueError(f"{path}: expected one <name>/data.pkl in the zip, found "
                       f"{pickles}; is it a file written by torch.save?")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = prefix + "byteorder"
    if byteorder in names and archive.read(byteorder).strip() != b"little":
      raise ValueError(f"{path}: big-endian storages are not supported.")

    def load_storage(key, dtype, numel):
      raw = archive.read(f"{prefix}data/{key}")
      if len(raw) < numel * dtype.itemsize:
        raise ValueError(f"{path}: storage {key} holds {len(raw)} bytes, "
                         f"expected {numel} x {dtype.itemsize}.")
      return np.frombuffer(raw, dtype=dtype, count=numel)

    with archive.open(pickles[0]) as f:
      return RestrictedUnpickler(io.BytesIO(f.read()), load_storage).load()


def _load_legacy(path: str) -> dict:
  with open(path, "rb") as f:
    header = RestrictedUnpickler(f, None)
    if header.load() != _LEGACY_MAGIC:
      raise ValueError(f"{path}: neither a zip nor a legacy torch.save file.")
    header.load()  # protocol version
    header.load()  # sys info
    pending = {}

    def load_storage(key, dtype, numel):
      pending[key] = (dtype, numel)
      return np.zeros(numel, dtype)  # Filled in below, once the data is read.

    unpickler = RestrictedUnpickler(f, load_storage)
    unpickler.load()  # registers the storages; tensors are rebuilt below
    keys = RestrictedUnpickler(f, None).load()
    for key in keys:
      dtype, numel = pending[str(key)]
      (count,) = struct.unpack("<q", f.read(8))
      data = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)
      unpickler.storages[str(key)][:] = data[:numel]
  # Tensors were copied from the placeholders: unpickle again with real data.
  return _reload_legacy(path, {k: unpickler.storages[k] for k in pending})


def _reload_legacy(path, storages):
  with open(path, "rb") as f:
    header = RestrictedUnpickler(f, None)
    for _ in range(3):
      header.load()
    return RestrictedUnpickler(f, lambda key, dtype, numel: storages[key]).load()


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a .pth state dict into NumPy arrays, without PyTorch.

  Raises:
    pickle.UnpicklingError: the pickle names anything but what a state dict
      needs.
  """
  state = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
  if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}.")
  return {k.removeprefix("module."): np.asarray(v) for k, v in state.items()}


def _keras_weights(layer, params: dict[str, np.ndarray]) -> list[np.ndarray]:
  kind = type(layer).__name__
  if kind == "Conv2D":
    return [params["weight"].transpose(2, 3, 1, 0)]  # OIHW -> HWIO
  if kind == "BatchNormalization":
    return [params["weight"], params["bias"], params["running_mean"],
            params["running_var"]]
  if kind == "Dense":
    return [params["weight"].T, params["bias"]]
  raise ValueError(f"No conversion rule for layer {layer.name!r} ({kind}).")


def convert(state: dict[str, np.ndarray], *, include_top: bool = False):
  """Builds the Keras GoogLeNet and sets its weights from a state dict.

  Returns:
    (keras.Model, list of state-dict keys left unused, e.g. the aux heads).
  """
  from keras_reid.models import googlenet  # pylint: disable=g-import-not-at-top
  # Weights do not depend on the input size; a small one builds faster.
  model = googlenet.build_googlenet((64, 64, 3), include_top=include_top)
  modules = collections.defaultdict(dict)
  for key, value in state.items():
    module, param = key.rsplit(".", 1)
    modules[module.replace(".", "_")][param] = value
  used = set()
  for layer in model.layers:
    if not layer.weights:
      continue
    # "conv1_conv" <- conv1.conv.*; "fc" <- fc.*
    if layer.name not in modules:
      raise ValueError(f"The state dict has no weights for layer {layer.name!r} "
                       f"(expected keys {layer.name.replace('_', '.')}.*); is "
                       "it torchvision's googlenet?")
    weights = _keras_weights(layer, modules[layer.name])
    expected = [tuple(w.shape) for w in layer.get_weights()]
    if [tuple(w.shape) for w in weights] != expected:
      raise ValueError(f"Layer {layer.name!r}: state dict shapes "
                       f"{[w.shape for w in weights]} != Keras shapes {expected}.")
    layer.set_weights(weights)
    used.add(layer.name)
  unused = sorted(k for k in state if k.rsplit(".", 1)[0].replace(".", "_") not in used
                  and not k.endswith("num_batches_tracked"))
  return model, unused


def convert_file(src: str, dst: str, *, include_top: bool = False) -> list[str]:
  """Converts src (.pth) to dst (.weights.h5); returns the unused keys."""
  import h5py  # pylint: disable=g-import-not-at-top
  if not dst.endswith(".weights.h5"):
    raise ValueError(f"Destination {dst!r}: expected a name ending in .weights.h5.")
  model, unused = convert(load_state_dict(src), include_top=include_top)
  model.save_weights(dst)
  with h5py.File(dst, "a") as f:
    f.attrs.update(PREPROCESSING_ATTRS)
  return unused


def main(argv):
  if len(argv) != 3:
    raise app.UsageError("usage: python -m keras_reid.tools.convert_googlenet "
                         "SRC.pth DST.weights.h5 [--include_top]")
  unused = convert_file(argv[1], argv[2], include_top=FLAGS.include_top)
  print(f"Wrote {argv[2]}; unused state-dict entries: {len(unused)} "
        f"({', '.join(sorted({k.split('.')[0] for k in unused})) or 'none'}).")
  print("Preprocessing: feed images normalised to [-1, 1] (normalization "
        '"tf"); this equals torchvision\'s ImageNet mean/std input with '
        "transform_input=True.")


if __name__ == "__main__":
  app.run(main)
