"""Hostile input to `python -m keras_reid.export`: damaged checkpoints.

Guaranteed, for a run whose final checkpoint is cut short (its data file
truncated, as a full disk or an interrupted copy leaves it):
  * export falls back to the previous checkpoint the step's
    CheckpointManager kept, and says so in one line naming the bad file and
    the checkpoint used instead;
  * when no checkpoint of the step reads, export fails with one "error: ..."
    line (exit status 1, no traceback) naming the bad file and the earlier
    checkpoints tried, and writes no version folder;
  * an index file cut short is named the same way.

A write that fails for want of space (a full disk; here a file size limit,
`ulimit -f`, which fails writes the same way without a full disk) is one
"error: ..." line naming the file and saying what to do, and leaves no
version folder and no temporary folder; an invalid config.json is one line
naming it.
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


def _export(workdir, export_dir, max_file_bytes=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

  def limit_file_size():
    # Python ignores SIGXFSZ: a write past the limit fails with EFBIG.
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes,) * 2)

  return subprocess.run(
      [sys.executable, "-m", "keras_reid.export", f"--workdir={workdir}",
       f"--export_dir={export_dir}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
      preexec_fn=limit_file_size if max_file_bytes is not None else None)


def _error_line(proc):
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines()
            if line.startswith("error: ")]
  assert len(errors) == 1, proc.stderr[-3000:]
  return errors[0]


def test_truncated_final_checkpoint_exports_the_previous(tiny, tmp_path):
  broken = tiny_run.copy(tiny, str(tmp_path / "run"))
  bad = tiny_run.truncate(tiny_run.data_file(broken, 4), 0.9)
  proc = _export(broken, tmp_path / "export")
  assert proc.returncode == 0, proc.stderr[-3000:]
  said = [line for line in proc.stderr.splitlines() if "unreadable" in line]
  assert len(said) == 1, proc.stderr[-3000:]
  previous = os.path.join(broken, tiny_run.STEP2, "ckpt-2")
  assert (f"Checkpoint file {bad} is unreadable" in said[0]
          and f"using the previous checkpoint {previous} (iteration 2)"
          in said[0]), said
  assert os.listdir(tmp_path / "export") == ["1"]


@pytest.mark.parametrize("damage", ["data", "index"])
def test_no_readable_checkpoint_is_one_line_naming_the_file(tiny, tmp_path,
                                                            damage):
  broken = tiny_run.copy(tiny, str(tmp_path / "run"))
  for iteration in (2, 4):
    data = tiny_run.data_file(broken, iteration)
    tiny_run.truncate(data if damage == "data" else
                      data.replace(".data-00000-of-00001", ".index"))
  final = os.path.join(broken, tiny_run.STEP2, "ckpt-4")
  bad = tiny_run.data_file(broken, 4) if damage == "data" else (
      final + ".index")
  error = _error_line(_export(broken, tmp_path / "export"))
  assert error.startswith(f"error: Checkpoint file {bad} is unreadable ("), (
      error)
  assert ("no earlier checkpoint in "
          f"{os.path.join(broken, tiny_run.STEP2)} reads either (tried "
          "ckpt-2)") in error, error
  assert not os.path.exists(tmp_path / "export" / "1")


def test_no_space_to_write_is_one_line_and_leaves_nothing(tiny, tmp_path):
  export_dir = tmp_path / "export"
  error = _error_line(_export(tiny, export_dir, max_file_bytes=64 * 1024))
  assert error.startswith(f"error: {export_dir}/"), error
  assert "File too large" in error and "free some space or write elsewhere" in (
      error), error
  assert "function_node" not in error
  assert os.listdir(export_dir) == []


@pytest.mark.parametrize("content, reason", [
    ("{not json", "is not valid JSON"),
    ('"config"', "holds a JSON str, not the config object"),
])
def test_invalid_config_json_is_one_line_naming_it(tmp_path, content, reason):
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text(content)
  error = _error_line(_export(run, tmp_path / "export"))
  assert error.startswith(f"error: {run / 'config.json'} {reason}"), error


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
