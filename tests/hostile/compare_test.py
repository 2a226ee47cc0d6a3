"""Hostile input to `python -m keras_reid.compare`: damaged runs, full disks.

Guaranteed:
  * a run directory whose config.json is not valid JSON is one "error: ..."
    line naming that file (exit status 1, no traceback);
  * --csv that cannot be written for want of space (a full disk; here a
    file size limit, `ulimit -f`, which fails writes the same way) is one
    line naming the CSV file, leaving no temporary file; --csv naming a
    folder is one line too and leaves the folder as it was.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from tests.hostile import tiny_run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return tiny_run.trained(str(tmp_path_factory.getbasetemp() / "tiny_run"))


def _compare(*args, max_file_bytes=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

  def limit_file_size():
    # Python ignores SIGXFSZ: a write past the limit fails with EFBIG.
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes,) * 2)

  return subprocess.run(
      [sys.executable, "-m", "keras_reid.compare", *map(str, args)],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
      preexec_fn=limit_file_size if max_file_bytes is not None else None)


def _error_line(proc):
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr[-3000:]
  return lines[0]


def test_malformed_config_json_is_one_line_naming_it(tiny, tmp_path):
  broken = tiny_run.copy(tiny, str(tmp_path / "run"))
  path = os.path.join(broken, "config.json")
  with open(path, "w") as f:
    f.write('{"data": {')
  error = _error_line(_compare(broken))
  assert error.startswith(f"error: {path} is not valid JSON"), error


def test_csv_without_space_is_one_line_naming_it(tiny, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  csv = out / "cmp.csv"
  error = _error_line(_compare(tiny, f"--csv={csv}", max_file_bytes=0))
  assert error.startswith(f"error: [Errno 27] File too large: '{csv}' "), error
  assert "free some space or write elsewhere" in error
  assert os.listdir(out) == []


def test_csv_a_folder_is_one_line(tiny, tmp_path):
  folder = tmp_path / "cmp.csv"
  folder.mkdir()
  error = _error_line(_compare(tiny, f"--csv={folder}"))
  assert error.startswith(f"error: {folder} is a folder"), error
  assert os.listdir(tmp_path) == ["cmp.csv"] and os.listdir(folder) == []


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
