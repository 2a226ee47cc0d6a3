"""The image files of a dataset, read up front: validation and a decoded cache.

`validate_images` decodes every file once (in parallel, with the pipelines'
decoder) so that a missing, corrupt or oversized file fails before training,
naming the file; `check_dataset_images` does it for a whole dataset.
`decoded_images` keeps a training set decoded and resized in memory.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from keras_reid.data import preprocessing
from keras_reid.data import records as records_lib

AUTOTUNE = tf.data.AUTOTUNE


class CorruptImageError(ValueError):
  """An image file could not be read or decoded."""


# The decoded, resized training images of the last pipeline that cached them:
# (paths, image size) -> uint8 [N, H, W, 3]. One entry: both fine-tuning steps
# of a stage (and a resumed one) rebuild their pipelines on the same images.
_DECODED: dict[tuple[tuple[str, ...], tuple[int, int]], np.ndarray] = {}


def decoded_images(paths: Sequence[str],
                   image_size: tuple[int, int]) -> np.ndarray:
  """Every image decoded and resized once, rounded to uint8, kept in memory.

  Args:
    paths: image files (already validated).
    image_size: (height, width).

  Returns:
    uint8 [len(paths), height, width, 3], the same for the same arguments
    (memoised for the last call).
  """
  key = (tuple(paths), (int(image_size[0]), int(image_size[1])))
  if key not in _DECODED:
    _DECODED.clear()
    ds = tf.data.Dataset.from_tensor_slices(list(paths)).map(
        lambda p: tf.cast(tf.round(preprocessing.load_image(p, key[1])),
                          tf.uint8),
        num_parallel_calls=AUTOTUNE, deterministic=True).batch(256)
    out = np.zeros((len(paths), key[1][0], key[1][1], 3), np.uint8)
    start = 0
    for chunk in ds.as_numpy_iterator():
      out[start:start + len(chunk)] = chunk
      start += len(chunk)
    _DECODED[key] = out
  return _DECODED[key]


# Paths already checked by `validate_images`, keyed with size and mtime so an
# edited file is checked again. Avoids decoding a dataset twice per process.
_VALID_CACHE: dict[tuple[str, int, float], bool] = {}


def _file_key(path: str) -> tuple[str, int, float] | None:
  try:
    st = os.stat(path)
  except OSError:
    return None
  return (path, st.st_size, st.st_mtime)


def _header_then_decode(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(header (height, width) int64 [2], decoded shape int32 [3]) of a file.

  The file is decoded only if its header is within
  preprocessing.MAX_IMAGE_PIXELS; otherwise the shape is [0, 0, 3].
  """
  contents = tf.io.read_file(path)
  size = preprocessing.image_header_size(contents)
  return size, tf.cond(
      size[0] * size[1] <= preprocessing.MAX_IMAGE_PIXELS,
      lambda: tf.shape(preprocessing.decode_image(contents)),
      lambda: tf.constant([0, 0, 3]))


def validate_images(paths: Sequence[str],
                    oversized: dict[int, tuple[int, int]] | None = None
                    ) -> list[int]:
  """Decodes every file once and returns the indices that fail.

  Runs as a parallel tf.data pass (the same decoder as the pipelines), so
  every quirk that would break training is found before training starts.
  A file whose header declares more than preprocessing.MAX_IMAGE_PIXELS
  pixels fails without being decoded.

  Args:
    paths: image file paths.
    oversized: if given, filled with {index: (height, width)} of the files
      that fail for their header's size.

  Returns:
    Sorted indices into `paths` of files that are missing, unreadable,
    undecodable or too large.
  """
  bad = []
  todo = []
  for i, p in enumerate(paths):
    key = _file_key(p)
    if key is None or (key[1] == 0):
      bad.append(i)
    elif key not in _VALID_CACHE:
      todo.append(i)
  if todo:
    todo_paths = [paths[i] for i in todo]
    ds = tf.data.Dataset.from_tensor_slices(
        (np.asarray(todo, np.int64), todo_paths))
    ds = ds.map(lambda i, p: (i, *_header_then_decode(p)),
                num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.ignore_errors().batch(1024)
    ok = set()
    for idx, header, shape in ds.as_numpy_iterator():
      # A decodable but empty image cannot be resized: treat it as corrupt.
      for i, h, s in zip(idx.tolist(), header.tolist(), shape.tolist()):
        if s[0] > 0 and s[1] > 0:
          ok.add(i)
        elif h[0] * h[1] > preprocessing.MAX_IMAGE_PIXELS and (
            oversized is not None):
          oversized[i] = (h[0], h[1])
    for i in todo:
      if i in ok:
        _VALID_CACHE[_file_key(paths[i])] = True
      else:
        bad.append(i)
  return sorted(bad)


def _oversized_note(index: int, oversized: dict[int, tuple[int, int]]) -> str:
  """The note naming the declared size of an image rejected for its size."""
  if index not in oversized:
    return ""
  height, width = oversized[index]
  return (f" (header declares {width}x{height} pixels, over the limit of "
          f"{preprocessing.MAX_IMAGE_PIXELS})")


def check_images(records: Sequence[records_lib.Record], skip_corrupt: bool
                  ) -> tuple[list[int], int]:
  """Checks the image files of `records` (one validate_images pass).

  Args:
    records: records whose files to check.
    skip_corrupt: leave the bad ones out (logged) instead of raising.

  Returns:
    (indices into `records` of the good files, number of bad files).

  Raises:
    CorruptImageError: naming the bad files, unless skip_corrupt.
  """
  oversized: dict[int, tuple[int, int]] = {}
  bad = validate_images([r.path for r in records], oversized)
  if bad and not skip_corrupt:
    shown = ", ".join(repr(records[i].path) + _oversized_note(i, oversized)
                      for i in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise CorruptImageError(
        f"{len(bad)} image file(s) are missing, cannot be decoded as "
        f"jpg/png/bmp/gif or are too large: {shown}{more}. Fix or remove "
        "them, or pass skip_corrupt=True (config data.skip_corrupt) to skip "
        "and count them.")
  if bad:
    logging.warning("Skipping %d corrupt image(s), e.g. %s", len(bad),
                    records[bad[0]].path)
  bad_set = set(bad)
  return [i for i in range(len(records)) if i not in bad_set], len(bad)


def check_dataset_images(dataset: records_lib.ReidDataset, *,
                         skip_corrupt: bool
                         ) -> tuple[records_lib.ReidDataset, dict]:
  """Checks every image of train, query and gallery in one pass, up front.

  Called before the first training step so that a corrupt query or gallery
  image is found before training, not after it.

  Args:
    dataset: the dataset a run will use.
    skip_corrupt: drop missing, undecodable and too large images (listed in
      the returned dict) instead of raising.

  Returns:
    (the dataset without the bad images, {"train": [paths], "query":
    [paths], "gallery": [paths], "num_skipped": total}; empty lists when
    nothing was skipped).

  Raises:
    CorruptImageError: naming each bad file and its split, unless
      skip_corrupt.
  """
  splits = {"train": dataset.train, "query": dataset.query,
            "gallery": dataset.gallery}
  flat = [(name, r) for name, recs in splits.items() for r in recs]
  oversized: dict[int, tuple[int, int]] = {}
  bad = set(validate_images([r.path for _, r in flat], oversized))
  skipped = {name: [] for name in splits}
  for i in sorted(bad):
    skipped[flat[i][0]].append(flat[i][1].path)
  if bad and not skip_corrupt:
    shown = []
    for i in sorted(bad)[:5]:
      name, r = flat[i]
      shown.append(f"{name}: {r.path!r}{_oversized_note(i, oversized)}")
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    counts = ", ".join(f"{len(v)} {k}" for k, v in skipped.items() if v)
    raise CorruptImageError(
        f"{dataset.name}: {len(bad)} image file(s) ({counts}) are missing, "
        f"cannot be decoded as jpg/png/bmp/gif or are too large: "
        f"{'; '.join(shown)}{more}. Fix or remove them, or pass "
        "skip_corrupt=True (config data.skip_corrupt) to skip them in "
        "training and evaluation (the evaluation report lists them).")
  skipped["num_skipped"] = len(bad)
  if not bad:
    return dataset, skipped
  logging.warning("%s: skipping %d corrupt image(s) (%s), e.g. %s",
                  dataset.name, len(bad),
                  ", ".join(f"{len(skipped[k])} {k}" for k in splits),
                  flat[min(bad)][1].path)
  kept = {}
  for name, recs in splits.items():
    drop = set(skipped[name])
    kept[name] = [r for r in recs if r.path not in drop]
  return dataclasses.replace(dataset, **kept), skipped

