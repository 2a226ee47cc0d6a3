"""Hostile input to `python -m keras_reid.data.synthetic`.

Guaranteed: --overwrite replaces only a folder holding nothing but a dataset
the generator wrote (its synthetic.json and images); a folder of the user's
own files, one with a synthetic.json the generator did not write, or a
generated dataset the user added files to is left untouched and refused
with one line naming the folder, what it holds and the way out (an empty or
new folder). Flags below their minimum (--num_ids=0, a negative size) and
--out naming a file are one line naming the flag, exit status 1, no
traceback.
"""

import json
import os
import subprocess
import sys

import pytest

from keras_reid.data.synthetic import generator as synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ["--num_ids=4", "--images_per_camera=2", "--height=32", "--width=16"]


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run(
      [sys.executable, "-m", "keras_reid.data.synthetic", *args], cwd=ROOT,
      env=env, capture_output=True, text=True, timeout=300)


def _one_line_error(proc) -> str:
  assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  return lines[0]


def _snapshot(folder):
  """{relative path: bytes} of every file, and every folder (as None)."""
  out = {}
  for parent, dirs, files in os.walk(folder):
    for name in dirs:
      out[os.path.relpath(os.path.join(parent, name), folder)] = None
    for name in files:
      path = os.path.join(parent, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


def _users_folder(path):
  os.makedirs(path / "photos")
  (path / "notes.txt").write_text("my notes")
  (path / "photos" / "cat.jpg").write_bytes(b"not really a jpeg")


def _foreign_meta(path):
  _users_folder(path)
  (path / synthetic.META_FILE).write_text(json.dumps({"experiment": 3}))


def _dataset_plus_user_file(path):
  assert _run(f"--out={path}", "--seed=0", *SMALL).returncode == 0
  (path / "query" / "labels.csv").write_text("mine")


@pytest.mark.parametrize("make, found", [
    (_users_folder, f"no {synthetic.META_FILE}"),
    (_foreign_meta, "not written by this generator"),
    (_dataset_plus_user_file, "query/labels.csv"),
])
def test_overwrite_never_deletes_what_the_generator_did_not_write(
    tmp_path, make, found):
  folder = tmp_path / "out"
  make(folder)
  before = _snapshot(folder)
  error = _one_line_error(_run(f"--out={folder}", "--seed=1", "--overwrite",
                               *SMALL))
  assert _snapshot(folder) == before
  assert str(folder) in error and found in error
  assert "empty or new folder" in error
  assert not [name for name in os.listdir(tmp_path) if name != "out"]


def test_overwrite_replaces_a_generated_dataset(tmp_path):
  folder = tmp_path / "out"
  assert _run(f"--out={folder}", "--seed=0", *SMALL).returncode == 0
  proc = _run(f"--out={folder}", "--seed=1", "--overwrite", *SMALL)
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(folder / synthetic.META_FILE) as f:
    assert json.load(f)["seed"] == 1


@pytest.mark.parametrize("flag", [
    "--num_ids=0", "--num_ids=-3", "--height=-5", "--width=0",
    "--images_per_camera=-1", "--num_cameras=1"])
def test_bad_flag_is_one_line_naming_it(tmp_path, flag):
  args = [f"--out={tmp_path / 'out'}", *SMALL, flag]
  error = _one_line_error(_run(*args))
  assert flag in error
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("out", ["a_file", "a_file/below"])
def test_out_naming_a_file_is_one_line_naming_it(tmp_path, out):
  (tmp_path / "a_file").write_text("keep me")
  error = _one_line_error(_run(f"--out={tmp_path / out}", *SMALL,
                               "--overwrite"))
  assert f"--out={tmp_path / out}" in error and "not a folder" in error
  assert (tmp_path / "a_file").read_text() == "keep me"


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
