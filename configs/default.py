"""Default experiment: two-stepped fine-tuning on generated pedestrians, CPU-sized.

keras_reid/default.py's experiment, which `python -m keras_reid.train` runs
with no --config, as a config file beside the others (it lives in the
package so that an installed keras_reid runs it from any folder). The
schema every config starts from is keras_reid.schema.
"""

from keras_reid import default


def get_config():
  return default.get_config()
