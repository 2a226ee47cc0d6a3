"""Hostile input to `python -m keras_reid.data.inspect`: where it writes.

Guaranteed: `--pid_names_json` naming a folder (or a file it cannot write)
is one "error: ..." line with exit status 1, no traceback, and leaves
nothing beside or inside the folder (it left a stray <name>.tmp<pid> file,
then a traceback). The mapping written to a file is the manifest's.
Dataset options are tested with the readers in train_test.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

pytestmark = pytest.mark.slow


@pytest.fixture
def manifest(tmp_path):
  """A manifest with string pids (so that inspect writes their names)."""
  folder = tmp_path / "data"
  folder.mkdir()
  rows = [("a.jpg", "alice", 0, "train"), ("b.jpg", "bob", 1, "train"),
          ("q.jpg", "alice", 0, "query"), ("g.jpg", "alice", 1, "gallery")]
  for name, *_ in rows:
    Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(folder / name)
  path = folder / "m.csv"
  path.write_text("path,pid,camid,split\n" + "".join(
      ",".join(str(x) for x in row) + "\n" for row in rows))
  return str(path)


def _inspect(manifest, pid_names_json):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run(
      [sys.executable, "-m", "keras_reid.data.inspect", "--dataset=manifest",
       f"--root={manifest}", f"--pid_names_json={pid_names_json}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_pid_names_json_a_folder_is_one_line_and_leaves_nothing(manifest,
                                                                tmp_path):
  out = tmp_path / "out"
  folder = out / "names.json"
  folder.mkdir(parents=True)
  proc = _inspect(manifest, folder)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [line for line in proc.stderr.splitlines()
           if line.startswith("error: ")]
  assert len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith(f"error: {folder} is a folder; expected the path "
                             "of a file to write"), lines
  assert os.listdir(out) == ["names.json"] and os.listdir(folder) == []


def test_pid_names_json_written_to_a_file(manifest, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  path = out / "names.json"
  proc = _inspect(manifest, path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(path.read_text()) == {"1": "alice", "2": "bob"}
  assert os.listdir(out) == ["names.json"]


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
