"""Readable summaries of a dataset: what `python -m keras_reid.data.inspect` prints."""

from __future__ import annotations

import collections
import json

from keras_reid import runs
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
  if ds.pid_names:
    counts["num_named_pids"] = len(ds.pid_names)
    lines.append(pid_names_summary(ds.pid_names))
  return "\n".join(lines), counts


def pid_names_summary(pid_names: dict[int, str]) -> str:
  """One line on how a manifest's pid names were numbered."""
  items = sorted(pid_names.items())
  shown = ", ".join(f"{name!r} -> {pid}" for pid, name in items[:3])
  line = (f"  pids: {len(items)} names numbered 1..{len(items)} in sorted "
          f"order ({shown}, ...); -1 junk and 0 distractor kept")
  int_like = [name for _, name in items if name.lstrip("+-").isdigit()]
  if int_like:
    line += (f"; {len(int_like)} integer-like name(s) numbered as names, "
             f"e.g. {int_like[:3]}")
  return line


def write_pid_names(ds: records_lib.ReidDataset, path: str) -> None:
  """Writes the name of every numbered pid as JSON {"pid": "name"}, atomically."""
  runs.write_json(path, {str(k): v for k, v in sorted(ds.pid_names.items())})


def inspect_dataset(name: str, root: str, *, split: int = 0,
                    split_seed: int = 0, pid_names_json: str = "",
                    **options) -> str:
  """Reads a dataset and returns the text `inspect` prints.

  Args:
    name, root, split, split_seed, **options: as datasets.load_dataset.
    pid_names_json: if set and the dataset numbered string pids, the full
      pid -> name mapping is written there (write_pid_names).
  """
  ds = datasets.load_dataset(name, root, split=split, split_seed=split_seed,
                             **options)
  text, counts = describe(ds)
  if pid_names_json and ds.pid_names:
    write_pid_names(ds, pid_names_json)
    text += f"\n  pid -> name mapping written to {pid_names_json}"
  return text + "\n" + json.dumps(counts, sort_keys=True)
