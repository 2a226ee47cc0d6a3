"""Prints what a dataset reader sees, to check a dataset is read right.

    python -m keras_reid.data.inspect --dataset=viper --root=DIR [--split=K]
        [--options=key=value,...] [--pid_names_json=FILE]

Prints a readable summary, then as the last line one JSON object with the
counts (num_train_ids, num_train_images, num_query_ids, num_query_images,
num_gallery_ids, num_gallery_images, num_cameras, ...).
"""

from __future__ import annotations

from absl import app
from absl import flags

# Before anything that imports TensorFlow, to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid import user_errors
from keras_reid.data import datasets
from keras_reid.data import from_config
from keras_reid.data import inspection

_DATASET = flags.DEFINE_string("dataset", None,
                               f"One of {sorted(datasets.DATASETS)}.")
_ROOT = flags.DEFINE_string("root", None, "Dataset folder (or the one above).")
_SPLIT = flags.DEFINE_integer("split", 0, "Split index (random-split sets).")
_SPLIT_SEED = flags.DEFINE_integer("split_seed", 0, "Seed of the splits.")
_OPTIONS = flags.DEFINE_string(
    "options", "", "Reader options \"key=value,...\", e.g. "
    "\"allow_incomplete=true\".")
_PID_NAMES_JSON = flags.DEFINE_string(
    "pid_names_json", "", "Manifests with string pids: write the full "
    "pid -> name mapping to this JSON file.")


def main(argv: list[str]) -> None:
  del argv
  # A wrong folder, name or option, or a folder as --pid_names_json, is the
  # user's input, not a bug: one line (user_errors), no traceback.
  text = inspection.inspect_dataset(
      _DATASET.value, _ROOT.value, split=_SPLIT.value,
      split_seed=_SPLIT_SEED.value, pid_names_json=_PID_NAMES_JSON.value,
      **from_config.parse_options(_OPTIONS.value, _DATASET.value))
  print(text)


if __name__ == "__main__":
  flags.mark_flags_as_required(["dataset", "root"])
  app.run(user_errors.one_line_errors(main))
