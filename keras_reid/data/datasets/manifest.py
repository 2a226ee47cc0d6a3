"""A user's own data: a CSV manifest or a folder-per-identity tree.

Identities may be integers or names; names are numbered 1..N (`_pid_map`),
and the mapping comes back as the dataset's pid_names.
"""

from __future__ import annotations

import csv
import os
from typing import Iterable

from absl import logging

from keras_reid.data import records as records_lib
from keras_reid.data.datasets import common
from keras_reid.data.records import Record
from keras_reid.data.records import ReidDataset

_SPLITS = ("train", "query", "gallery")


def _int_or_none(name: str) -> int | None:
  try:
    return int(name)
  except ValueError:
    return None


def _pid_map(names: Iterable[str], source: str = "manifest"
             ) -> tuple[dict[str, int], dict[int, str]]:
  """Integer pids for a manifest's identities.

  All-integer pids keep their values. Otherwise every identity is a name,
  numbered 1..N in sorted order, except "-1" (junk) and "0" (distractor),
  which keep their meaning (records.JUNK_PID, records.DISTRACTOR_PID) and
  their value. Integer-like names mixed with other names (e.g. "7" next to
  "alice") are numbered like names: logged as a warning naming examples,
  since such a pid does not keep its value.

  Args:
    names: the pid strings (stripped).
    source: the manifest, for the warning.

  Returns:
    (name -> int pid, int pid -> name for the numbered names; empty when all
    pids are integers).
  """
  names = sorted(set(names))
  ints = {n: _int_or_none(n) for n in names}
  if all(v is not None for v in ints.values()):
    return {n: v for n, v in ints.items()}, {}
  reserved = (records_lib.JUNK_PID, records_lib.DISTRACTOR_PID)
  to_int = {n: v for n, v in ints.items() if v in reserved}
  named = [n for n in names if n not in to_int]
  mixed = [n for n in named if ints[n] is not None]
  if mixed:
    strings = [n for n in named if ints[n] is None]
    logging.warning(
        "%s: pids mix integers (%d, e.g. %s) and names (%d, e.g. %s); every "
        "pid other than -1 (junk) and 0 (distractor) is treated as a name and "
        "numbered 1..%d in sorted order, so the integer ones do not keep "
        "their values. Use only integers or only names to avoid this.",
        source, len(mixed), mixed[:3], len(strings), strings[:3], len(named))
  to_int.update({n: i + 1 for i, n in enumerate(named)})
  return to_int, {to_int[n]: n for n in named}


def manifest(root: str, *, split: int = 0, split_seed: int = 0
             ) -> ReidDataset:
  """A user's own data: a CSV manifest or a folder-per-identity tree.

  CSV (`root` is the file, or a folder holding `manifest.csv`): columns
  `path,pid,camid` and optionally `split` (train / query / gallery; without
  it everything is training data). Paths are relative to the CSV; pid is an
  integer or a name: names are numbered 1..N (the mapping is the dataset's
  pid_names) while -1 (junk, left out of training) and 0 (distractor) keep
  their meaning either way; camid an integer, -1 if unknown. Other columns
  are ignored.

  Tree (a folder without manifest.csv): `ROOT/<identity>/<images>`, or
  `ROOT/{train,query,gallery}/<identity>/<images>`; cameras unknown.
  """
  del split, split_seed
  root = os.path.abspath(os.path.expanduser(root))
  csv_path = root if os.path.isfile(root) else os.path.join(root,
                                                            "manifest.csv")
  if os.path.isfile(csv_path):
    return _read_csv(csv_path)
  if os.path.isdir(root):
    return _read_tree(root)
  raise FileNotFoundError(
      f"manifest: {root!r} is neither a CSV file nor a folder. Expected a "
      "CSV with columns path,pid,camid[,split], a folder holding "
      "manifest.csv, or a folder with one subfolder of images per identity.")


def _read_csv(csv_path: str) -> ReidDataset:
  base = os.path.dirname(csv_path)
  rows = []
  with open(csv_path, newline="") as f:
    reader = csv.DictReader(f)
    missing = {"path", "pid", "camid"} - set(reader.fieldnames or [])
    if missing:
      raise ValueError(
          f"manifest {csv_path!r} lacks column(s) {sorted(missing)}; "
          "expected a header `path,pid,camid[,split]`.")
    for n, row in enumerate(reader, 2):
      try:
        camid = int(row["camid"]) if row["camid"].strip() else -1
      except ValueError as e:
        raise ValueError(f"manifest {csv_path!r} line {n}: camid "
                         f"{row['camid']!r} is not an integer (-1 = "
                         "unknown).") from e
      sp = (row.get("split") or "train").strip().lower()
      if sp not in _SPLITS:
        raise ValueError(f"manifest {csv_path!r} line {n}: split {sp!r} is "
                         f"not one of {list(_SPLITS)}.")
      rows.append((os.path.join(base, row["path"].strip()),
                   row["pid"].strip(), camid, sp))
  if not rows:
    raise ValueError(f"manifest {csv_path!r} lists no images.")
  to_int, names = _pid_map((r[1] for r in rows), csv_path)
  out = {s: [] for s in _SPLITS}
  junk_train = 0
  for path, pid, camid, sp in rows:
    if sp == "train" and to_int[pid] == records_lib.JUNK_PID:
      junk_train += 1  # a junk image cannot be a training class
      continue
    out[sp].append(Record(path, to_int[pid], camid))
  if junk_train:
    logging.warning("%s: %d training image(s) with the junk pid -1 left out "
                    "of training.", csv_path, junk_train)
  if not (out["query"] or out["gallery"]):
    common.check_nonempty("manifest", train=out["train"])
  return ReidDataset("manifest", out["train"], out["query"], out["gallery"],
                     names)


def _read_tree(root: str) -> ReidDataset:
  split_dirs = [s for s in _SPLITS if os.path.isdir(os.path.join(root, s))]
  tops = split_dirs if split_dirs else [""]
  found = []
  for top in tops:
    base = os.path.join(root, top)
    for ident in sorted(os.listdir(base)):
      d = os.path.join(base, ident)
      if os.path.isdir(d):
        for p in common.list_images(d):
          found.append((p, ident, top or "train"))
  if not found:
    raise ValueError(
        f"manifest: no images found under {root!r}; expected "
        "ROOT/<identity>/<image files> or ROOT/{train,query,gallery}/"
        "<identity>/<image files>, or a manifest.csv.")
  to_int, names = _pid_map((f[1] for f in found), root)
  out = {s: [] for s in _SPLITS}
  for path, ident, sp in found:
    out[sp].append(Record(path, to_int[ident], records_lib.UNKNOWN_CAMID))
  return ReidDataset("manifest", out["train"], out["query"], out["gallery"],
                     names)
