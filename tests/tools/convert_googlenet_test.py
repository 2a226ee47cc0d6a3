"""Tests of the torch-free GoogLeNet converter (library and entry point)."""

import collections
import functools
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from keras_reid.models import backbones
from keras_reid.models import googlenet
from keras_reid.models import torch_state_dict
from keras_reid.tools import googlenet_conversion
from tests.tools import pth_files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def torch_stub(monkeypatch):
  return pth_files.fake_torch(monkeypatch)


@functools.lru_cache(maxsize=1)
def _cached_state_dict():
  """torchvision-layout arrays for every layer of the Keras GoogLeNet + extras."""
  rng = np.random.default_rng(1)
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


def _random_state_dict():
  return collections.OrderedDict(_cached_state_dict())


def test_convert_file_loads_into_the_backbone(tmp_path, torch_stub):
  state = _random_state_dict()
  src, dst = str(tmp_path / "googlenet.pth"), str(tmp_path / "g.weights.h5")
  pth_files.write_state_dict(src, state, "legacy")
  unused = googlenet_conversion.convert_file(src, dst)
  assert unused == ["aux1.fc1.weight", "fc.bias", "fc.weight"]
  assert sorted(os.listdir(tmp_path)) == ["g.weights.h5", "googlenet.pth"]  # no temp left
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


def test_include_top_converts_the_transposed_fc(tmp_path, torch_stub):
  state = _random_state_dict()
  src = str(tmp_path / "googlenet.pth")
  pth_files.write_state_dict(src, state, "zip")  # fc.weight stored as a .t() view
  model, _ = googlenet_conversion.convert(torch_state_dict.load_state_dict(src),
                                          include_top=True)
  np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(),
                                state["fc.weight"].T)


def test_missing_layer_is_named():
  state = _random_state_dict()
  del state["conv2.conv.weight"]
  with pytest.raises(ValueError, match="conv2_conv"):
    googlenet_conversion.convert(state)


def test_bad_destination_is_refused(tmp_path):
  with pytest.raises(ValueError, match=r"\.weights\.h5"):
    googlenet_conversion.convert_file(str(tmp_path / "x.pth"), str(tmp_path / "x.h5"))


def test_entry_point_converts_with_its_flag(tmp_path, torch_stub):
  # Through `python -m`: the entry point defines flags, so it is run as a
  # program, never imported as a library.
  src, dst = str(tmp_path / "googlenet.pth"), str(tmp_path / "top.weights.h5")
  state = _random_state_dict()
  pth_files.write_state_dict(src, state, "zip")
  result = subprocess.run(
      [sys.executable, "-m", "keras_reid.tools.convert_googlenet", src, dst,
       "--include_top"],
      capture_output=True, text=True, cwd=ROOT, check=False, timeout=300)
  assert result.returncode == 0, result.stderr
  assert "unused state-dict entries: 1 (aux1)" in result.stdout
  model = googlenet.build_googlenet((32, 32, 3), include_top=True)
  model.load_weights(dst)
  np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(),
                                state["fc.weight"].T)


def test_entry_point_reports_a_bad_file_in_one_line(tmp_path):
  bad = tmp_path / "photo.pth"
  bad.write_bytes(b"\xff\xd8\xff\xe0 not a state dict")
  result = subprocess.run(
      [sys.executable, "-m", "keras_reid.tools.convert_googlenet", str(bad),
       str(tmp_path / "out.weights.h5")],
      capture_output=True, text=True, cwd=ROOT, check=False, timeout=300)
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  assert f"{bad}: not a readable PyTorch state dict" in result.stderr
  assert not (tmp_path / "out.weights.h5").exists()


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
