"""Hostile input to `python -m keras_reid.tools.select_grdl_lambda`.

Guaranteed: a mistyped --config.<key> is one line naming the key and the
closest valid one (the check `keras_reid.train` makes; its cases are in
tests/hostile/train_test.py), printed before the tool reads any run.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.mark.slow
def test_mistyped_config_key_is_one_line(tmp_path):
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_REID_TF_LOGS")}
  proc = subprocess.run(
      [sys.executable, "-m", "keras_reid.tools.select_grdl_lambda",
       f"--workdir={tmp_path / 'no_run'}", "--target=viper",
       "--config=configs/viper_cotrain_cpu.py",
       "--config.stages.viper.unsupervised.grdl_iteration=3"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.splitlines() == [
      "error: --config.stages.viper.unsupervised.grdl_iteration: no such key; "
      "did you mean --config.stages.viper.unsupervised.grdl_iterations?"]


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
