r"""Training throughput (images/s) of the GoogLeNet cls + ver train step.

Times the real train step of keras_reid.training.loop (step 2: all layers,
classification + 3 x verification + auxiliary heads, pairwise-consistent
dropout, SGD momentum) on random K x M batches, at 128x64 and 224x224, with
and without XLA. Timed over `--steps` steps after `--warmup` steps (which
include tracing and compilation).

  python bench/training_throughput.py --ids_per_batch=8 --images_per_id=4
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import default  # pylint: disable=g-import-not-at-top
from keras_reid.data import pipeline
from keras_reid.models import builders
from keras_reid.training import loop

_K = flags.DEFINE_integer("ids_per_batch", 8, "K identities per batch.")
_M = flags.DEFINE_integer("images_per_id", 4, "M images per identity.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first.")
_SIZES = flags.DEFINE_list("sizes", ["128x64", "224x224"], "HxW input sizes.")
_BACKBONE = flags.DEFINE_string("backbone", "googlenet", "Backbone name.")
_ALPHA = flags.DEFINE_float("alpha", 0.25, "Width multiplier (MobileNets).")
_XLA = flags.DEFINE_list("xla", ["false", "true"], "XLA settings to time.")
_OUTPUT = flags.DEFINE_string("output_json", "", "Also write results here.")


def random_batches(k, m, h, w):
  pair_i, pair_j, pair_same = pipeline.pair_indices(k, m)
  rng = np.random.default_rng(0)
  batch = dict(images=rng.normal(size=(k * m, h, w, 3)).astype(np.float32),
               labels=np.repeat(np.arange(k), m).astype(np.int32),
               camids=np.zeros(k * m, np.int32), pair_i=pair_i, pair_j=pair_j,
               pair_same=pair_same)
  return tf.data.Dataset.from_tensors(batch).repeat()


def measure(height, width, jit):
  config = default.get_config()
  config.model.backbone = _BACKBONE.value
  config.model.alpha = _ALPHA.value
  config.model.aux_heads = _BACKBONE.value == "googlenet"
  config.train.jit_compile = jit
  k, m = _K.value, _M.value
  model = builders.build_training_model(
      config.model, num_classes=100, input_shape=(height, width, 3), seed=0)
  builders.set_step_trainable(model, 2)
  strategy = tf.distribute.get_strategy()
  phase = loop.Phase("bench", 2, 0, 1e-3, 40000, 0.1)
  optimizer = loop.make_optimizer(config.train, phase)
  step = loop.make_train_step(model, optimizer, strategy,
                              loop.loss_weights(config.loss, 2),
                              jit_compile=jit)
  iterator = iter(strategy.distribute_datasets_from_function(
      lambda ctx: random_batches(k, m, height, width)))
  for _ in range(_WARMUP.value):
    float(step(iterator)["loss/total"])
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    values = step(iterator)
  float(values["loss/total"])
  seconds = time.perf_counter() - start
  return k * m * _STEPS.value / seconds


def main(argv):
  del argv
  results = []
  for size in _SIZES.value:
    h, w = (int(v) for v in size.split("x"))
    for jit in (v.lower() == "true" for v in _XLA.value):
      ips = measure(h, w, jit)
      results.append(dict(backbone=_BACKBONE.value, size=size, xla=jit,
                          batch=_K.value * _M.value, images_per_sec=ips))
      print(f"{_BACKBONE.value} {size} xla={jit} batch={_K.value * _M.value}: "
            f"{ips:.1f} images/s", flush=True)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
