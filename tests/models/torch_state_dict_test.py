"""Tests of the NumPy-only .pth reader on files written here, good and crafted."""

import collections
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
from PIL import Image
import pytest

from keras_reid.models import torch_state_dict
from tests.tools import pth_files


@pytest.fixture
def torch_stub(monkeypatch):
  return pth_files.fake_torch(monkeypatch)


def _state():
  rng = np.random.default_rng(0)
  return collections.OrderedDict(
      [("a.weight", rng.normal(size=(3, 2, 2, 1)).astype("float32")),
       ("module.fc.weight", rng.normal(size=(4, 5)).astype("float32")),
       ("fc.weight", rng.normal(size=(4, 5)).astype("float32")),
       ("a.num_batches_tracked", np.array(3, "int64"))])


def _load_error(path) -> str:
  with pytest.raises(ValueError) as error:
    torch_state_dict.load_state_dict(str(path))
  message = str(error.value)
  assert str(path) in message
  assert "not a readable PyTorch state dict" in message
  return message


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_reads_both_formats(tmp_path, torch_stub, fmt):
  state = _state()
  path = tmp_path / "x.pth"
  pth_files.write_state_dict(path, state, fmt)
  loaded = torch_state_dict.load_state_dict(str(path))
  # "module." (DataParallel) is stripped; the later fc.weight wins.
  assert list(loaded) == ["a.weight", "fc.weight", "a.num_batches_tracked"]
  for key in loaded:
    np.testing.assert_array_equal(loaded[key], state[key])
    assert loaded[key].dtype == state[key].dtype


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_valid_strided_views_read_like_numpy(tmp_path, torch_stub, fmt):
  data = np.arange(12, dtype="float32")
  storage = pth_files.Storage(0, data)
  views = {  # name: (size, stride, offset)
      "offset_view": ((2, 3), (3, 1), 6),
      "every_other": ((3,), (2,), 1),
      "broadcast": ((4, 3), (0, 1), 0),   # stride 0 (expand), within the storage
      "size_one_any_stride": ((1, 2), (1000, 1), 10),
      "empty": ((0, 5), (5, 1), 0),
  }
  obj = {k: pth_files.Tensor(storage, *v) for k, v in views.items()}
  path = tmp_path / "views.pth"
  pth_files.write_pth(path, obj, [storage], fmt)
  loaded = torch_state_dict.load_state_dict(str(path))
  for name, (size, stride, offset) in views.items():
    expected = np.lib.stride_tricks.as_strided(
        data[offset:], shape=size, strides=[4 * s for s in stride])
    np.testing.assert_array_equal(loaded[name], expected)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("size, stride, offset, reason", [
    # The reported exploit: a negative stride reads before the storage.
    ((4,), (-1000,), 3, "negative"),
    ((2,), (1,), -1, "negative"),
    ((3,), (2,), 0, "run past"),           # highest element 4 of 4
    ((2, 2), (2, 1), 3, "run past"),
    ((1,), (1,), 4, "run past"),           # offset == storage size
    ((10**12,), (0,), 0, "exceed"),        # stride-0 allocation bomb
    ((2**40, 2**40), (0, 0), 0, "exceed"),
    ((2,), (1, 1), 0, "same length"),
])
def test_crafted_tensor_is_refused(tmp_path, torch_stub, fmt, size, stride,
                                   offset, reason):
  storage = pth_files.Storage(0, np.arange(4, dtype="float32"))
  path = tmp_path / "crafted.pth"
  pth_files.write_pth(path, {"w": pth_files.Tensor(storage, size, stride, offset)},
                      [storage], fmt)
  assert os.path.getsize(path) < 1000  # tiny, like the reported 566-byte file
  assert reason in _load_error(path)


def test_overlapping_views_cannot_multiply_memory(tmp_path, torch_stub):
  storage = pth_files.Storage(0, np.zeros(1 << 16, "float32"))
  obj = {f"w{i}": pth_files.Tensor(storage, (1 << 16,), (1,)) for i in range(40)}
  path = tmp_path / "overlap.pth"
  pth_files.write_pth(path, obj, [storage], "legacy")
  assert "overlapping views" in _load_error(path)


def test_storage_size_claim_beyond_the_file_is_refused(tmp_path, torch_stub):
  storage = pth_files.Storage(0, np.zeros(4, "float32"))
  path = tmp_path / "claim.pth"
  pth_files.write_pth(path, {"w": pth_files.Tensor(storage, (4,), (1,))},
                      [storage], "legacy")
  raw = bytearray(path.read_bytes())
  header = (4).to_bytes(8, "little") + b"\0" * 16
  at = raw.rindex(header)
  raw[at:at + 8] = (1 << 31).to_bytes(8, "little")  # the element count
  path.write_bytes(bytes(raw))
  assert "elements" in _load_error(path)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_truncated_file_is_refused(tmp_path, torch_stub, fmt):
  path = tmp_path / "cut.pth"
  pth_files.write_state_dict(path, _state(), fmt)
  raw = path.read_bytes()
  for keep in (len(raw) - 9, len(raw) // 2, 3):
    path.write_bytes(raw[:keep])
    message = _load_error(path)
    assert "truncated" in message or "unreadable" in message


def test_renamed_jpeg_is_refused(tmp_path):
  path = tmp_path / "photo.pth"
  Image.new("RGB", (8, 8), (200, 10, 10)).save(path, format="JPEG")
  assert "neither a zip archive nor a legacy torch.save stream" in _load_error(path)


@pytest.mark.parametrize("content", [b"", b"\x80\x02garbage", b"\x80\x02K\x07.",
                                     pickle.dumps([1, 2], protocol=2)])
def test_other_malformed_streams_are_refused(tmp_path, content):
  path = tmp_path / "bad.pth"
  path.write_bytes(content)
  message = _load_error(path)
  assert not message.startswith("invalid load key")


def test_zip_without_storage_is_refused(tmp_path, torch_stub):
  path = tmp_path / "nostorage.pth"
  pth_files.write_state_dict(path, _state(), "zip")
  with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "b.pth", "w") as dst:
    for name in src.namelist():
      if name != "archive/data/0":
        dst.writestr(name, src.read(name))
  assert "missing from the zip" in _load_error(tmp_path / "b.pth")


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_code_running_pickle_is_refused_not_run(tmp_path, fmt):
  marker = tmp_path / "pwned"

  class Evil:
    def __reduce__(self):
      return os.system, (f"touch {marker}",)

  path = tmp_path / "evil.pth"
  payload = pickle.dumps({"x": Evil()}, protocol=2)
  if fmt == "zip":
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("archive/data.pkl", payload)
  else:
    path.write_bytes(b"".join(pickle.dumps(h, protocol=2) for h in (
        pth_files.LEGACY_MAGIC, 1001, {})) + payload)
  assert "refusing to unpickle the global" in _load_error(path)
  assert "system" in _load_error(path)
  assert not marker.exists()


def test_missing_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.pth"):
    torch_state_dict.load_state_dict(str(tmp_path / "nope.pth"))


def test_imports_and_reads_without_tensorflow(tmp_path, torch_stub):
  path = tmp_path / "x.pth"
  pth_files.write_state_dict(path, _state(), "zip")
  script = textwrap.dedent(f"""
      import sys
      sys.modules["tensorflow"] = None  # any import of it now fails
      sys.modules["keras"] = None
      from keras_reid.models import torch_state_dict
      state = torch_state_dict.load_state_dict({str(path)!r})
      assert "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None
      print(sorted(state))
      """)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, cwd=root, check=False, timeout=120)
  assert result.returncode == 0, result.stderr
  assert "'a.weight'" in result.stdout


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
