r"""Forward + backward time of one training batch, per backbone (CPU).

Builds the package's training model (keras_reid.models.builders: backbone,
classification head, verification head on all same/different pairs of the
batch) for each backbone at the same input size, and times one SGD step
(forward, cls + ver losses, gradients of every trainable weight, update) on
a random K x M batch. All backbones are timed in one process, in alternating
rounds, and the median step time is reported; weights are random (the time
does not depend on them).

  nice -n 5 python bench/backbone_step_time.py            # 64 images, 128x64
  python bench/backbone_step_time.py --rounds=3 --steps=5 --size=128x64

A backbone name may carry options: "mobilenet_v1:alpha=0.5",
"efficientnet_lite0:freeze_bn" (BatchNorm on moving statistics, as the
EfficientNet-Lite weights want).
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import keras_reid  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import  # first: oneDNN on (keras_reid/onednn.py)
import tensorflow as tf

from keras_reid import schema  # pylint: disable=g-import-not-at-top
from keras_reid.data import pipeline
from keras_reid.models import builders

_BACKBONES = flags.DEFINE_list(
    "backbones", ["mobilenet_v1:alpha=0.5", "efficientnet_lite0:freeze_bn",
                  "efficientnet_lite0", "efficientnet_lite1:freeze_bn"],
    "Backbones to time, NAME[:alpha=A][:freeze_bn].")
_SIZE = flags.DEFINE_string("size", "128x64", "HxW input size.")
_K = flags.DEFINE_integer("ids_per_batch", 32, "K identities per batch.")
_M = flags.DEFINE_integer("images_per_id", 2, "M images per identity.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds.")


def _parse(spec):
  name, *options = spec.split(":")
  alpha, freeze_bn = 1.0, False
  for option in options:
    if option.startswith("alpha="):
      alpha = float(option[len("alpha="):])
    elif option == "freeze_bn":
      freeze_bn = True
    else:
      raise app.UsageError(f"--backbones: unknown option {option!r} in {spec!r}.")
  return name, alpha, freeze_bn


def make_step(spec, height, width):
  """A compiled train step of the package's model for one backbone spec."""
  name, alpha, freeze_bn = _parse(spec)
  config = schema.base_config()
  config.model.backbone, config.model.alpha = name, alpha
  config.model.weights, config.model.freeze_bn = "", freeze_bn
  k, m = _K.value, _M.value
  model = builders.build_training_model(config.model, num_classes=316,
                                        input_shape=(height, width, 3), seed=0)
  builders.set_step_trainable(model, 2, freeze_bn=freeze_bn)
  pair_i, pair_j, pair_same = pipeline.pair_indices(k, m)
  rng = np.random.default_rng(0)
  inputs = {"images": tf.constant(rng.uniform(-1, 1, (k * m, height, width, 3)),
                                  tf.float32),
            "pair_i": tf.constant(pair_i, tf.int32),
            "pair_j": tf.constant(pair_j, tf.int32)}
  labels = tf.constant(np.repeat(np.arange(k), m), tf.int32)
  same = tf.constant(pair_same, tf.int32)
  optimizer = tf.keras.optimizers.SGD(1e-3, momentum=0.9)
  cls = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      out = model(inputs, training=True)
      loss = cls(labels, out["logits"]) + cls(same, out["verification_logits"])
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  step()  # trace + first run, untimed
  return step, model.get_layer("backbone").count_params()


def main(argv):
  del argv
  height, width = (int(v) for v in _SIZE.value.split("x"))
  steps = {spec: make_step(spec, height, width) for spec in _BACKBONES.value}
  times = {spec: [] for spec in steps}
  for _ in range(_ROUNDS.value):
    for spec, (step, _) in steps.items():
      for _ in range(_STEPS.value):
        start = time.perf_counter()
        float(step())
        times[spec].append(time.perf_counter() - start)
  batch = _K.value * _M.value
  print(f"batch {batch} at {height}x{width}, {os.cpu_count()} CPUs, "
        f"{_ROUNDS.value} rounds x {_STEPS.value} steps")
  print("| backbone | backbone weights (incl. BN statistics) | median s/step "
        "| images/s |")
  print("|---|---|---|---|")
  for spec, (_, params) in steps.items():
    median = statistics.median(times[spec])
    print(f"| {spec} | {params:,} | {median:.3f} | {batch / median:.0f} |")


if __name__ == "__main__":
  app.run(main)
