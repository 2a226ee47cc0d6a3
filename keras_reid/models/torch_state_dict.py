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
materialised are bounded by the storages' size.

A pickle can also make the reader's work exponential in its size: memo
references let a few hundred bytes describe a list nested 64 levels deep
whose every level holds the level below twice, which anything that walks,
hashes or prints it expands 2**64 times. So every pickle is first scanned
(its opcodes only, nothing built) and refused when its objects, expanded
along shared references, hold more than ELEMENTS_PER_BYTE elements per byte
of the pickle (a state dict holds about one), or nest deeper than
MAX_NESTING. The scan also refuses a pickle that changes an object after
placing it in another (expanded sizes would be stale) or changes a global or
storage (they are the reader's own objects). Walking the state dict then visits
each object once, by id.

Any file that is not a readable state dict raises one `ValueError` that names
the file.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import pickletools
import struct
import zipfile
from typing import Callable

import numpy as np

# No single storage or tensor may hold more elements than this (8 GiB of
# float32, far above any weight tensor), whatever the file claims.
MAX_ELEMENTS = 1 << 31
MAX_DIMS = 32
# Elements (counted along shared references) a pickle may describe per byte
# of its own size, plus a floor for tiny pickles. A state dict's pickle
# expands to about 0.6 elements per byte (EfficientNet-Lite's torch.save
# files); 16 leaves room, and still refuses a shared-reference bomb after a
# dozen levels.
ELEMENTS_PER_BYTE = 16
MIN_ELEMENT_LIMIT = 1024
# How deep objects may nest. A state dict nests about five levels (dict,
# tensor, its arguments, a storage id, its type) whatever its size; a
# checkpoint dict adds a few.
MAX_NESTING = 32
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


# Opcodes that change the object below their arguments instead of making one.
_MUTATING_OPS = frozenset(
    ["APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"])
# Opcodes whose result is a global or a storage: the reader's own objects.
_SHARED_RESULT_OPS = frozenset(["GLOBAL", "STACK_GLOBAL", "PERSID", "BINPERSID"])


def _element_limit(pickle_bytes: int) -> int:
  """Most elements a pickle of `pickle_bytes` bytes may expand to."""
  return ELEMENTS_PER_BYTE * pickle_bytes + MIN_ELEMENT_LIMIT


def _check_pickle(file) -> int:
  """Scans the pickle at `file`'s position without building it.

  Mirrors the unpickler's stack and memo with one (expanded size, depth) per
  object, counting each object's expanded size every time an opcode puts it
  inside another: that count bounds what unpickling, hashing and walking the
  result cost, however the pickle shares references.

  Args:
    file: a seekable binary file at the start of a pickle; left there.

  Returns:
    The pickle's length in bytes.

  Raises:
    _Malformed: the pickle is malformed, expands beyond `_element_limit` of
      its length or nests deeper than MAX_NESTING.
  """
  start = file.tell()
  stack: list[int] = []     # object ids, as the unpickler's stack
  marks: list[int] = []     # stack lengths at each MARK
  memo: dict[int, int] = {}
  size: list[int] = []      # object id -> elements once expanded
  depth: list[int] = []     # object id -> nesting depth
  frozen: set[int] = set()  # ids inside another object, globals, storages
  work = 0

  for op, arg, _ in pickletools.genops(file):
    name = op.name
    if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
      if not stack:
        raise _Malformed("its pickle memoizes from an empty stack")
      memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
      continue
    if name in ("GET", "BINGET", "LONG_BINGET"):
      if arg not in memo:
        raise _Malformed(f"its pickle reads memo entry {arg}, never written")
      stack.append(memo[arg])
      continue
    if name == "MARK":
      marks.append(len(stack))
      continue
    if name == "DUP":
      if not stack:
        raise _Malformed("its pickle duplicates an empty stack")
      stack.append(stack[-1])
      continue
    before = op.stack_before
    if pickletools.markobject in before:
      if not marks:
        raise _Malformed(f"its pickle's {name} has no MARK")
      mark = marks.pop()
      items, num_fixed = stack[mark:], before.index(pickletools.markobject)
      del stack[mark:]
    else:
      items, num_fixed = [], len(before)
    if len(stack) < num_fixed:
      raise _Malformed(f"its pickle's {name} finds too few objects on the "
                       "stack")
    popped = stack[len(stack) - num_fixed:] + items
    del stack[len(stack) - num_fixed:]
    if name in _MUTATING_OPS:
      target, parts = popped[0], popped[1:]
      if target in frozen:
        raise _Malformed(f"its pickle's {name} changes an object after using "
                         "it, or a global or storage; a state dict never does")
    elif op.stack_after:
      target, parts = len(size), popped
      size.append(1)
      depth.append(0)
      if name in _SHARED_RESULT_OPS:
        frozen.add(target)
    else:  # POP, POP_MARK, STOP: nothing is built.
      continue
    for part in parts:
      frozen.add(part)
      size[target] += size[part]
      depth[target] = max(depth[target], depth[part] + 1)
      work += size[part]
    stack.append(target)
    # Checked against the bytes read so far: a legitimate pickle's count
    # grows with its length, and a bomb is refused at its first levels.
    nbytes = file.tell() - start
    if work > _element_limit(nbytes):
      raise _Malformed(
          f"its pickle expands to over {work} elements (counting shared "
          f"references each time) in its first {nbytes} bytes, more than the "
          f"limit of {_element_limit(nbytes)} ({ELEMENTS_PER_BYTE} per byte + "
          f"{MIN_ELEMENT_LIMIT}; a state dict expands to about one per byte): "
          "a file crafted to exhaust time or memory")
    if depth[target] > MAX_NESTING:
      raise _Malformed(
          f"its pickle nests objects {depth[target]} deep, more than the "
          f"limit of {MAX_NESTING} (a state dict nests about five levels): "
          "a file crafted to exhaust time or memory")
  end = file.tell()
  file.seek(start)
  return end - start


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickles a PyTorch state dict and nothing else.

  Storages come back as _StorageRef (registered in `self.storages` by key)
  and tensors as _TensorRef; `_Materializer` turns them into arrays. Each
  `load` scans the pickle first (`_check_pickle`), so `file` must be
  seekable.
  """

  def __init__(self, file):
    super().__init__(file)
    self._file = file
    self.storages: dict[str, _StorageRef] = {}
    # Bounds on walking what load() returns, from the pickle's length.
    self.element_limit = _element_limit(0)

  def load(self):
    self.element_limit = _element_limit(_check_pickle(self._file))
    return super().load()

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


class _Materializer:
  """Replaces every _TensorRef inside dicts/lists/tuples by its array.

  Walks each object once, by id (a shared object maps to one result, as
  torch.load would return one object), at most MAX_NESTING deep and over at
  most `element_limit` references in all.

  Args:
    byte_budget: most bytes all tensors may add up to.
    element_limit: most references the walk may follow.
  """

  def __init__(self, byte_budget: int, element_limit: int):
    self.bytes_left = byte_budget
    self.elements_left = element_limit
    self.element_limit = element_limit
    self._done: dict[int, object] = {}

  def __call__(self, obj, depth: int = 0):
    self.elements_left -= 1
    if self.elements_left < 0:
      raise _Malformed(f"its state dict holds more than {self.element_limit} "
                       "objects, more than its pickle's size allows")
    if depth > MAX_NESTING:
      raise _Malformed(f"its state dict nests deeper than {MAX_NESTING} "
                       "levels (or contains itself)")
    if id(obj) in self._done:
      return self._done[id(obj)]
    if isinstance(obj, _TensorRef):
      result = _view(obj)
      self.bytes_left -= result.nbytes
      if self.bytes_left < 0:
        raise _Malformed("its tensors add up to more bytes than the file "
                         "could hold (overlapping views)")
    elif isinstance(obj, dict):
      result = type(obj)((k, self(v, depth + 1)) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
      result = type(obj)(self(v, depth + 1) for v in obj)
    elif isinstance(obj, _StorageRef):
      raise _Malformed(f"a bare storage ({obj.key}) where a tensor was "
                       "expected")
    else:
      return obj
    # `obj` stays alive in the state being walked, so its id is not reused.
    self._done[id(obj)] = result
    return result


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
  return state, unpickler


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
  return state, unpickler


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
    state, unpickler = load(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
      state = state["state_dict"]
    if not isinstance(state, dict):
      raise _Malformed(f"expected a state dict, got {type(state).__name__}")
    # Views may overlap (tied weights), but not without bound.
    byte_budget = 2 * sum(ref.data.nbytes for ref in unpickler.storages.values()
                          if ref.data is not None) + (1 << 20)
    state = _Materializer(byte_budget, unpickler.element_limit)(state)
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
