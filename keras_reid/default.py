"""Default experiment: two-stepped fine-tuning on generated pedestrians, CPU-sized.

This is what `python -m keras_reid.train` runs with no --config; it is a
config file inside the package (train.py names it by path) so that an
installed keras_reid runs it from any folder. configs/default.py is the same
experiment beside the other configs.
"""

from __future__ import annotations

from ml_collections import config_dict

from keras_reid import schema


def get_config() -> config_dict.ConfigDict:
  """keras_reid.schema's defaults with one synthetic stage."""
  config = schema.base_config()
  # From random initialisation, so a higher lr than fine-tuning from ImageNet.
  config.stages.synthetic = schema.stage_config(
      step1_iterations=100, step2_iterations=1000, step1_lr=0.01,
      step2_lr=0.03, lr_decay_iterations=700)
  return config
