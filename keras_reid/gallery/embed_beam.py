"""Embeds an image archive with Apache Beam into Parquet shards.

    python -m keras_reid.gallery.embed_beam --saved_model=EXPORT_DIR \
        --manifest=IMAGES.csv --output=OUT/embeddings [--runner=DirectRunner]
    python -m keras_reid.gallery.embed_beam --saved_model=EXPORT_DIR \
        --images='ARCHIVE/*.jpg' --output=OUT/embeddings
    python -m keras_reid.gallery build --embeddings='OUT/embeddings-*.parquet' \
        --index=INDEX_DIR

Flags this module does not define (--runner, --direct_num_workers,
--flink_master, --project, ...) are Beam's pipeline options. What the
pipeline does: keras_reid/gallery/batch_embedding.py, which this entry point
calls with its flags' values.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import app
from absl import flags

# Before anything that imports TensorFlow, to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid import user_errors
from keras_reid.gallery import batch_embedding

_DEFAULTS = batch_embedding.Settings(saved_model="", output="")

_SAVED_MODEL = flags.DEFINE_string(
    "saved_model", None, "An exported SavedModel version folder (or the "
    "folder of its numbered versions: the highest).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Path prefix of the shards: PREFIX-00000-of-0000N.parquet "
    "and PREFIX-skipped.txt (the unreadable images).")
_MANIFEST = flags.DEFINE_string(
    "manifest", None, "A CSV manifest with a `path` column (relative to the "
    "CSV) and optional pid, camid, time columns.")
_IMAGES = flags.DEFINE_string(
    "images", None, "A glob of image files (instead of --manifest).")
_MIN_BATCH = flags.DEFINE_integer(
    "min_batch_size", _DEFAULTS.min_batch_size, "Fewest images per model "
    "call (Beam's BatchElements adapts between min and max).")
_MAX_BATCH = flags.DEFINE_integer(
    "max_batch_size", _DEFAULTS.max_batch_size, "Most images per model call.")
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", _DEFAULTS.num_shards, "Output files (0: the runner's "
    "choice).")


def main(argv: Sequence[str]) -> None:
  for name in ("saved_model", "output"):
    if not flags.FLAGS[name].value:
      raise app.UsageError(f"--{name} is required.")
  settings = batch_embedding.Settings(
      saved_model=_SAVED_MODEL.value, output=_OUTPUT.value,
      manifest=_MANIFEST.value, images=_IMAGES.value,
      min_batch_size=_MIN_BATCH.value, max_batch_size=_MAX_BATCH.value,
      num_shards=_NUM_SHARDS.value)
  out = batch_embedding.run(settings, argv[1:])
  print(f"embedded {out['embedded']} images into {out['shards']} "
        f"(model {out['model_id']!r}); {out['unreadable']} unreadable, "
        f"listed in {out['skipped']}")
  if not out["embedded"]:
    print("no image could be read: nothing to index.", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  # Beam's options pass through: absl keeps the flags it does not know.
  app.run(user_errors.one_line_errors(main),
          flags_parser=lambda argv: flags.FLAGS(argv, known_only=True))
