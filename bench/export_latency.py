"""CPU latency and throughput of the export formats, measured side by side.

    TF_CPP_MIN_LOG_LEVEL=2 python bench/export_latency.py [--rounds=7] \
        [--threads=0] [--out=bench/export_results.md]

Builds the viper_cpu config's model (MobileNet v1 alpha 0.5 at 128x64),
randomly initialised (latency does not depend on the weights; the int8
files are calibrated on random images, fine for timing only), exports it
with every format (keras_reid.serving.formats) and times, on uint8 images
of the model's size:
  saved_model    serving_default of the SavedModel (tf.saved_model.load);
  tflite_float32, tflite_dynamic_int8, tflite_int8
                 tf.lite.Interpreter's signature runner (XNNPACK);
  onnx           onnxruntime, CPUExecutionProvider.
Batch 1: latency (median and 90th percentile of single calls, ms); batch 32:
throughput (images/s). The formats are interleaved round by round, so on a
shared machine they share its load; only ratios within one run mean much.
Every runtime gets --threads threads (0 = all CPUs).
"""

import datetime
import os
import platform
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import onnxruntime

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import keras_reid  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import  # first: oneDNN on (keras_reid/onednn.py)
import tensorflow as tf

from configs import viper_cpu  # pylint: disable=g-import-not-at-top
from keras_reid import cpu_kind
from keras_reid.models import builders
from keras_reid.serving import formats
from keras_reid.serving import saved_model

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 7, "Rounds; each times every format once.")
flags.DEFINE_float("min_seconds", 1.0, "Least time per measurement.")
flags.DEFINE_integer("threads", 0, "Threads of every runtime; 0 = all CPUs.")
flags.DEFINE_string("out", "", "Also write the results (markdown) here.")

VARIANTS = ("saved_model", "tflite_float32", "tflite_dynamic_int8",
            "tflite_int8", "onnx")


def _runners(path: str, threads: int) -> dict:
  """Format -> function(uint8 [B, H, W, 3]) -> embeddings [B, D]."""
  serving = tf.saved_model.load(path).signatures["serving_default"]
  runners = {"saved_model": lambda x: serving(
      images=tf.constant(x))["embeddings"].numpy()}
  for variant in VARIANTS[1:4]:
    interpreter = tf.lite.Interpreter(
        model_path=os.path.join(path, formats.FORMAT_FILES[variant]),
        num_threads=threads or os.cpu_count())
    runner = interpreter.get_signature_runner("serving_default")
    runners[variant] = lambda x, r=runner: r(images=x)["embeddings"]
  options = onnxruntime.SessionOptions()
  options.intra_op_num_threads = threads
  session = onnxruntime.InferenceSession(
      os.path.join(path, formats.FORMAT_FILES["onnx"]), options,
      providers=["CPUExecutionProvider"])
  runners["onnx"] = lambda x: session.run(["embeddings"], {"images": x})[0]
  return runners


def _latencies(fn, images) -> list[float]:
  fn(images)  # warm-up (allocation, resizing to this batch)
  times, start = [], time.perf_counter()
  while time.perf_counter() - start < FLAGS.min_seconds:
    t = time.perf_counter()
    fn(images)
    times.append(time.perf_counter() - t)
  return times


def main(argv):
  del argv
  # Before TensorFlow runs anything (it cannot be changed afterwards).
  tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
  config = viper_cpu.get_config()
  h, w = config.data.image_height, config.data.image_width
  config.model.weights = ""
  model = builders.build_training_model(config.model, num_classes=10,
                                        input_shape=(h, w, 3), seed=0)
  embedder = builders.build_embedder(model)
  normalization = builders.normalization_for(config.model)
  rng = np.random.default_rng(0)
  calibration = rng.integers(0, 256, (16, h, w, 3), dtype=np.uint8)
  load_before = os.getloadavg()
  started = datetime.datetime.now(datetime.timezone.utc)
  with tempfile.TemporaryDirectory() as tmp:
    t = time.perf_counter()
    path = saved_model.export_saved_model(
        embedder, builders.build_pair_scorer(model), export_base=tmp,
        image_size=(h, w), normalization=normalization,
        write_extra=lambda folder: {"formats": formats.write_formats(
            folder, embedder, image_size=(h, w), normalization=normalization,
            formats=("saved_model", "tflite", "onnx"),
            representative_images=calibration,
            representative_source="random images")})
    export_seconds = time.perf_counter() - t
    sizes = {v: os.path.getsize(os.path.join(path, f))
             for v, f in formats.FORMAT_FILES.items()}
    sizes["saved_model"] = sum(
        os.path.getsize(os.path.join(d, f))
        for d, _, files in os.walk(path) for f in files
        if not f.endswith((".tflite", ".onnx")))
    runners = _runners(path, FLAGS.threads)
    batch1 = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    batch32 = rng.integers(0, 256, (32, h, w, 3), dtype=np.uint8)
    lat = {v: [] for v in VARIANTS}
    rate = {v: [] for v in VARIANTS}
    for _ in range(FLAGS.rounds):
      for variant in VARIANTS:
        lat[variant].extend(_latencies(runners[variant], batch1))
        times = _latencies(runners[variant], batch32)
        rate[variant].append(32 * len(times) / sum(times))
  load_after = os.getloadavg()
  cpu = cpu_kind.describe()
  cpu_model = cpu["model"] or platform.processor()
  cpu_flags = " ".join(cpu["flags"])
  base_rate = float(np.median(rate["saved_model"]))
  base_lat = float(np.median(lat["saved_model"]))
  lines = [
      f"Run {started:%Y-%m-%d %H:%M} UTC: `TF_CPP_MIN_LOG_LEVEL=2 python "
      f"bench/export_latency.py --rounds={FLAGS.rounds} "
      f"--threads={FLAGS.threads}"
      + (f" --out={FLAGS.out}" if FLAGS.out else "") + "`",
      "",
      f"- CPU: {cpu_model}, {os.cpu_count()} logical CPUs; threads per "
      f"runtime: {FLAGS.threads or os.cpu_count()}",
      f"- load average (1 min) before / after: {load_before[0]:.1f} / "
      f"{load_after[0]:.1f}",
      f"- model: {config.model.backbone} alpha={config.model.alpha}, input "
      f"{h}x{w}, embedding {embedder.output.shape[-1]}, random weights; "
      f"exporting every format took {export_seconds:.0f} s",
      f"- tensorflow {tf.__version__}, onnxruntime {onnxruntime.__version__}",
      "",
      "| format | file MB | batch 1 median ms | batch 1 p90 ms | "
      "batch 1 speed-up | batch 32 img/s | batch 32 speed-up |",
      "|---|---|---|---|---|---|---|",
  ]
  for variant in VARIANTS:
    median = float(np.median(lat[variant]))
    lines.append(
        f"| {variant} | {sizes[variant] / 1e6:.2f} | {median * 1e3:.2f} | "
        f"{np.percentile(lat[variant], 90) * 1e3:.2f} | "
        f"{base_lat / median:.2f} | {np.median(rate[variant]):.0f} | "
        f"{np.median(rate[variant]) / base_rate:.2f} |")
  lines += ["", f"CPU flags: {cpu_flags}"]
  text = "\n".join(lines) + "\n"
  print(text)
  if FLAGS.out:
    with open(FLAGS.out, "a") as f:
      f.write("\n" + text)


if __name__ == "__main__":
  app.run(main)
