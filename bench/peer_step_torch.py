r"""A peer: the same cls + 3 x verification train step in eager PyTorch.

torchvision's GoogLeNet (random init, its two auxiliary trunks) on a K x M
batch: identity classification (dropout -> Linear(N)) and verification on
every i < j pair of the batch (positives replicated as in
keras_reid.data.pipeline.pair_indices) with pairwise-consistent dropout (one
mask per pair on both features) -> difference -> ReLU -> Linear(2), the same
heads on both auxiliary features (weight 0.3), verification weight 3, SGD
with momentum 0.9 and L2 5e-4: the step bench/training_throughput.py times
for keras_reid, so that both can run in one process sequence (--peer there).
Skips with a message when torch / torchvision are not installed (they are
not requirements of keras_reid).

  python bench/peer_step_torch.py --size=128x64 --batch=32

With --serve it warms up, prints "ready", then for every line "N" on stdin
times N steps and prints the seconds: bench/training_throughput.py --peer
drives it so, in its own process (PyTorch next to TensorFlow in one process
ran 3.7x slower: both runtimes' thread pools on the same cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:  # torch before TensorFlow: the other order crashes in one process
  import torch  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  import torchvision  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
except ImportError:
  pass
from keras_reid.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_CLASSES = 100
CLS_WEIGHT, VER_WEIGHT, AUX_WEIGHT = 1.0, 3.0, 0.3


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import torchvision  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f"peer_step_torch: skipped, PyTorch not installed ({e}); "
          "pip install torch torchvision to time the peer.", flush=True)
    return None, None
  return torch, torchvision


def make_step(height: int, width: int, k: int, m: int, *,
              warmup: int = 2) -> Callable[[int], float] | None:
  """A warmed-up run(n) -> seconds of n train steps, or None without torch."""
  torch, torchvision = _torch()
  if torch is None:
    return None
  nn, f = torch.nn, torch.nn.functional
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  base = torchvision.models.googlenet(weights=None, aux_logits=True,
                                      init_weights=True)

  def heads(cls_dropout):
    return nn.ModuleDict(dict(
        cls=nn.Sequential(nn.Dropout(cls_dropout), nn.Linear(1024, NUM_CLASSES)),
        ver=nn.Linear(1024, 2)))

  head = nn.ModuleDict(dict(main=heads(0.5), aux1=heads(0.7),
                            aux2=heads(0.7)))
  params = list(base.parameters()) + list(head.parameters())
  optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9,
                              weight_decay=5e-4)
  pair_i, pair_j, pair_same = (torch.as_tensor(a) for a in
                               pipeline.pair_indices(k, m))
  pair_i, pair_j = pair_i.long(), pair_j.long()
  same = pair_same.long()
  rng = np.random.default_rng(0)
  images = torch.as_tensor(
      rng.normal(size=(k * m, 3, height, width)).astype(np.float32))
  labels = torch.as_tensor(np.repeat(np.arange(k), m)).long()

  def aux_feature(aux, x):
    x = f.adaptive_avg_pool2d(x, (4, 4))
    x = torch.flatten(aux.conv(x), 1)
    return f.relu(aux.fc1(x))

  def features(x):
    b = base
    x = b.maxpool1(b.conv1(x))
    x = b.maxpool2(b.conv3(b.conv2(x)))
    x = b.maxpool3(b.inception3b(b.inception3a(x)))
    x = b.inception4a(x)
    aux1 = aux_feature(b.aux1, x)
    x = b.inception4d(b.inception4c(b.inception4b(x)))
    aux2 = aux_feature(b.aux2, x)
    x = b.maxpool4(b.inception4e(x))
    x = b.inception5b(b.inception5a(x))
    return dict(main=torch.flatten(b.avgpool(x), 1), aux1=aux1, aux2=aux2)

  def losses(name, y):
    logits = head[name]["cls"](y)
    keep = (torch.rand(pair_i.shape[0], y.shape[1]) >= 0.5).float() / 0.5
    diff = f.relu(y[pair_i] * keep - y[pair_j] * keep)  # one mask per pair
    ver = head[name]["ver"](diff)
    return (CLS_WEIGHT * f.cross_entropy(logits, labels)
            + VER_WEIGHT * f.cross_entropy(ver, same))

  def step():
    optimizer.zero_grad(set_to_none=True)
    ys = features(images)
    loss = losses("main", ys["main"]) + AUX_WEIGHT * (
        losses("aux1", ys["aux1"]) + losses("aux2", ys["aux2"]))
    loss.backward()
    optimizer.step()
    return loss.item()

  base.train()
  head.train()
  for _ in range(warmup):
    step()

  def run(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
      step()
    return time.perf_counter() - start
  return run


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", default="128x64")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--images_per_id", type=int, default=4)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--serve", action="store_true",
                      help="Time N steps per stdin line N (see above).")
  args = parser.parse_args()
  h, w = (int(v) for v in args.size.split("x"))
  m = args.images_per_id
  run = make_step(h, w, args.batch // m, m, warmup=args.warmup)
  if run is None:
    if args.serve:
      print("unavailable", flush=True)
    return
  if args.serve:
    print("ready", flush=True)
    for line in sys.stdin:
      print(f"{run(int(line)):.6f}", flush=True)
    return
  seconds = run(args.steps)
  print(f"torch eager googlenet {args.size} batch={args.batch}: "
        f"{args.batch * args.steps / seconds:.1f} images/s", flush=True)


if __name__ == "__main__":
  main()
