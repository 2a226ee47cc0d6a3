"""Images into a gallery: listing them, embedding them resumably.

`list_images(source)` reads a folder (every image file below it, sorted) or
a CSV manifest (`path` plus optional `pid`, `camid`, `time` columns; paths
relative to the CSV, like the dataset manifest of
`data/datasets/manifest.py`; an empty cell or -1 pid / camid = unknown).

`embed_resumably(embed_fn, images, pending_dir, model_id)` embeds them in
chunks of `chunk_size` images, each written atomically to
`pending_dir/chunk-<i>.npz` as it finishes; a rerun of the same images with
the same model loads the finished chunks and embeds the rest. Each chunk's
files are decoded first (`data/image_files.validate_images`, the training
pipeline's decoder); the missing, corrupt or oversized ones are skipped and
listed, never embedded.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import sys
from typing import Callable, Optional, Sequence

import numpy as np

from keras_reid import progress as progress_lib
from keras_reid import runs
from keras_reid.data.datasets import common

# paths [n] -> embeddings [n, D] float32 (L2-normalised).
EmbedFn = Callable[[Sequence[str]], np.ndarray]
PLAN_FILE = "plan.json"


@dataclasses.dataclass(frozen=True)
class ImageList:
  """Images to index, in order; None where a value is unknown.

  Attributes:
    paths: absolute, normalised image paths (the gallery's keys).
    pids, camids: identities and cameras (ints) or None each.
    times: capture times as given (strings) or None each.
  """
  paths: list[str]
  pids: list[Optional[int]]
  camids: list[Optional[int]]
  times: list[Optional[str]]

  def __len__(self) -> int:
    return len(self.paths)

  def select(self, keep: Sequence[int]) -> "ImageList":
    return ImageList(*([getattr(self, f.name)[i] for i in keep]
                       for f in dataclasses.fields(self)))


def _optional_int(csv_path: str, line: int, column: str, text: str
                  ) -> Optional[int]:
  text = (text or "").strip()
  if not text:
    return None
  try:
    value = int(text)
  except ValueError:
    raise ValueError(
        f"manifest {csv_path!r} line {line}: {column} {text!r} is not an "
        "integer (leave the cell empty, or -1, when unknown).") from None
  return None if value == -1 else value


def list_images(source: str) -> ImageList:
  """The images of a folder (recursively) or of a CSV manifest.

  Raises:
    ValueError: a missing source, a CSV without a `path` column or with a
      bad pid / camid, or no image at all (each naming the file).
  """
  source = os.path.abspath(os.path.expanduser(source))
  if os.path.isdir(source):
    paths = sorted(
        os.path.join(folder, name) for folder, _, names in os.walk(source)
        for name in names if name.lower().endswith(common.IMAGE_EXTENSIONS))
    if not paths:
      raise ValueError(f"{source!r} holds no image files (looked for "
                       f"{', '.join(common.IMAGE_EXTENSIONS)} below it).")
    n = len(paths)
    return ImageList(paths, [None] * n, [None] * n, [None] * n)
  if not os.path.isfile(source):
    raise ValueError(f"--images {source!r} does not exist: expected a folder "
                     "of images or a CSV manifest (path[,pid,camid,time]).")
  base = os.path.dirname(source)
  out = ImageList([], [], [], [])
  with open(source, newline="") as f:
    reader = csv.DictReader(f)
    if "path" not in (reader.fieldnames or []):
      raise ValueError(
          f"manifest {source!r} has no `path` column (header "
          f"{reader.fieldnames}); expected a header path[,pid,camid,time].")
    for line, row in enumerate(reader, start=2):
      path = (row["path"] or "").strip()
      if not path:
        raise ValueError(f"manifest {source!r} line {line}: empty path.")
      out.paths.append(os.path.normpath(os.path.join(base, path)))
      out.pids.append(_optional_int(source, line, "pid", row.get("pid")))
      out.camids.append(_optional_int(source, line, "camid",
                                      row.get("camid")))
      out.times.append((row.get("time") or "").strip() or None)
  if not out.paths:
    raise ValueError(f"manifest {source!r} lists no images.")
  if len(set(out.paths)) != len(out.paths):
    seen = set()
    dup = next(p for p in out.paths if p in seen or seen.add(p))
    raise ValueError(f"manifest {source!r} lists {dup!r} twice.")
  return out


def _plan(images: ImageList, model_id: str, chunk_size: int) -> dict:
  digest = hashlib.sha256("\n".join(images.paths).encode()).hexdigest()
  return {"model_id": model_id, "num_images": len(images),
          "paths_sha256": digest, "chunk_size": chunk_size}


def _write_npz(path: str, **arrays) -> None:
  tmp = f"{path}.tmp{os.getpid()}.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class Embedded:
  """What `embed_resumably` produced.

  Attributes:
    images: the images that were embedded (corrupt ones left out).
    embeddings: [len(images), D] float32.
    skipped: paths of the images skipped as missing or undecodable.
  """
  images: ImageList
  embeddings: np.ndarray
  skipped: list[str]


def start_pending(pending_dir: str, images: ImageList, model_id: str,
                  chunk_size: int) -> None:
  """Records what `pending_dir`'s chunks will hold, or checks that it is the
  build already there (before any model is loaded).

  Raises:
    ValueError: pending_dir holds a build of other images, another model or
      another chunk size.
  """
  plan = _plan(images, model_id, chunk_size)
  plan_path = os.path.join(pending_dir, PLAN_FILE)
  if not os.path.exists(plan_path):
    runs.write_json(plan_path, plan)
    return
  with open(plan_path) as f:
    old = json.load(f)
  if old != plan:
    raise ValueError(
        f"{pending_dir} holds an unfinished build of other images or "
        f"another model ({old.get('num_images')} images, model "
        f"{old.get('model_id')!r}, chunk size {old.get('chunk_size')}; now "
        f"{len(images)} images, model {model_id!r}, chunk size "
        f"{chunk_size}). Rerun that command to finish it, or delete "
        f"{pending_dir} to start over.")


def embed_resumably(embed_fn: EmbedFn, images: ImageList, pending_dir: str,
                    model_id: str, *, chunk_size: int = 1024,
                    validate: Optional[Callable[[Sequence[str]], list[int]]]
                    = None, stream=None) -> Embedded:
  """Embeds `images` chunk by chunk, keeping each chunk on disk.

  Args:
    embed_fn: paths -> [n, D] float32 embeddings.
    images: what to embed.
    pending_dir: where the chunks are kept until the caller has saved the
      index (then it calls `discard_pending`).
    model_id: the model embed_fn runs; a pending build of other images, of
      another model or another chunk size is refused.
    chunk_size: images per chunk (what a kill loses at most).
    validate: paths -> indices of the files that cannot be decoded; default
      `data.image_files.validate_images`.
    stream: progress lines (default stderr).

  Raises:
    ValueError: pending_dir holds another build's chunks, or every image
      is corrupt.
  """
  if validate is None:
    from keras_reid.data import image_files  # TensorFlow: only when used
    validate = image_files.validate_images
  start_pending(pending_dir, images, model_id, chunk_size)
  n = len(images)
  starts = range(0, n, chunk_size)
  done = sum(os.path.exists(_chunk_path(pending_dir, i))
             for i in range(len(starts)))
  bar = progress_lib.make_progress(
      n, "images", rate_unit="img", label="embedding gallery",
      initial=min(n, done * chunk_size), stream=stream or sys.stderr)
  embeddings, kept, skipped = [], [], []
  for i, start in enumerate(starts):
    path = _chunk_path(pending_dir, i)
    paths = images.paths[start:start + chunk_size]
    if not os.path.exists(path):
      bad = set(validate(paths))
      good = [j for j in range(len(paths)) if j not in bad]
      vectors = np.asarray(embed_fn([paths[j] for j in good]) if good
                           else np.zeros((0, 0)), np.float32)
      if len(vectors) != len(good):
        raise ValueError(f"the model returned {len(vectors)} embeddings for "
                         f"{len(good)} images.")
      _write_npz(path, embeddings=vectors, good=np.asarray(good, np.int64))
    with np.load(path) as chunk:
      vectors, good = chunk["embeddings"], chunk["good"]
    bad = sorted(set(range(len(paths))) - set(good.tolist()))
    skipped.extend(paths[j] for j in bad)
    kept.extend(start + j for j in good.tolist())
    if len(vectors):
      embeddings.append(vectors)
    bar.update(min(n, start + chunk_size))
  if not embeddings:
    raise ValueError(f"none of the {n} images could be read (e.g. "
                     f"{skipped[0]!r}): nothing to index.")
  return Embedded(images.select(kept), np.concatenate(embeddings), skipped)


def _chunk_path(pending_dir: str, i: int) -> str:
  return os.path.join(pending_dir, f"chunk-{i:06d}.npz")


def discard_pending(pending_dir: str) -> None:
  """Deletes the chunks once the index that holds them is saved."""
  shutil.rmtree(pending_dir, ignore_errors=True)
