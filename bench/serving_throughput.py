"""SavedModel embedding throughput vs the Keras embedder in process.

    TF_CPP_MIN_LOG_LEVEL=2 python bench/serving_throughput.py [--repeats=5]

Builds the default config's model (randomly initialised: throughput does not
depend on the weights), exports it, and measures images/s at batch 1 and 64:
  keras      the Keras embedder on normalised float32 images, called in a
             tf.function (the in-process fast path);
  saved      the exported SavedModel's serving_default, loaded, on uint8
             images of the model's size (resize, normalisation and L2
             normalisation inside);
  saved_png  serve_bytes on PNG files (decoding inside).
The variants are interleaved round by round and the median is reported, so
the ratios are measured under the same load.
"""

import os
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import keras_reid  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import  # first: oneDNN on (keras_reid/onednn.py)
import tensorflow as tf

from configs import default as default_config  # pylint: disable=g-import-not-at-top
from keras_reid.data import preprocessing
from keras_reid.models import builders
from keras_reid.serving import saved_model

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Rounds; each times every variant once.")
flags.DEFINE_float("min_seconds", 1.0, "Least time per measurement.")


def _rate(fn, batch):
  fn()  # warm-up (tracing, allocation)
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < FLAGS.min_seconds:
    fn()
    n += 1
  return n * batch / (time.perf_counter() - start)


def main(argv):
  del argv
  config = default_config.get_config()
  h, w = config.data.image_height, config.data.image_width
  config.model.weights = ""
  model = builders.build_training_model(config.model, num_classes=10,
                                        input_shape=(h, w, 3), seed=0)
  embedder = builders.build_embedder(model)
  normalization = builders.normalization_for(config.model)
  with tempfile.TemporaryDirectory() as tmp:
    path = saved_model.export_saved_model(
        embedder, builders.build_pair_scorer(model), export_base=tmp,
        image_size=(h, w), normalization=normalization)
    serving = tf.saved_model.load(path)
    default = serving.signatures["serving_default"]
    serve_bytes = serving.signatures["serve_bytes"]
    keras_fn = tf.function(lambda x: embedder(x, training=False))
    rows = []
    for batch in (1, 64):
      images = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3),
                                                 dtype=np.uint8)
      floats = preprocessing.normalize(tf.constant(images, tf.float32),
                                       normalization)
      uint8 = tf.constant(images)
      pngs = tf.constant([tf.io.encode_png(i).numpy() for i in images])
      variants = {
          # Default arguments bind this batch size's inputs now.
          "keras": lambda x=floats: keras_fn(x).numpy(),
          "saved": lambda x=uint8: default(images=x)["embeddings"].numpy(),
          "saved_png": lambda x=pngs: serve_bytes(images=x)["embeddings"].numpy(),
      }
      rates = {k: [] for k in variants}
      for _ in range(FLAGS.repeats):
        for name, fn in variants.items():
          rates[name].append(_rate(fn, batch))
      med = {k: float(np.median(v)) for k, v in rates.items()}
      rows.append((batch, med))
  print(f"model: {config.model.backbone} alpha={config.model.alpha}, input "
        f"{h}x{w}, embedding {embedder.output.shape[-1]}; "
        f"{os.cpu_count()} CPUs; median of {FLAGS.repeats} rounds")
  print("| batch | keras img/s | saved img/s | saved/keras | serve_bytes (PNG) img/s | png/keras |")
  print("|---|---|---|---|---|---|")
  for batch, med in rows:
    print(f"| {batch} | {med['keras']:.0f} | {med['saved']:.0f} | "
          f"{med['saved'] / med['keras']:.2f} | {med['saved_png']:.0f} | "
          f"{med['saved_png'] / med['keras']:.2f} |")


if __name__ == "__main__":
  app.run(main)
