"""Embedding shards: a gallery's images embedded elsewhere, as Parquet files.

The batch embedding pipeline (keras_reid/gallery/batch_embedding.py, Apache
Beam) writes them; `python -m keras_reid.gallery build --embeddings=GLOB`
indexes them without embedding again. Each shard is one Parquet file with
the columns

    id         int64, nullable   the image's row in its manifest CSV (0 =
                                 first data row); null for a glob's images
    path       string            the image file (the gallery's key)
    pid        int64, nullable   identity, null when unknown
    camid      int64, nullable   camera, null when unknown
    time       string, nullable  capture time as given, null when unknown
    embedding  fixed_size_list<float32>[D], L2-normalised

and, in its schema metadata, what embedded them: `keras_reid.model_id`
(keras_reid/gallery/embedding_model.py's id, e.g. "saved_model 1
sha256:..."), `keras_reid.model_source` (the SavedModel folder) and
`keras_reid.dimension` (D). Every shard of one output names the same model.

`read_shards(pattern)` puts the rows back in listing order: by id (the
manifest's order), then by path (a folder's order, as
`ingestion.list_images` sorts it), so an index built from shards equals one
built from the same images directly.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from keras_reid.gallery import ingestion

MODEL_ID_KEY = b"keras_reid.model_id"
MODEL_SOURCE_KEY = b"keras_reid.model_source"
DIMENSION_KEY = b"keras_reid.dimension"


def schema(dimension: int, model_id: str, model_source: str) -> pa.Schema:
  """The shards' Parquet schema for D = `dimension`, naming the model."""
  return pa.schema(
      [("id", pa.int64()), ("path", pa.string()), ("pid", pa.int64()),
       ("camid", pa.int64()), ("time", pa.string()),
       ("embedding", pa.list_(pa.float32(), int(dimension)))],
      metadata={MODEL_ID_KEY: model_id.encode(),
                MODEL_SOURCE_KEY: model_source.encode(),
                DIMENSION_KEY: str(int(dimension)).encode()})


def table(shard_schema: pa.Schema, ids, images: ingestion.ImageList,
          embeddings: np.ndarray) -> pa.Table:
  """One shard's rows.

  Args:
    shard_schema: `schema(...)`.
    ids: [N] ints or Nones (the manifest rows).
    images: the N images' paths and metadata.
    embeddings: float32 [N, D].
  """
  d = shard_schema.field("embedding").type.list_size
  vectors = np.ascontiguousarray(embeddings, np.float32).reshape(-1, d)
  return pa.table({
      "id": pa.array(list(ids), pa.int64()),
      "path": pa.array(images.paths, pa.string()),
      "pid": pa.array(images.pids, pa.int64()),
      "camid": pa.array(images.camids, pa.int64()),
      "time": pa.array(images.times, pa.string()),
      "embedding": pa.FixedSizeListArray.from_arrays(
          pa.array(vectors.reshape(-1)), d),
  }, schema=shard_schema)


@dataclasses.dataclass(frozen=True)
class Shards:
  """What `read_shards` read.

  Attributes:
    images: the embedded images, in listing order.
    embeddings: float32 [len(images), D].
    model_id, model_source: the model that embedded them.
    files: the shard files read.
  """
  images: ingestion.ImageList
  embeddings: np.ndarray
  model_id: str
  model_source: str
  files: list[str]


def _metadata(path: str, meta: Optional[dict], key: bytes) -> str:
  if not meta or key not in meta:
    raise ValueError(
        f"embedding shard {path!r} has no {key.decode()!r} in its Parquet "
        "schema metadata: it was not written by python -m "
        "keras_reid.gallery.embed_beam. Embed the images again with it.")
  return meta[key].decode()


def read_shards(pattern: str) -> Shards:
  """Reads every shard matching the glob `pattern`.

  Raises:
    ValueError: no file matches; a file is not a readable Parquet shard
      (truncated, other columns); shards of different models or sizes; a
      path twice; no rows at all. Each names the file(s).
  """
  files = sorted(glob.glob(os.path.expanduser(pattern)))
  if not files:
    raise ValueError(f"--embeddings {pattern!r} matches no file; expected "
                     "the shards of python -m keras_reid.gallery.embed_beam "
                     "--output=PREFIX, e.g. 'PREFIX-*.parquet'.")
  tables, first = [], None
  for path in files:
    try:
      shard = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
      raise ValueError(f"embedding shard {path!r} cannot be read as Parquet "
                       f"({e}); it may be truncated: write it again.") from e
    meta = shard.schema.metadata
    found = (_metadata(path, meta, MODEL_ID_KEY),
             _metadata(path, meta, MODEL_SOURCE_KEY),
             int(_metadata(path, meta, DIMENSION_KEY)))
    expected = schema(found[2], found[0], found[1])
    if not shard.schema.equals(expected, check_metadata=False):
      raise ValueError(f"embedding shard {path!r} has columns {shard.schema}; "
                       f"expected {expected.remove_metadata()}.")
    if first is None:
      first = (path, found)
    elif found != first[1]:
      raise ValueError(
          f"embedding shards of different models: {first[0]!r} holds model "
          f"{first[1][0]!r} (D={first[1][2]}), {path!r} model {found[0]!r} "
          f"(D={found[2]}). Index the shards of one model at a time.")
    tables.append(shard.replace_schema_metadata(None))
  rows = pa.concat_tables(tables)
  model_id, model_source, dimension = first[1]
  if not rows.num_rows:
    raise ValueError(f"the {len(files)} shard(s) of {pattern!r} hold no "
                     "embedding (every image was unreadable?): nothing to "
                     "index.")
  rows = rows.sort_by([("id", "ascending"), ("path", "ascending")])
  paths = rows.column("path").to_pylist()
  if len(set(paths)) != len(paths):
    counts = pc.value_counts(rows.column("path"))
    dup = next(v["values"] for v in counts.to_pylist() if v["counts"] > 1)
    raise ValueError(f"{dup!r} is in the shards of {pattern!r} twice: "
                     "index one pipeline's output (or remove the older "
                     "shards).")
  embeddings = rows.column("embedding").combine_chunks().flatten().to_numpy(
      zero_copy_only=False).reshape(-1, dimension).astype(np.float32)
  images = ingestion.ImageList(
      paths, rows.column("pid").to_pylist(), rows.column("camid").to_pylist(),
      rows.column("time").to_pylist())
  return Shards(images, embeddings, model_id, model_source, files)
