"""Config helpers shared by the entry points: resolve, validate, save, reload.

Configs are ml_collections ConfigDicts from `configs/*.py`. They are locked
and type-safe, so a mistyped key or a value of the wrong type given on the
command line fails with a message naming the key.
"""

from __future__ import annotations

import json
import os

from ml_collections import config_dict

CONFIG_FILE = "config.json"


def save_config(config: config_dict.ConfigDict, workdir: str) -> str:
  """Writes the resolved config into the run directory and returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path, "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=False))
  return path


def load_config(workdir: str) -> config_dict.ConfigDict:
  """Reads the config a training run wrote into `workdir`."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"No {CONFIG_FILE} in run directory {workdir!r}: expected the "
        "workdir of a `python -m keras_reid.train` run.")
  with open(path) as f:
    return config_dict.ConfigDict(json.load(f))


def validate_config(config: config_dict.ConfigDict) -> None:
  """Checks the ranges a ConfigDict's type safety cannot.

  Names (backbone, datasets, dropout mode, distribution) are checked against
  the registries that define them by keras_reid.training.stages.check_config,
  which calls this first: config sits below every registry.

  Raises:
    ValueError: naming the key, the value and what was expected.
  """
  def expect(ok: bool, key: str, value, expected: str):
    if not ok:
      raise ValueError(f"config.{key}={value!r}: expected {expected}.")

  expect(config.data.image_height > 0 and config.data.image_width > 0,
         "data.image_height/image_width",
         (config.data.image_height, config.data.image_width), "positive sizes")
  expect(config.data.augment_copies >= 1, "data.augment_copies",
         config.data.augment_copies, ">= 1 (1 = no augmentation)")
  expect(len(config.stages) > 0, "stages", dict(config.stages),
         "at least one stage (see configs/default.py stage_config)")
  for name, stage in config.stages.items():
    expect(stage.ids_per_batch >= 2, f"stages.{name}.ids_per_batch",
           stage.ids_per_batch, ">= 2 (negative pairs need two identities)")
    expect(stage.images_per_id >= 2, f"stages.{name}.images_per_id",
           stage.images_per_id, ">= 2 (positive pairs need two images)")
    expect(stage.step1_steps >= 0 and stage.step2_steps >= 0,
           f"stages.{name}.step1_steps/step2_steps",
           (stage.step1_steps, stage.step2_steps), "non-negative step counts")
