"""Readable summaries of a dataset: what `python -m keras_reid.data.inspect` prints."""

from __future__ import annotations

import collections
import json

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
