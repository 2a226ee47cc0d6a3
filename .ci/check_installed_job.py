"""Checks the default job that .ci/run trains with a non-editable install.

Run by the virtualenv's python from the job's folder (outside the source
tree):

  python check_installed_job.py --run=run --sources=SRC --venv=VENV

Fails (AssertionError naming what is wrong) unless keras_reid was imported
from VENV, every package under SRC/keras_reid is installed, the run wrote
metrics.json, and its config.json has today's layout and migrates: the same
file in an older layout (a stage's unsupervised settings at the stage level,
a key added to the schema since missing) loads to the same config.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

import keras_reid
from keras_reid import config as config_lib
from keras_reid import schema


def installed_from(venv: str) -> str:
  """keras_reid's folder; AssertionError unless it lies under `venv`."""
  root = os.path.dirname(os.path.realpath(keras_reid.__file__))
  assert root.startswith(os.path.realpath(venv) + os.sep), (
      f"keras_reid imported from {root}, expected the install in {venv}")
  return root


def missing_packages(sources: str, installed: str) -> list[str]:
  """Packages (folders with __init__.py) of SRC/keras_reid not installed."""
  source_root = os.path.join(sources, "keras_reid")
  return [os.path.relpath(folder, sources)
          for folder, _, files in os.walk(source_root)
          if "__init__.py" in files and not os.path.exists(os.path.join(
              installed, os.path.relpath(folder, source_root), "__init__.py"))]


def check_config_migrates(run: str) -> None:
  """config.json has stage.unsupervised; its older layout loads the same."""
  with open(os.path.join(run, config_lib.CONFIG_FILE)) as f:
    written = json.load(f)
  for name, stage in written["stages"].items():
    assert set(stage.get("unsupervised", ())) == set(
        schema.stage_config().unsupervised), (
            f"config.json stages.{name}.unsupervised={stage.get('unsupervised')}: "
            "expected the keys of keras_reid.schema.stage_config().unsupervised")
    # The older layout: the keys that were then at the stage level sit
    # there; keys added since (e.g. the clustering ones) are absent, and
    # loading fills them with their defaults.
    unsupervised = stage.pop("unsupervised")
    stage.update({key: unsupervised[key]
                  for key in config_lib.MOVED_STAGE_KEYS["unsupervised"]})
  del written["eval"]["flip_test"]
  old = tempfile.mkdtemp(prefix="old_run-")
  try:
    with open(os.path.join(old, config_lib.CONFIG_FILE), "w") as f:
      json.dump(written, f)
    assert config_lib.load_config(old).to_dict() == (
        config_lib.load_config(run).to_dict()), (
            "an older-layout config.json does not load as the run's own: "
            "keras_reid.config's migration did not run")
  finally:
    shutil.rmtree(old)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--run", required=True, help="the job's run directory")
  parser.add_argument("--sources", required=True,
                      help="the folder the wheel was built from")
  parser.add_argument("--venv", required=True, help="the virtualenv")
  args = parser.parse_args()
  installed = installed_from(args.venv)
  missing = missing_packages(args.sources, installed)
  assert not missing, f"packages missing from the install: {missing}"
  with open(os.path.join(args.run, "metrics.json")) as f:
    metrics = json.load(f)
  assert 0.0 <= metrics["rank1"] <= 1.0, f"metrics.json: {metrics}"
  check_config_migrates(args.run)
  print(f"installed keras_reid ({installed}) trained the default job: "
        f"rank1 {metrics['rank1']:.3f}; config.json migrates")


if __name__ == "__main__":
  main()
