"""Tests of the torch-free GoogLeNet converter on .pth files written here."""

import collections
import functools
import os
import pickle
import struct
import sys
import types
import zipfile

import h5py
import numpy as np
import pytest

from keras_reid.models import backbones
from keras_reid.models import googlenet
from keras_reid.tools import convert_googlenet


class _Storage:
  def __init__(self, key, array):
    self.key, self.array = key, np.ascontiguousarray(array).ravel()


class _Tensor:
  """Pickles like a torch tensor: _rebuild_tensor_v2(storage, offset, size, stride)."""

  def __init__(self, storage, size, stride, offset=0):
    self.storage, self.size, self.stride, self.offset = storage, size, stride, offset

  def __reduce__(self):
    rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
    return rebuild, (self.storage, self.offset, self.size, self.stride, False,
                     collections.OrderedDict())


@pytest.fixture
def fake_torch(monkeypatch):
  """Just enough of a `torch` module for pickle to name its globals."""
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


def _pickler(file, torch):
  pickler = pickle.Pickler(file, protocol=2)
  def persistent_id(obj):
    if isinstance(obj, _Storage):
      kind = torch.FloatStorage if obj.array.dtype == np.float32 else torch.LongStorage
      return ("storage", kind, obj.key, "cpu", obj.array.size)
    return None
  pickler.persistent_id = persistent_id
  return pickler


@functools.lru_cache(maxsize=1)
def _cached_state_dict():
  return _make_random_state_dict(np.random.default_rng(1))


def _random_state_dict(rng):
  del rng
  return collections.OrderedDict(_cached_state_dict())


def _make_random_state_dict(rng):
  """torchvision-layout arrays for every layer of the Keras GoogLeNet + extras."""
  model = googlenet.build_googlenet((32, 32, 3), include_top=True)
  state = collections.OrderedDict()
  for layer in model.layers:
    module = layer.name.replace("_", ".")
    shapes = [tuple(w.shape) for w in layer.weights]
    kind = type(layer).__name__
    if kind == "Conv2D":
      h, w, i, o = shapes[0]
      state[f"{module}.weight"] = rng.normal(size=(o, i, h, w)).astype("float32")
    elif kind == "BatchNormalization":
      for param in ("weight", "bias", "running_mean"):
        state[f"{module}.{param}"] = rng.normal(size=shapes[0]).astype("float32")
      state[f"{module}.running_var"] = rng.uniform(0.5, 2, shapes[0]).astype("float32")
      state[f"{module}.num_batches_tracked"] = np.array(7, "int64")
    elif kind == "Dense":
      state[f"{module}.weight"] = rng.normal(size=shapes[0][::-1]).astype("float32")
      state[f"{module}.bias"] = rng.normal(size=shapes[1]).astype("float32")
  state["aux1.fc1.weight"] = rng.normal(size=(4, 3)).astype("float32")
  return state


def _tensors(state):
  out = collections.OrderedDict()
  for n, (key, value) in enumerate(state.items()):
    if key == "fc.weight":
      # Stored transposed (non-contiguous), as torch keeps a .t() view.
      storage = _Storage(str(n), value.T)
      out[key] = _Tensor(storage, value.shape, (1, value.shape[0]))
    else:
      strides = tuple(s // value.itemsize for s in value.strides)
      out[key] = _Tensor(_Storage(str(n), value), value.shape, strides)
  return out


def _write_zip_pth(path, state, torch):
  with zipfile.ZipFile(path, "w") as archive:
    buffer = __import__("io").BytesIO()
    _pickler(buffer, torch).dump(_tensors(state))
    archive.writestr("archive/data.pkl", buffer.getvalue())
    archive.writestr("archive/byteorder", "little")
    for n, (key, value) in enumerate(state.items()):
      data = value.T if key == "fc.weight" else value
      archive.writestr(f"archive/data/{n}", np.ascontiguousarray(data).tobytes())


def _write_legacy_pth(path, state, torch):
  with open(path, "wb") as f:
    for header in (0x1950a86a20f9469cfc6c, 1001, {"little_endian": True}):
      pickle.dump(header, f, protocol=2)
    _pickler(f, torch).dump(_tensors(state))
    keys = [str(n) for n in range(len(state))]
    pickle.dump(keys, f, protocol=2)
    for key, value in zip(keys, state.values()):
      data = np.ascontiguousarray(value.T if key == str(list(state).index("fc.weight"))
                                  else value)
      f.write(struct.pack("<q", data.size))
      f.write(data.tobytes())


@pytest.mark.parametrize("writer", [_write_zip_pth, _write_legacy_pth])
def test_load_state_dict_reads_both_formats(tmp_path, fake_torch, writer):
  rng = np.random.default_rng(0)
  state = collections.OrderedDict(
      [("a.weight", rng.normal(size=(3, 2, 2, 1)).astype("float32")),
       ("fc.weight", rng.normal(size=(4, 5)).astype("float32")),
       ("a.num_batches_tracked", np.array(3, "int64"))])
  path = str(tmp_path / "x.pth")
  writer(path, state, fake_torch)
  loaded = convert_googlenet.load_state_dict(path)
  assert list(loaded) == list(state)
  for key, value in state.items():
    np.testing.assert_array_equal(loaded[key], value)
    assert loaded[key].dtype == value.dtype


def test_convert_file_loads_into_the_backbone(tmp_path, fake_torch):
  state = _random_state_dict(np.random.default_rng(1))
  src, dst = str(tmp_path / "googlenet.pth"), str(tmp_path / "g.weights.h5")
  _write_zip_pth(src, state, fake_torch)
  unused = convert_googlenet.convert_file(src, dst)
  assert unused == ["aux1.fc1.weight", "fc.bias", "fc.weight"]
  with h5py.File(dst) as f:
    assert f.attrs["keras_reid_normalization"] == "tf"
    assert bool(f.attrs["keras_reid_torch_transform_input"])
  backbone = backbones.build_backbone("googlenet", input_shape=(64, 32, 3), weights=dst)
  model = backbone.model
  np.testing.assert_array_equal(
      model.get_layer("inception3a_branch3_1_conv").kernel.numpy(),
      state["inception3a.branch3.1.conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(model.get_layer("conv1_bn").moving_variance.numpy(),
                                state["conv1.bn.running_var"])
  assert backbone.feature_dim == 1024 and backbone.normalization == "tf"


def test_include_top_converts_the_transposed_fc(tmp_path, fake_torch):
  state = _random_state_dict(np.random.default_rng(2))
  src = str(tmp_path / "googlenet.pth")
  _write_zip_pth(src, state, fake_torch)
  model, _ = convert_googlenet.convert(convert_googlenet.load_state_dict(src),
                                       include_top=True)
  np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(),
                                state["fc.weight"].T)


def test_malicious_pickle_is_refused(tmp_path):
  marker = tmp_path / "pwned"

  class Evil:
    def __reduce__(self):
      return os.system, (f"touch {marker}",)

  path = str(tmp_path / "evil.pth")
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
  with pytest.raises(pickle.UnpicklingError, match=r"Refusing to unpickle .*system"):
    convert_googlenet.load_state_dict(path)
  assert not marker.exists()


def test_missing_layer_is_named(tmp_path, fake_torch):
  state = _random_state_dict(np.random.default_rng(3))
  del state["conv2.conv.weight"]
  with pytest.raises(ValueError, match="conv2_conv"):
    convert_googlenet.convert(state)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
