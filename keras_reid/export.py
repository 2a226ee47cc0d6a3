"""Exports a trained run as a versioned TF-Serving SavedModel.

    python -m keras_reid.export --workdir=runs/market --export_dir=export/reid

writes `export/reid/<version>/` (the next free version number), with the
signatures serving_default (uint8 images -> L2-normalised embeddings),
serve_bytes (encoded files -> embeddings) and verify (two image batches ->
same-person probability); auxiliary heads are not exported. See
keras_reid/serving/saved_model.py and export/README.md for serving it.

    python -m keras_reid.export --workdir=RUN --formats=saved_model,tflite,onnx

also writes, in the same version folder, the TFLite (LiteRT) embedder in
float32, dynamic-range int8 and full int8 (calibrated on
--representative_images, by default a sample of the run's training images)
and the ONNX embedder: uint8 [B, H, W, 3] at the model's input size ->
L2-normalised embeddings (keras_reid/serving/formats.py).
"""

from typing import Sequence

from absl import app
from absl import flags

# Before anything that imports TensorFlow, to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid import user_errors
from keras_reid.serving import formats as export_formats
from keras_reid.serving import saved_model

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory of python -m keras_reid.train.")
flags.DEFINE_string("export_dir", "export/reid",
                    "Model base path; versions are numbered folders inside.")
flags.DEFINE_string(
    "formats", "saved_model",
    "Comma-separated export formats of saved_model, tflite, onnx; the "
    "SavedModel is always written, the others beside it.")
flags.DEFINE_string(
    "representative_images", "",
    "Glob of image files to calibrate the full int8 TFLite on; empty = a "
    "sample of the run's training images (of its last stage).")
flags.DEFINE_integer("representative_count", 100,
                     "How many representative images (a seeded sample).")
flags.mark_flag_as_required("workdir")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  formats = export_formats.parse_formats(FLAGS.formats)
  print(saved_model.export_run(
      FLAGS.workdir, FLAGS.export_dir, formats=formats,
      representative_images=FLAGS.representative_images,
      representative_count=FLAGS.representative_count))


if __name__ == "__main__":
  app.run(user_errors.one_line_errors(main))
