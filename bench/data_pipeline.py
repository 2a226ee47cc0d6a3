"""Benchmarks of the data layer: synthetic generation and the training pipeline.

    TF_CPP_MIN_LOG_LEVEL=2 python bench/data_pipeline.py [--quick]

Measures, in one run so the ratios are comparable on a shared machine:
  1. synthetic generation rate (images/s, one process = one core);
  2. training pipeline throughput with the paper's 5x augmentation
     (K=32 x M=4 batches of 128x64 images, images/s and CPU ms per image),
     decoding every image at every use vs from the in-memory cache of
     decoded images (data.train_cache_mb), alternating;
  3. the consumption rate of the real training step (keras_reid.training.loop,
     step 2 of the default config: MobileNet v1 0.25, classification +
     verification) on the same batches fed from memory (images/s), which
     the pipeline must beat >= 3x.
Results are recorded in bench/data_results.md.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras_reid  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import  # first: oneDNN on (keras_reid/onednn.py)
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from configs import default  # pylint: disable=g-import-not-at-top
from keras_reid.data import datasets  # pylint: disable=g-import-not-at-top
from keras_reid.data import pipeline  # pylint: disable=g-import-not-at-top
from keras_reid.data.synthetic import generator as synthetic  # pylint: disable=g-import-not-at-top
from keras_reid.models import builders  # pylint: disable=g-import-not-at-top
from keras_reid.training import loop  # pylint: disable=g-import-not-at-top


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


def bench_pipeline(records, k, m, iterations, rounds=3):
  """Images/s and CPU ms per image, decoded images cached vs not.

  Both pipelines are built first (the cached one decodes every image once,
  not timed) and iterated in alternating rounds, so that the load of other
  jobs hits both alike.

  Returns:
    (a batch, {"decode": (images/s, CPU ms/image), "cached": (...)}).
  """
  its = {}
  for name, limit in (("decode", 0), ("cached", 2**40)):
    ds = pipeline.make_train_dataset(
        records, ids_per_batch=k, images_per_id=m, image_size=(128, 64),
        normalization="tf", augment_copies=5, seed=0, augment_seed=0,
        cache_max_bytes=limit)
    its[name] = iter(ds)
    for _ in range(3):  # warm up (tracing, autotune)
      batch = next(its[name])
  wall = {name: 0.0 for name in its}
  cpu = {name: 0.0 for name in its}
  for _ in range(rounds):
    for name, it in its.items():
      t, c = time.perf_counter(), time.process_time()
      for _ in range(iterations):
        batch = next(it)
      wall[name] += time.perf_counter() - t
      cpu[name] += time.process_time() - c
  images = rounds * iterations * k * m
  return batch, {name: (images / wall[name], 1000 * cpu[name] / images)
                 for name in its}


def bench_train_iteration(batch, num_classes, iterations):
  """The real training step (keras_reid.training.loop, step 2) on `batch`.

  The default config's model (MobileNet v1 0.25, classification +
  verification with pairwise-consistent dropout), fed from memory.
  """
  config = default.get_config()
  model = builders.build_training_model(
      config.model, num_classes=num_classes,
      input_shape=tuple(batch["images"].shape[1:]), seed=0)
  builders.set_step_trainable(model, 2)
  strategy = tf.distribute.get_strategy()
  step2 = loop.FineTuningStep("bench", 2, iterations, 1e-3, 40000, 0.1)
  train_iteration = loop.make_train_iteration(
      model, loop.make_optimizer(config.train, step2), strategy,
      loop.loss_weights(config.loss, 2), jit_compile=False)
  iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
  for _ in range(2):
    float(train_iteration(iterator)["loss/total"])
  t = time.perf_counter()
  for _ in range(iterations):
    values = train_iteration(iterator)
  float(values["loss/total"])
  dt = time.perf_counter() - t
  return iterations * batch["images"].shape[0] / dt


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
    iterations = 5 if args.quick else 20
    batch, rates = bench_pipeline(ds.train, k, m, iterations)
    for name, (rate, cpu_ms) in rates.items():
      print(f"training pipeline, {name} (K={k} x M={m}, 128x64, 5x "
            f"augmentation): {rate:.0f} images/s, {cpu_ms:.2f} CPU ms/image")
    print(f"cached / decode: {rates['cached'][0] / rates['decode'][0]:.2f}x "
          f"images/s, {rates['decode'][1] / rates['cached'][1]:.2f}x less "
          "CPU per image")
    pipe_rate = rates["cached"][0]
    iteration_rate = bench_train_iteration(batch, len({r.pid for r in ds.train}), iterations)
    print(f"training step (keras_reid.training.loop, default model): "
          f"{iteration_rate:.0f} images/s")
    print(f"pipeline (cached) / step = {pipe_rate / iteration_rate:.1f}x; the "
          "pipeline's CPU per trained image: "
          f"{rates['cached'][1] * iteration_rate / 1000:.0%} of a core (cached), "
          f"{rates['decode'][1] * iteration_rate / 1000:.0%} (decode) at the "
          "step's rate")
  finally:
    shutil.rmtree(tmp)


if __name__ == "__main__":
  main()
