"""Exports a trained run as a versioned TF-Serving SavedModel.

    python -m keras_reid.export --workdir=runs/market --export_dir=export/reid

writes `export/reid/<version>/` (the next free version number), with the
signatures serving_default (uint8 images -> L2-normalised embeddings),
serve_bytes (encoded files -> embeddings) and verify (two image batches ->
same-person probability); auxiliary heads are not exported. See
keras_reid/serving/saved_model.py and export/README.md for serving it.
"""

from typing import Sequence

from absl import app
from absl import flags

# Before anything that imports TensorFlow, to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid import user_errors
from keras_reid.serving import saved_model

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run directory of python -m keras_reid.train.")
flags.DEFINE_string("export_dir", "export/reid",
                    "Model base path; versions are numbered folders inside.")
flags.mark_flag_as_required("workdir")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Imported here so that --help does not start TensorFlow.
  print(saved_model.export_run(FLAGS.workdir, FLAGS.export_dir))


if __name__ == "__main__":
  app.run(user_errors.one_line_errors(main))
