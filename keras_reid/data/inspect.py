"""Prints what a dataset reader sees, to check a dataset is read right.

    python -m keras_reid.data.inspect --dataset=viper --root=DIR [--split=K]

Prints a readable summary, then as the last line one JSON object with the
counts (num_train_ids, num_train_images, num_query_ids, num_query_images,
num_gallery_ids, num_gallery_images, num_cameras, ...).
"""

from __future__ import annotations

import collections
import json
import sys

from absl import app
from absl import flags

from keras_reid.data import datasets
from keras_reid.data import records as records_lib


def describe(ds: records_lib.ReidDataset) -> tuple[str, dict[str, int]]:
  """Returns (readable summary, counts) of a dataset."""
  counts = ds.summary()
  counts["num_junk_images"] = sum(
      r.pid == records_lib.JUNK_PID for r in ds.query + ds.gallery)
  counts["num_distractor_images"] = sum(
      r.pid == records_lib.DISTRACTOR_PID for r in ds.query + ds.gallery)
  counts["num_unknown_camid_images"] = sum(
      r.camid == records_lib.UNKNOWN_CAMID
      for r in ds.train + ds.query + ds.gallery)
  lines = [f"dataset {ds.name}"]
  for name, recs in (("train", ds.train), ("query", ds.query),
                     ("gallery", ds.gallery)):
    per_id = collections.Counter(r.pid for r in recs)
    cams = collections.Counter(r.camid for r in recs)
    sizes = sorted(per_id.values())
    lines.append(
        f"  {name:8s} {len(recs):7d} images {len(per_id):6d} ids"
        + (f"  images/id min {sizes[0]} median {sizes[len(sizes) // 2]} "
           f"max {sizes[-1]}" if sizes else ""))
    if cams:
      lines.append("           cameras: " + ", ".join(
          f"{c}: {n}" for c, n in sorted(cams.items())))
    if recs:
      lines.append(f"           e.g. {recs[0]}")
  lines.append(f"  cameras (known) {counts['num_cameras']}, junk "
               f"{counts['num_junk_images']}, distractors "
               f"{counts['num_distractor_images']}, unknown camid "
               f"{counts['num_unknown_camid_images']}")
  return "\n".join(lines), counts


def inspect_dataset(name: str, root: str, *, split: int = 0,
                    split_seed: int = 0) -> str:
  """Reads a dataset and returns the text `inspect` prints."""
  ds = datasets.load_dataset(name, root, split=split, split_seed=split_seed)
  text, counts = describe(ds)
  return text + "\n" + json.dumps(counts, sort_keys=True)


_DATASET = flags.DEFINE_string("dataset", None,
                               f"One of {sorted(datasets.DATASETS)}.")
_ROOT = flags.DEFINE_string("root", None, "Dataset folder (or the one above).")
_SPLIT = flags.DEFINE_integer("split", 0, "Split index (random-split sets).")
_SPLIT_SEED = flags.DEFINE_integer("split_seed", 0, "Seed of the splits.")


def main(argv: list[str]) -> None:
  del argv
  try:
    text = inspect_dataset(_DATASET.value, _ROOT.value, split=_SPLIT.value,
                           split_seed=_SPLIT_SEED.value)
  except (FileNotFoundError, ValueError) as e:
    # A wrong folder or name is the user's input, not a bug: no traceback.
    sys.exit(f"error: {e}")
  print(text)


if __name__ == "__main__":
  flags.mark_flags_as_required(["dataset", "root"])
  app.run(main)
