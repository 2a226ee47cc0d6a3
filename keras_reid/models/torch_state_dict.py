r"""Reads PyTorch .pth state dicts into NumPy arrays, without PyTorch.

NumPy-only by design: it never imports TensorFlow or Keras (a test imports it
with both blocked), so the weight converters and anything that only inspects
a .pth stay light, and it sits below `models` in the package's layering.

A .pth file is either a zip (`<name>/data.pkl`, the pickled state dict whose
tensors are persistent ids, and `<name>/data/<key>`, raw little-endian
storages) or, from PyTorch < 1.6, the legacy stream: three small pickles
(magic number, protocol version, system info), the pickled state dict, the
pickled list of storage keys, then each storage as an int64 element count and
its raw bytes.

Unpickling runs code named by the file, so a restricted unpickler accepts
only the globals a state dict needs (OrderedDict, the tensor rebuild
functions, storage types) and refuses anything else. Tensors are strided
views of storages; every view is checked against its storage before it is
copied (no negative strides, lowest and highest element inside the storage,
element count bounded by the storage and by MAX_ELEMENTS), and the bytes
materialised are bounded by the storages' size. Any file that is not a readable
state dict raises one `ValueError` that names the file.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
from typing import Callable

import numpy as np

# No single storage or tensor may hold more elements than this (8 GiB of
# float32, far above any weight tensor), whatever the file claims.
MAX_ELEMENTS = 1 << 31
MAX_DIMS = 32
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"


class _StorageType:
  """Stands for torch.<X>Storage in the pickle: only its dtype matters."""

  def __init__(self, name: str, dtype):
    self.name = name
    self.dtype = np.dtype(dtype)

  def __repr__(self):
    return f"torch.{self.name}"


STORAGE_TYPES = {name: _StorageType(name, dtype) for name, dtype in [
    ("FloatStorage", "<f4"), ("DoubleStorage", "<f8"), ("HalfStorage", "<f2"),
    ("BFloat16Storage", "<u2"), ("LongStorage", "<i8"), ("IntStorage", "<i4"),
    ("ShortStorage", "<i2"), ("CharStorage", "i1"), ("ByteStorage", "u1"),
    ("BoolStorage", "?")]}


class _Malformed(Exception):
  """Internal: what was wrong, before the file name is attached."""


class _StorageRef:
  """A storage named by the pickle; its data is attached once read."""

  def __init__(self, key: str, dtype: np.dtype, numel: int):
    self.key, self.dtype, self.numel = key, dtype, numel
    self.data: np.ndarray | None = None


class _TensorRef:
  """A tensor named by the pickle, materialised once its storage is read."""

  def __init__(self, storage, offset, size, stride):
    if not isinstance(storage, _StorageRef):
      raise _Malformed(f"a tensor's storage is {type(storage).__name__}, not a "
                       "storage persistent id")
    if not _is_int(offset) or not isinstance(size, (tuple, list)) or not isinstance(
        stride, (tuple, list)) or not all(map(_is_int, size)) or not all(
            map(_is_int, stride)):
      raise _Malformed(f"tensor with offset {offset!r}, size {size!r}, stride "
                       f"{stride!r}: expected integers")
    self.storage, self.offset = storage, int(offset)
    self.size, self.stride = tuple(map(int, size)), tuple(map(int, stride))


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _rebuild_tensor_v2(storage, storage_offset, size, stride,
                       requires_grad=False, backward_hooks=None, metadata=None):
  """torch._utils._rebuild_tensor_v2: records the view; checked when copied."""
  del requires_grad, backward_hooks, metadata
  return _TensorRef(storage, storage_offset, size, stride)


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

  Storages come back as _StorageRef (registered in `self.storages` by key)
  and tensors as _TensorRef; `_materialize` turns them into arrays.
  """

  def __init__(self, file):
    super().__init__(file)
    self.storages: dict[str, _StorageRef] = {}

  def find_class(self, module, name):
    if (module, name) in ALLOWED_GLOBALS:
      return ALLOWED_GLOBALS[(module, name)]
    allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
    raise _Malformed(
        f"refusing to unpickle the global {module}.{name}: a PyTorch state dict "
        f"needs only {allowed}. The file is not a plain state dict (or is "
        "malicious)")

  def persistent_load(self, pid):
    if (not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage"
        or not isinstance(pid[1], _StorageType) or not _is_int(pid[4])):
      raise _Malformed(f"unexpected persistent id {pid!r}: expected ('storage', "
                       "torch.<Type>Storage, key, location, numel, ...)")
    _, storage_type, key, _, numel = pid[:5]
    key = str(key)
    if not 0 <= numel <= MAX_ELEMENTS:
      raise _Malformed(f"storage {key} claims {numel} elements (at most "
                       f"{MAX_ELEMENTS})")
    ref = self.storages.get(key)
    if ref is None:
      ref = self.storages[key] = _StorageRef(key, storage_type.dtype, numel)
    elif (ref.dtype, ref.numel) != (storage_type.dtype, numel):
      raise _Malformed(f"storage {key} is declared twice with different types "
                       "or sizes")
    return ref


def _view(ref: _TensorRef) -> np.ndarray:
  """Copies the strided view `ref` out of its storage, after bounds checks."""
  data = ref.storage.data
  size, stride, offset = ref.size, ref.stride, ref.offset
  where = (f"tensor of size {size}, stride {stride}, offset {offset} in storage "
           f"{ref.storage.key} of {0 if data is None else data.size} elements")
  if data is None:
    raise _Malformed(f"{where}: the storage's data is missing")
  if len(size) != len(stride) or len(size) > MAX_DIMS:
    raise _Malformed(f"{where}: size and stride must have the same length "
                     f"(at most {MAX_DIMS})")
  if any(n < 0 for n in size) or any(s < 0 for s in stride) or offset < 0:
    raise _Malformed(f"{where}: negative sizes, strides or offsets are not "
                     "allowed")
  numel = math.prod(size)  # Python ints: no overflow.
  if numel == 0:
    return np.zeros(size, data.dtype)
  if numel > min(data.size, MAX_ELEMENTS):
    # Also bounds stride-0 (broadcast) views, which could ask for any size.
    raise _Malformed(f"{where}: {numel} elements exceed the storage (or "
                     f"{MAX_ELEMENTS})")
  highest = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if offset >= data.size or highest >= data.size:
    raise _Malformed(f"{where}: elements {offset}..{highest} run past the "
                     "storage")
  return np.lib.stride_tricks.as_strided(
      data[offset:], shape=size,
      strides=[s * data.itemsize for s in stride], writeable=False).copy()


def _materialize(obj, budget: list[int]):
  """Replaces every _TensorRef inside dicts/lists/tuples by its array."""
  if isinstance(obj, _TensorRef):
    array = _view(obj)
    budget[0] -= array.nbytes
    if budget[0] < 0:
      raise _Malformed("its tensors add up to more bytes than the file could "
                       "hold (overlapping views)")
    return array
  if isinstance(obj, dict):
    return type(obj)((k, _materialize(v, budget)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v, budget) for v in obj)
  if isinstance(obj, _StorageRef):
    raise _Malformed(f"a bare storage ({obj.key}) where a tensor was expected")
  return obj


def _read_exact(f, nbytes: int, what: str, file_size: int | None = None
                ) -> bytes:
  if file_size is not None and nbytes > file_size - f.tell():
    # Checked before reading: read(n) would allocate n bytes first.
    raise _Malformed(f"{what}: expected {nbytes} bytes, only "
                     f"{file_size - f.tell()} remain in the file (truncated?)")
  raw = f.read(nbytes)
  if len(raw) != nbytes:
    raise _Malformed(f"{what}: expected {nbytes} bytes, the file ends after "
                     f"{len(raw)} (truncated?)")
  return raw


def _entry_limit(info: zipfile.ZipInfo) -> int:
  """Most bytes a zip entry may inflate to: torch.save stores entries
  uncompressed; a compressed entry may expand 64-fold, not without bound."""
  if info.compress_type == zipfile.ZIP_STORED:
    return info.compress_size
  return 64 * info.compress_size + (1 << 20)


def _load_zip(path: str):
  with zipfile.ZipFile(path) as archive:
    infos = {info.filename: info for info in archive.infolist()}
    pickles = [n for n in infos if n.endswith("data.pkl")]
    if len(pickles) != 1:
      raise _Malformed(f"expected one <name>/data.pkl in the zip, found "
                       f"{pickles}; is it a file written by torch.save?")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = prefix + "byteorder"
    if byteorder in infos and archive.read(byteorder).strip() != b"little":
      raise _Malformed("big-endian storages are not supported")
    with archive.open(pickles[0]) as f:
      raw = f.read(_entry_limit(infos[pickles[0]]) + 1)
    if len(raw) > _entry_limit(infos[pickles[0]]):
      raise _Malformed(f"{pickles[0]} inflates far beyond its stored size")
    unpickler = RestrictedUnpickler(io.BytesIO(raw))
    state = unpickler.load()
    for key, ref in unpickler.storages.items():
      name = f"{prefix}data/{key}"
      nbytes = ref.numel * ref.dtype.itemsize
      if name not in infos:
        raise _Malformed(f"storage {key} ({name}) is missing from the zip")
      if min(infos[name].file_size, _entry_limit(infos[name])) < nbytes:
        raise _Malformed(f"storage {key} holds {infos[name].file_size} bytes "
                         f"({infos[name].compress_size} stored), expected "
                         f"{ref.numel} x {ref.dtype.itemsize}")
      with archive.open(name) as f:  # Reads only what the storage needs.
        raw = _read_exact(f, nbytes, f"storage {key}")
      ref.data = np.frombuffer(raw, dtype=ref.dtype)
  return state, unpickler.storages


def _load_legacy(path: str):
  file_size = os.path.getsize(path)
  with open(path, "rb") as f:
    if RestrictedUnpickler(f).load() != _LEGACY_MAGIC:
      raise _Malformed("a pickle stream, but not one written by torch.save "
                       "(wrong magic number)")
    RestrictedUnpickler(f).load()  # protocol version
    RestrictedUnpickler(f).load()  # sys info
    unpickler = RestrictedUnpickler(f)
    state = unpickler.load()
    keys = RestrictedUnpickler(f).load()
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(
        unpickler.storages):
      raise _Malformed("the list of storage keys does not match the storages "
                       "the state dict uses")
    for key in map(str, keys):
      ref = unpickler.storages[key]
      (count,) = struct.unpack(
          "<q", _read_exact(f, 8, f"storage {key} header", file_size))
      if count != ref.numel:
        raise _Malformed(f"storage {key} holds {count} elements, the pickle "
                         f"says {ref.numel}")
      raw = _read_exact(f, count * ref.dtype.itemsize, f"storage {key}",
                        file_size)
      ref.data = np.frombuffer(raw, dtype=ref.dtype)
  return state, unpickler.storages


def _open_kind(path: str) -> str:
  with open(path, "rb") as f:
    head = f.read(4)
  if zipfile.is_zipfile(path):
    return "zip"
  if head.startswith(_ZIP_MAGIC):
    raise _Malformed("a zip archive without its central directory "
                     "(truncated or damaged download?)")
  if head.startswith(_PICKLE_PROTO):
    return "legacy"
  raise _Malformed(f"neither a zip archive nor a legacy torch.save stream (it "
                   f"starts with {head!r})")


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a .pth state dict into NumPy arrays, without PyTorch.

  Args:
    path: a file written by `torch.save(model.state_dict(), path)` (zip or
      legacy format), or a checkpoint dict holding one under "state_dict".

  Returns:
    {parameter name: np.ndarray in PyTorch layout (e.g. conv weights OIHW)},
    in the file's order; a leading "module." (DataParallel) is stripped.
    Scalars such as num_batches_tracked come back as 0-d arrays.

  Raises:
    FileNotFoundError: no such file.
    ValueError: anything else that is not a readable plain state dict: not a
      .pth file, truncated, a pickle naming globals a state dict does not need
      (code-running pickles are refused, never executed), tensors outside
      their storages. The message names the file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such .pth file.")
  try:
    load = _load_zip if _open_kind(path) == "zip" else _load_legacy
    state, storages = load(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
      state = state["state_dict"]
    if not isinstance(state, dict):
      raise _Malformed(f"expected a state dict, got {type(state).__name__}")
    # Views may overlap (tied weights), but not without bound.
    budget = [2 * sum(ref.data.nbytes for ref in storages.values()
                      if ref.data is not None) + (1 << 20)]
    state = _materialize(state, budget)
    out = {}
    for key, value in state.items():
      if not isinstance(key, str) or not isinstance(value, np.ndarray):
        raise _Malformed(f"entry {key!r} is {type(value).__name__}, expected a "
                         "tensor under a string key")
      out[key.removeprefix("module.")] = value
    return out
  except _Malformed as e:
    message = str(e)
  except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error,
          AttributeError, TypeError, IndexError, KeyError, ValueError,
          OverflowError, RecursionError, UnicodeDecodeError, ImportError,
          MemoryError) as e:
    # A raw pickle/zip message means nothing to a user; keep it as detail.
    message = f"unreadable ({type(e).__name__}: {e})"
  raise ValueError(
      f"{path}: not a readable PyTorch state dict: {message}. Expected a file "
      "written by torch.save(model.state_dict(), ...); download it again if "
      "it may be damaged.")


def set_layer_weights(model, state: dict[str, np.ndarray], *,
                      module_of: Callable[[str], str | None],
                      weights_of: Callable[[object, str], list[np.ndarray]],
                      no_module: Callable[[str], str],
                      shapes_hint: str = "") -> list[str]:
  """Sets every layer of `model` that has weights from a state dict.

  Args:
    model: a Keras model (read through .layers, .weights, .get_weights and
      .set_weights only, so this module stays free of TensorFlow).
    state: state-dict key ("<module>.<param>") -> array, torch layout.
    module_of: Keras layer name -> its state-dict module, None if none.
    weights_of: (layer, module) -> the layer's weights in Keras layout.
    no_module: layer name -> the message of the error for a layer that
      module_of gives no module.
    shapes_hint: appended to the message of a shape mismatch.

  Returns:
    The state-dict keys of modules no layer took (sorted; BatchNorm's
    num_batches_tracked counters excluded).

  Raises:
    ValueError: a layer without a module, or weights whose shapes differ.
  """
  used = set()
  for layer in model.layers:
    if not layer.weights:
      continue
    module = module_of(layer.name)
    if module is None:
      raise ValueError(no_module(layer.name))
    weights = weights_of(layer, module)
    expected = [tuple(w.shape) for w in layer.get_weights()]
    if [tuple(w.shape) for w in weights] != expected:
      raise ValueError(f"Layer {layer.name!r} ({module}): state dict shapes "
                       f"{[tuple(w.shape) for w in weights]} != Keras shapes "
                       f"{expected}{shapes_hint}.")
    layer.set_weights(weights)
    used.add(module)
  return sorted(k for k in state if k.rsplit(".", 1)[0] not in used
                and not k.endswith("num_batches_tracked"))
