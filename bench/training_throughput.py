r"""Training throughput (images/s) of the cls + ver train step, per precision.

Times the real train step of keras_reid.training.loop (step 2: all layers,
classification + 3 x verification (+ GoogLeNet's auxiliary heads),
pairwise-consistent dropout, SGD momentum, coupled L2) on random K x M
batches fed from memory, for every combination of backbone, input size,
batch, XLA and precision (Keras dtype policy). The precisions of one
combination are built side by side and timed in alternating rounds, so
their ratio holds on a loaded machine; absolute images/s do not.

With --peer, bench/peer_step_torch.py's eager PyTorch step (torchvision
GoogLeNet, the same batch and pairs) is timed in its own process, driven
through a pipe in the same alternating rounds as ours (one runtime works
while the other waits), and printed next to it with the ratio.

  python bench/training_throughput.py --backbones=googlenet,mobilenet_v1 \
      --sizes=128x64 --batches=32,128 --xla=false,true \
      --precisions=float32,mixed_bfloat16 --steps=3 --rounds=2
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import keras_reid  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import  # first: oneDNN on (keras_reid/onednn.py)
import keras
import numpy as np
import tensorflow as tf

from configs import default  # pylint: disable=g-import-not-at-top
from keras_reid.data import pipeline
from keras_reid.models import builders
from keras_reid.models import precision as precision_lib
from keras_reid.training import loop

_M = flags.DEFINE_integer("images_per_id", 4, "M images per identity; "
                          "K = batch / M identities.")
_BATCHES = flags.DEFINE_list("batches", ["32", "128"], "Batch sizes K x M.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first.")
_SIZES = flags.DEFINE_list("sizes", ["128x64", "224x224"], "HxW input sizes.")
_BACKBONES = flags.DEFINE_list("backbones", ["googlenet", "mobilenet_v1"],
                               "Backbone names.")
_ALPHA = flags.DEFINE_float("alpha", 0.25, "Width multiplier (MobileNets).")
_XLA = flags.DEFINE_list("xla", ["false", "true"], "XLA settings to time.")
_PRECISIONS = flags.DEFINE_list(
    "precisions", ["float32", "mixed_bfloat16"],
    "Keras dtype policies to time (the first is the ratio's reference).")
_PEER = flags.DEFINE_bool("peer", False, "Also time bench/peer_step_torch.py "
                          "(GoogLeNet rows only; skipped without torch).")
_PEER_PYTHON = flags.DEFINE_string(
    "peer_python", sys.executable, "Python that runs the peer (one with "
    "torch and torchvision installed, e.g. a venv's bin/python).")
_DISTINCT = flags.DEFINE_bool(
    "distinct_pairs", False, "Also time the first precision's step with "
    "train.distinct_pairs (heads once per distinct pair), as row "
    "'<precision>+distinct_pairs'.")
_FUSED_BN = flags.DEFINE_bool(
    "fused_batchnorm", False, "Also time the first precision's step with "
    "model.fused_batchnorm, as row '<precision>+fused_batchnorm' (and, with "
    "--distinct_pairs, '<precision>+distinct_pairs+fused_batchnorm').")
_OUTPUT = flags.DEFINE_string("output_json", "", "Also write results here.")


def random_batch(k, m, h, w):
  pair_i, pair_j, pair_same = pipeline.pair_indices(k, m)
  rng = np.random.default_rng(0)
  return dict(images=rng.normal(size=(k * m, h, w, 3)).astype(np.float32),
              labels=np.repeat(np.arange(k), m).astype(np.int32),
              pair_i=pair_i, pair_j=pair_j, pair_same=pair_same)


def build_step(backbone, height, width, k, m, jit, policy, alpha=0.25,
               distinct_pairs=False, fused_batchnorm=False):
  """The real step-2 train step of `backbone` on a random K x M batch.

  Returns a dict: model (the training model), optimizer, iteration (the
  `loop.make_train_iteration` tf.function, not yet traced), iterator (the
  batch repeated from memory), batch (its NumPy arrays), weights (the loss
  weights) and weight_decay (the coupled L2 coefficient).
  """
  config = default.get_config()
  config.model.backbone = backbone
  config.model.alpha = alpha
  config.model.aux_heads = backbone == "googlenet"
  config.model.fused_batchnorm = fused_batchnorm
  with precision_lib.policy_scope(policy):
    model = builders.build_training_model(
        config.model, num_classes=100, input_shape=(height, width, 3), seed=0)
  builders.set_step_trainable(model, 2)
  strategy = tf.distribute.get_strategy()
  step2 = loop.FineTuningStep("bench", 2, 0, 1e-3, 40000, 0.1)
  optimizer = loop.make_optimizer(
      config.train, step2,
      loss_scaling=precision_lib.uses_loss_scaling(policy))
  weights = loop.loss_weights(config.loss, 2)
  weight_decay = loop.coupled_weight_decay(config.train)
  train_iteration = loop.make_train_iteration(
      model, optimizer, strategy, weights, jit_compile=jit,
      distinct_pairs=distinct_pairs, weight_decay=weight_decay)
  batch = random_batch(k, m, height, width)
  iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
  return dict(model=model, optimizer=optimizer, iteration=train_iteration,
              iterator=iterator, batch=batch, weights=weights,
              weight_decay=weight_decay)


def make_step(backbone, height, width, k, m, jit, policy,
              distinct_pairs=False, fused_batchnorm=False):
  """A warmed-up `run(n)` timing n train steps under `policy`."""
  step = build_step(backbone, height, width, k, m, jit, policy,
                    alpha=_ALPHA.value, distinct_pairs=distinct_pairs,
                    fused_batchnorm=fused_batchnorm)
  train_iteration, iterator = step["iteration"], step["iterator"]
  for _ in range(_WARMUP.value):
    float(train_iteration(iterator)["loss/total"])

  def run(n):
    start = time.perf_counter()
    for _ in range(n):
      values = train_iteration(iterator)
    float(values["loss/total"])
    return time.perf_counter() - start
  return run


def peer_step(height, width, k, m):
  """bench/peer_step_torch.py's warmed-up step in its own process, or None.

  Returns (run(n) -> seconds of n peer steps, close()); None without torch.
  The peer waits on a pipe while ours runs and the other way round, so each
  runtime has the cores to itself (in one process PyTorch ran 3.7x slower).
  """
  peer = subprocess.Popen(
      [_PEER_PYTHON.value, os.path.join(os.path.dirname(__file__),
                                        "peer_step_torch.py"), "--serve",
       f"--size={height}x{width}", f"--batch={k * m}",
       f"--images_per_id={m}", f"--warmup={_WARMUP.value}"],
      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
      env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
  status = peer.stdout.readline().strip()
  while status and status not in ("ready", "unavailable"):  # its own output
    print(f"  peer: {status}", flush=True)
    status = peer.stdout.readline().strip()
  if status != "ready":
    peer.communicate()
    print("  peer: skipped (PyTorch / torchvision not installed)", flush=True)
    return None

  def run(n):
    peer.stdin.write(f"{n}\n")
    peer.stdin.flush()
    return float(peer.stdout.readline())

  def close():
    peer.stdin.close()
    peer.wait()
  return run, close


def main(argv):
  del argv
  results = []
  m = _M.value
  for backbone in _BACKBONES.value:
    for size in _SIZES.value:
      h, w = (int(v) for v in size.split("x"))
      for batch in (int(b) for b in _BATCHES.value):
        k = batch // m
        for jit in (v.lower() == "true" for v in _XLA.value):
          runs = {p: make_step(backbone, h, w, k, m, jit, p)
                  for p in _PRECISIONS.value}
          options = []  # (distinct_pairs, fused_batchnorm) of extra rows
          if _DISTINCT.value:
            options.append((True, False))
          if _FUSED_BN.value:
            options.append((False, True))
          if _DISTINCT.value and _FUSED_BN.value:
            options.append((True, True))
          first = _PRECISIONS.value[0]
          for distinct, fused in options:
            name = (first + ("+distinct_pairs" if distinct else "")
                    + ("+fused_batchnorm" if fused else ""))
            runs[name] = make_step(backbone, h, w, k, m, jit, first,
                                   distinct_pairs=distinct,
                                   fused_batchnorm=fused)
          close_peer = None
          if _PEER.value and backbone == "googlenet" and not jit:
            peer = peer_step(h, w, k, m)
            if peer is not None:
              runs["torch_eager_float32"], close_peer = peer
          seconds = {name: 0.0 for name in runs}
          for _ in range(_ROUNDS.value):  # alternate: the load hits all alike
            for name, run in runs.items():
              seconds[name] += run(_STEPS.value)
          reference = _PRECISIONS.value[0]
          images = k * m * _STEPS.value * _ROUNDS.value
          for name, total in seconds.items():
            ips = images / total
            ratio = seconds[reference] / total
            row = dict(backbone=backbone, size=size, batch=k * m, xla=jit,
                       precision=name, images_per_sec=ips,
                       speed_vs_reference=ratio)
            results.append(row)
            print(f"{backbone} {size} batch={k * m} xla={jit} {name}: "
                  f"{ips:.1f} images/s ({ratio:.2f}x {reference})", flush=True)
          if "torch_eager_float32" in seconds:
            for name, total in seconds.items():
              if name != "torch_eager_float32":
                print(f"  ours ({name}) / torch eager: "
                      f"{seconds['torch_eager_float32'] / total:.2f}x",
                      flush=True)
          if close_peer:
            close_peer()
          keras.backend.clear_session()
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
