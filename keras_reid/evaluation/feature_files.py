"""Feature files: the six arrays an evaluation scores, read, checked, scored.

A features file is an .npz with `FEATURE_KEYS` (from any model; see
`python -m keras_reid.evaluate --features`). This module never imports
TensorFlow (tests/tf_free_test.py).
"""

from __future__ import annotations

import os
import time
import zipfile
from typing import Optional

import numpy as np

from keras_reid.evaluation import protocols
from keras_reid.evaluation import ranking
from keras_reid.evaluation import rerank as rerank_lib

def evaluate_arrays(arrays: dict, *, max_rank: int = 50,
                    multi_query: bool = False, rerank: bool = False,
                    rerank_options: Optional[dict] = None,
                    cuhk03_metric: bool = False) -> dict:
  """Evaluates a dict with the six .npz keys (see `FEATURE_KEYS`).

  cuhk03_metric: CMC of CUHK03's classic protocol (one random gallery image
  per identity, `protocols.evaluate_cuhk03`); not with rerank.
  """
  t0 = time.perf_counter()
  args = [arrays[k] for k in FEATURE_KEYS]
  if multi_query:
    args[0] = protocols.pool_multi_query(args[0], args[2], args[4])
  if cuhk03_metric and rerank:
    raise ValueError("The CUHK03 single-gallery-shot metric (cuhk03_metric) "
                     "ranks Euclidean distances; it does not combine with "
                     "re-ranking. Drop one of --cuhk03_metric / --rerank.")
  if cuhk03_metric:
    result = protocols.evaluate_cuhk03(*args, max_rank=max_rank)
  elif rerank:
    result = rerank_lib.evaluate_reranked(*args, max_rank=max_rank,
                                          **(rerank_options or {}))
  else:
    result = ranking.evaluate_features(*args, max_rank=max_rank)
  result["protocol"] = ("multi_query" if multi_query else "single_query") + (
      "+rerank" if rerank else "") + (
          "+cuhk03_single_gallery_shot" if cuhk03_metric else "")
  result["rank_seconds"] = time.perf_counter() - t0
  return result


FEATURE_KEYS = ("query_features", "gallery_features", "query_pids",
                "gallery_pids", "query_camids", "gallery_camids")


def _size_text(num_bytes: int) -> str:
  """1536 -> "1.5 KiB"; for messages."""
  for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
    if num_bytes < 1024 or unit == "TiB":
      return (f"{num_bytes} bytes" if unit == "bytes" else
              f"{num_bytes:.1f} {unit}")
    num_bytes /= 1024
  raise AssertionError("unreachable")


def _check_member(archive, path: str, key: str) -> None:
  """Refuses an array of the .npz before NumPy allocates it.

  Its .npy header is read first: an object dtype (np.load would answer with
  an allow_pickle hint) or a shape whose bytes the archive does not hold
  (a damaged or hostile header declaring terabytes, which np.load would try
  to allocate) is a ValueError naming the file and the array.
  """
  try:
    info = archive.zip.getinfo(f"{key}.npy")
    with archive.zip.open(info) as f:
      version = np.lib.format.read_magic(f)
      read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                     else np.lib.format.read_array_header_2_0)
      shape, _, dtype = read_header(f)
      header_bytes = f.tell()
  except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path}: {key} is not a readable .npy array ({e}); "
                     "write the file with np.savez.") from None
  if dtype.hasobject:
    raise ValueError(
        f"{path}: {key} holds Python objects (dtype {dtype}), which are not "
        "loaded (they would need pickle); store features as float32 and ids "
        "as int64.")
  declared = dtype.itemsize
  for size in shape:
    declared *= int(size)
  held = info.file_size - header_bytes
  if declared > held:
    raise ValueError(
        f"{path}: {key} declares shape {tuple(shape)} of {dtype} "
        f"({_size_text(declared)}) but the archive holds "
        f"{_size_text(max(held, 0))} for it: the file is damaged or was not "
        "written by np.savez; write it again.")


def load_feature_file(path: str) -> dict:
  """Reads and checks a features .npz (keys `FEATURE_KEYS`).

  Raises:
    FileNotFoundError: no such file.
    ValueError: not an .npz archive, missing / inconsistent arrays, an
      array whose header declares more bytes than the archive holds (refused
      before allocating) or holding Python objects, or values no evaluation
      takes (non-finite features, ids that are not
      integers in int64 range: `ranking.check_features`, `check_ids`);
      the message starts with the path.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"features file {path!r} does not exist.")
  if not zipfile.is_zipfile(path):
    # np.load would try a pickle and answer with an allow_pickle hint.
    raise ValueError(
        f"{path} is not an .npz file (a zip archive of named arrays); write "
        "the features with np.savez(path, query_features=..., "
        "gallery_features=..., query_pids=..., gallery_pids=..., "
        "query_camids=..., gallery_camids=...).")
  with np.load(path, allow_pickle=False) as data:
    missing = [k for k in FEATURE_KEYS if k not in data.files]
    if missing:
      raise ValueError(
          f"{path} lacks the keys {missing}; a features file needs "
          f"{list(FEATURE_KEYS)} (found {sorted(data.files)}). Write it with "
          "np.savez(path, query_features=..., gallery_features=..., ...).")
    for key in FEATURE_KEYS:
      _check_member(data, path, key)
    arrays = {k: np.asarray(data[k]) for k in FEATURE_KEYS}
  for side in ("query", "gallery"):
    feats = arrays[f"{side}_features"]
    if feats.ndim != 2:
      raise ValueError(f"{path}: {side}_features must be [N, D], got shape "
                       f"{feats.shape}.")
    for key in (f"{side}_pids", f"{side}_camids"):
      if arrays[key].shape != (feats.shape[0],):
        raise ValueError(
            f"{path}: {key} has shape {arrays[key].shape}, expected "
            f"({feats.shape[0]},) to match {side}_features {feats.shape}.")
  if arrays["query_features"].shape[1] != arrays["gallery_features"].shape[1]:
    raise ValueError(
        f"{path}: query_features dimension "
        f"{arrays['query_features'].shape[1]} != gallery_features dimension "
        f"{arrays['gallery_features'].shape[1]}.")
  # The values too, so that an error names the file (one of several splits).
  try:
    for side in ("query", "gallery"):
      ranking.check_features(f"{side}_features", arrays[f"{side}_features"])
      for key in (f"{side}_pids", f"{side}_camids"):
        ranking.check_ids(key, arrays[key], arrays[key].shape[0])
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None
  return arrays
