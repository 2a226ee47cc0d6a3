"""Writes .pth files the way torch.save does, without PyTorch (test helper).

`fake_torch(monkeypatch)` puts just enough of a `torch` module in sys.modules
for pickle to name torch's globals; `write_pth` then writes a zip or legacy
file whose pickle holds `Tensor`s (strided views of `Storage`s), exactly as
the real format does, including malformed views for the reader's tests.
"""

import collections
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


class Storage:
  """A torch storage: a key and a flat array."""

  def __init__(self, key, array):
    self.key, self.array = str(key), np.ascontiguousarray(array).ravel()


class Tensor:
  """Pickles like a torch tensor: _rebuild_tensor_v2(storage, offset, size, stride)."""

  def __init__(self, storage, size, stride, offset=0):
    self.storage, self.size, self.stride, self.offset = storage, size, stride, offset

  def __reduce__(self):
    rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
    return rebuild, (self.storage, self.offset, tuple(self.size),
                     tuple(self.stride), False, collections.OrderedDict())


def fake_torch(monkeypatch):
  """Installs a stub `torch` / `torch._utils` for the pickler; returns torch."""
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")
  def _rebuild_tensor_v2(*args):
    raise AssertionError("never called")
  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  for name in ("FloatStorage", "LongStorage"):
    setattr(torch, name, type(name, (), {"__module__": "torch"}))
  torch._utils = utils
  monkeypatch.setitem(sys.modules, "torch", torch)
  monkeypatch.setitem(sys.modules, "torch._utils", utils)
  return torch


def _pickler(file):
  torch = sys.modules["torch"]
  pickler = pickle.Pickler(file, protocol=2)
  def persistent_id(obj):
    if isinstance(obj, Storage):
      kind = torch.FloatStorage if obj.array.dtype == np.float32 else torch.LongStorage
      return ("storage", kind, obj.key, "cpu", obj.array.size)
    return None
  pickler.persistent_id = persistent_id
  return pickler


def tensors(state):
  """{key: array} -> ({key: Tensor}, [Storage]); "fc.weight" is stored
  transposed (non-contiguous), as torch keeps a .t() view."""
  out, storages = collections.OrderedDict(), []
  for n, (key, value) in enumerate(state.items()):
    if key == "fc.weight":
      storage = Storage(n, value.T)
      out[key] = Tensor(storage, value.shape, (1, value.shape[0]))
    else:
      storage = Storage(n, value)
      out[key] = Tensor(storage, value.shape,
                        tuple(s // value.itemsize for s in value.strides))
    storages.append(storage)
  return out, storages


def write_pth(path, obj, storages, fmt="zip"):
  """Writes `obj` (holding Tensors of `storages`) as torch.save would."""
  if fmt == "zip":
    with zipfile.ZipFile(path, "w") as archive:
      buffer = io.BytesIO()
      _pickler(buffer).dump(obj)
      archive.writestr("archive/data.pkl", buffer.getvalue())
      archive.writestr("archive/byteorder", "little")
      for storage in storages:
        archive.writestr(f"archive/data/{storage.key}", storage.array.tobytes())
  elif fmt == "legacy":
    with open(path, "wb") as f:
      for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(header, f, protocol=2)
      _pickler(f).dump(obj)
      pickle.dump([s.key for s in storages], f, protocol=2)
      for storage in storages:
        f.write(struct.pack("<q", storage.array.size))
        f.write(storage.array.tobytes())
  else:
    raise ValueError(f"fmt {fmt!r}: expected 'zip' or 'legacy'.")


def write_state_dict(path, state, fmt="zip"):
  """Writes {key: array} as a torch state dict file."""
  obj, storages = tensors(state)
  write_pth(path, obj, storages, fmt)
