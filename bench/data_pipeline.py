"""Benchmarks of the data layer: synthetic generation and the training pipeline.

    TF_CPP_MIN_LOG_LEVEL=2 python bench/data_pipeline.py [--quick]

Measures, in one run so the ratios are comparable on a shared machine:
  1. synthetic generation rate (images/s, one process = one core);
  2. training pipeline throughput with the paper's 5x augmentation
     (K=32 x M=4 batches of 128x64 images, images/s);
  3. the consumption rate of a training step: forward + backward + SGD of
     MobileNet v1 (alpha 0.25) with classification + verification heads on
     the same batches fed from memory (images/s), a stand-in for the real
     training step (keras_reid.training), which the pipeline must beat >= 3x.
Results are recorded in bench/data_results.md.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top

from keras_reid.data import datasets  # pylint: disable=g-import-not-at-top
from keras_reid.data import pipeline  # pylint: disable=g-import-not-at-top
from keras_reid.data import synthetic  # pylint: disable=g-import-not-at-top


def bench_generation(tmp, num_ids):
  out = os.path.join(tmp, "syn")
  # CPU time of this (single-threaded) process: the rate on one core,
  # robust to other jobs sharing the machine.
  t = time.process_time()
  synthetic.generate(out, num_ids=num_ids, seed=0)
  dt = time.process_time() - t
  n = sum(len(os.listdir(os.path.join(out, s)))
          for s in ("bounding_box_train", "bounding_box_test", "query"))
  return out, n, n / dt


def bench_pipeline(records, k, m, steps):
  ds = pipeline.make_train_dataset(records, ids_per_batch=k, images_per_id=m,
                                   image_size=(128, 64), normalization="tf",
                                   augment_copies=5, seed=0)
  it = iter(ds)
  for _ in range(3):  # warm up (tracing, autotune)
    batch = next(it)
  t = time.perf_counter()
  for _ in range(steps):
    batch = next(it)
  dt = time.perf_counter() - t
  return batch, steps * k * m / dt


def bench_step(batch, num_classes, steps):
  """Stand-in training step: MobileNet 0.25 + cls + pairwise ver heads."""
  images = keras.Input((128, 64, 3))
  base = keras.applications.MobileNet(input_shape=(128, 64, 3), alpha=0.25,
                                      include_top=False, weights=None,
                                      pooling="avg")
  feat = base(images)
  model = keras.Model(images, [feat, keras.layers.Dense(num_classes)(feat)])
  ver = keras.layers.Dense(2)
  opt = keras.optimizers.SGD(1e-3, momentum=0.9)
  ver.build((None, feat.shape[-1]))

  @tf.function
  def step(b):
    with tf.GradientTape() as tape:
      f, logits = model(b["images"], training=True)
      cls = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          b["labels"], logits))
      d = tf.nn.relu(tf.gather(f, b["pair_i"]) - tf.gather(f, b["pair_j"]))
      v = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          tf.cast(b["pair_same"], tf.int32), ver(d)))
      loss = cls + 3 * v
    variables = model.trainable_variables + ver.trainable_variables
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  for _ in range(2):
    step(batch)
  t = time.perf_counter()
  for _ in range(steps):
    step(batch).numpy()
  dt = time.perf_counter() - t
  return steps * batch["images"].shape[0] / dt


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  tmp = tempfile.mkdtemp()
  try:
    out, n, gen_rate = bench_generation(tmp, 100 if args.quick else 400)
    print(f"synthetic generation: {n} images, {gen_rate:.0f} images/s "
          "per core (CPU time)")
    ds = datasets.load_dataset("synthetic", out)
    k, m = 32, 4
    steps = 5 if args.quick else 20
    batch, pipe_rate = bench_pipeline(ds.train, k, m, steps)
    print(f"training pipeline (K={k} x M={m}, 128x64, 5x augmentation): "
          f"{pipe_rate:.0f} images/s")
    step_rate = bench_step(batch, len({r.pid for r in ds.train}), steps)
    print(f"training step stand-in (MobileNet 0.25, cls + ver): "
          f"{step_rate:.0f} images/s")
    print(f"pipeline / step = {pipe_rate / step_rate:.1f}x")
  finally:
    shutil.rmtree(tmp)


if __name__ == "__main__":
  main()
