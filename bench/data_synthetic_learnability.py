"""Is the synthetic data learnable but not trivial? Rank-1 of simple methods.

    TF_CPP_MIN_LOG_LEVEL=2 python bench/data_synthetic_learnability.py

On a fresh synthetic dataset (60 ids, seed 0, domain a, as the default
config): chance, a colour-histogram baseline (what "separable by colour"
would give), raw pixels, and a small CNN trained a few hundred steps with
classification loss through the real training pipeline. Single-query
Market protocol (same-id same-camera gallery images and junk ignored).
Results in bench/data_results.md.
"""

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # pylint: disable=g-import-not-at-top

import keras_reid  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import  # first: oneDNN on (keras_reid/onednn.py)
import keras  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from keras_reid.data import datasets  # pylint: disable=g-import-not-at-top
from keras_reid.data import pipeline  # pylint: disable=g-import-not-at-top

SIZE = (64, 32)


def rank1(qf, gf, qp, gp, qc, gc):
  d = ((qf[:, None] - gf[None]) ** 2).sum(-1)
  hits = []
  for i in range(len(qf)):
    keep = ~(((gp == qp[i]) & (gc == qc[i])) | (gp == -1))
    order = np.argsort(d[i][keep])
    hits.append(gp[keep][order[0]] == qp[i])
  return float(np.mean(hits))


def images(recs):
  return np.concatenate(list(pipeline.make_eval_dataset(
      recs, image_size=SIZE, normalization="none", batch_size=256)))


def hist(x, bins=8):
  q = np.clip((x / 256 * bins).astype(int), 0, bins - 1)
  idx = q[..., 0] * bins * bins + q[..., 1] * bins + q[..., 2]
  h = np.stack([np.bincount(i.ravel(), minlength=bins ** 3) for i in idx])
  return np.sqrt(h / h.sum(1, keepdims=True))


def main():
  tmp = tempfile.mkdtemp()
  try:
    ds = datasets.load_dataset("synthetic", os.path.join(tmp, "s"),
                               num_ids=60, seed=0)
    qp = np.array([r.pid for r in ds.query])
    gp = np.array([r.pid for r in ds.gallery])
    qc = np.array([r.camid for r in ds.query])
    gc = np.array([r.camid for r in ds.gallery])
    qx, gx = images(ds.query), images(ds.gallery)
    args = (qp, gp, qc, gc)
    print(f"queries {len(qp)}, gallery {len(gp)}, "
          f"chance ~{1 / len(set(gp[gp > 0])):.3f}")
    print(f"colour histogram rank-1: {rank1(hist(qx), hist(gx), *args):.3f}")
    flat = lambda x: x.reshape(len(x), -1) / 255
    print(f"raw pixels rank-1: {rank1(flat(qx), flat(gx), *args):.3f}")
    n_cls = len({r.pid for r in ds.train})
    keras.utils.set_random_seed(0)
    inp = keras.Input(SIZE + (3,))
    x = inp
    for f in (16, 32, 64):
      x = keras.layers.Conv2D(f, 3, padding="same", use_bias=False)(x)
      x = keras.layers.BatchNormalization()(x)
      x = keras.layers.ReLU()(x)
      x = keras.layers.MaxPool2D()(x)
    feat = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(n_cls)(keras.layers.Dropout(0.3)(feat))
    model = keras.Model(inp, [feat, logits])
    opt = keras.optimizers.SGD(0.05, momentum=0.9)
    train = pipeline.make_train_dataset(ds.train, ids_per_batch=8,
                                        images_per_id=4, image_size=SIZE,
                                        normalization="tf", seed=0)

    @tf.function
    def step(b):
      with tf.GradientTape() as tape:
        _, lg = model(b["images"], training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(b["labels"], lg))
      g = tape.gradient(loss, model.trainable_variables)
      opt.apply_gradients(zip(g, model.trainable_variables))
      return loss

    t = time.perf_counter()
    for b in train.take(300):
      loss = step(b)
    print(f"CNN 300 steps in {time.perf_counter() - t:.0f}s, final loss "
          f"{float(loss):.3f}")
    f = lambda x: model((x / 127.5 - 1), training=False)[0].numpy()
    print(f"small CNN rank-1: {rank1(f(qx), f(gx), *args):.3f}")
  finally:
    shutil.rmtree(tmp)


if __name__ == "__main__":
  main()
