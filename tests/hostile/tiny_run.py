"""A finished tiny training run for the hostile-input tests, trained once per process.

Stage "synthetic": step 1 one iteration, step 2 four iterations with a
checkpoint every two, so step 2's folder keeps ckpt-2 and ckpt-4 (the final
one, which progress.json names): a damaged final checkpoint has an earlier
one to fall back to.
"""

from __future__ import annotations

import os
import shutil

from keras_reid.training import stages
from tests.training import tiny_config

_TRAINED: dict[str, str] = {}

STEP2 = os.path.join("checkpoints", "synthetic", "step2")


def config(base: str):
  """The run's config; its synthetic images live under `base`."""
  config = tiny_config.get_config()
  config.data.synthetic_dir = os.path.join(base, "synthetic")
  config.stages.synthetic.update(dict(step1_iterations=1, step2_iterations=4))
  return config


def trained(base: str) -> str:
  """The run directory under `base`, trained on the first call."""
  if base not in _TRAINED:
    workdir = os.path.join(base, "run")
    stages.train(config(base), workdir)
    _TRAINED[base] = workdir
  return _TRAINED[base]


def copy(workdir: str, dest: str) -> str:
  shutil.copytree(workdir, dest)
  return dest


def truncate(path: str, fraction: float = 0.5) -> str:
  """Cuts the file to `fraction` of its size (a full disk, a copy cut short)."""
  os.truncate(path, int(os.path.getsize(path) * fraction))
  return path


def data_file(workdir: str, iteration: int) -> str:
  """The data file of step 2's checkpoint at `iteration`."""
  return os.path.join(workdir, STEP2, f"ckpt-{iteration}.data-00000-of-00001")
