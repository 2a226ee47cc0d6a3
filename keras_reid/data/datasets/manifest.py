"""A user's own data: a CSV manifest or a folder-per-identity tree.

Identities may be integers or names; names are numbered 1..N (`_pid_map`),
and the mapping comes back as the dataset's pid_names.
"""

from __future__ import annotations

import os
from typing import Iterable

from absl import logging

from keras_reid.data import records as records_lib
from keras_reid.data.datasets import common
from keras_reid.data.datasets import manifest_csv
from keras_reid.data.records import Record
from keras_reid.data.records import ReidDataset

_SPLITS = manifest_csv.SPLITS


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
  are ignored. The file is UTF-8 (a BOM is fine); what spreadsheets get
  wrong (other encodings, short rows, empty pids, one image on rows that
  disagree) is an error naming the line, repeated identical rows a counted
  warning (`manifest_csv`). Query images need gallery images (a test split
  with only one of them is an error); queries the evaluator will skip are a
  counted warning.

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
  rows = manifest_csv.read_rows(csv_path)
  if not rows:
    raise ValueError(f"manifest {csv_path!r} lists no images.")
  to_int, names = _pid_map((r.pid for r in rows), csv_path)
  out = {s: [] for s in _SPLITS}
  where = {s: [] for s in _SPLITS}
  junk_train = 0
  for row in rows:
    if row.split == "train" and to_int[row.pid] == records_lib.JUNK_PID:
      junk_train += 1  # a junk image cannot be a training class
      continue
    out[row.split].append(Record(row.path, to_int[row.pid], row.camid))
    where[row.split].append(f"line {row.line}")
  if junk_train:
    logging.warning("%s: %d training image(s) with the junk pid -1 left out "
                    "of training.", csv_path, junk_train)
  if not (out["query"] or out["gallery"]):
    common.check_nonempty("manifest", train=out["train"])
  _check_evaluable(f"manifest {csv_path!r}", out["query"], out["gallery"],
                   where["query"], names)
  return ReidDataset("manifest", out["train"], out["query"], out["gallery"],
                     names)


def _check_evaluable(source: str, query: list[Record], gallery: list[Record],
                     query_where: list[str], names: dict[int, str]) -> None:
  """Refuses a test split without its other half; warns of skipped queries.

  Query images without gallery images (or the reverse) would be trained on
  and never evaluated: an error. The evaluator's rule (evaluation/ranking.py)
  for the rest: a query's true matches are the gallery images of its pid,
  junk (-1) never, and not those of its own camera when that is known; a
  query without one is skipped and counted, and a split skipping every
  query is refused (NoValidQueryError, by training before its first step).
  The queries it will skip are a counted warning here, naming their lines.

  Args:
    source: the manifest, for messages.
    query, gallery: the test records.
    query_where: per query record, where it is listed ("line 7", a path).
    names: int pid -> name for a manifest with named identities.

  Raises:
    ValueError: query images without any gallery image, or the reverse.
  """
  if bool(query) != bool(gallery):
    has, lacks = ("query", "gallery") if query else ("gallery", "query")
    raise ValueError(
        f"{source}: {len(query or gallery)} {has} image(s) and no {lacks} "
        f"image; a run would train and never evaluate. Add the {lacks} "
        f"images (split={lacks}), or mark the {has} rows as train.")
  cameras: dict[int, set[int]] = {}  # pid -> gallery cameras
  for r in gallery:
    cameras.setdefault(r.pid, set()).add(r.camid)
  skipped = [
      i for i, q in enumerate(query)
      if q.pid == records_lib.JUNK_PID or not (cameras.get(q.pid, set()) - (
          {q.camid} if q.camid != records_lib.UNKNOWN_CAMID else set()))]
  if not skipped:
    return
  examples = ", ".join(
      f"{query_where[i]} pid {names.get(query[i].pid, query[i].pid)!r}"
      for i in skipped[:3])
  why = (f"{len(skipped)} of {len(query)} query image(s) (e.g. {examples}) "
         "have no gallery image of their identity other than from their own "
         "camera (or are junk, pid -1)")
  if len(skipped) == len(query):
    # The evaluator's NoValidQueryError refuses it (training before its first
    # step); the lines to fix are named here.
    logging.warning(
        "%s: %s, so no query can be scored: training and evaluation will "
        "refuse this test split. Add gallery images of the query identities "
        "(from another camera, or with camid -1), or fix the query pids and "
        "camids.", source, why)
  else:
    logging.warning("%s: %s; the evaluation skips them and scores the other "
                    "%d.", source, why, len(query) - len(skipped))


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
  _check_evaluable(f"manifest folder {root!r}", out["query"], out["gallery"],
                   [r.path for r in out["query"]], names)
  return ReidDataset("manifest", out["train"], out["query"], out["gallery"],
                     names)
