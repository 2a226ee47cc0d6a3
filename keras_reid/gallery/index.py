"""The gallery index: embeddings, their metadata and a FAISS index, on disk.

An index directory holds three files:

    manifest.json        format version, model id, dimension, index type and
                         parameters, counts, and the size and SHA-256 of:
    table-<g>.parquet    one row per image: row_id int64, path string, pid
                         int64 (null if unknown), camid int64 (null if
                         unknown), time string (null if unknown), embedding
                         fixed_size_list<float32>[D] (L2-normalised)
    index-<g>.faiss      the FAISS index over the embeddings, ids = row_id

`<g>` is the generation: a save writes the next generation's table and index,
then replaces manifest.json atomically (`runs.write_json`), then deletes the
older generation. A reader therefore sees a whole old or a whole new index,
never a mix; a file whose size or SHA-256 differs from the manifest's
(truncated, overwritten) or a manifest of another format version is refused
with `IndexFileError` before anything is used.

Distances are Euclidean distances between L2-normalised embeddings (in
[0, 2]), the same quantity the evaluation ranks by and its verification
threshold is expressed in (`evaluation/report.py`, "sir_distance"). Index
types (`INDEX_TYPES`):

  * "flat": exact inner product (IndexFlatIP); its ranking is the
    evaluator's (`evaluation/ranking.py::features_top_k`).
  * "ivfpq": inverted lists over `nlist` k-means cells, product-quantised
    codes of `pq_m` sub-vectors of `pq_bits` bits; `nprobe` cells visited
    per query, and `refine` x k candidates re-ranked with the exact stored
    embeddings. Trained on the embeddings of the first `add`.
  * "hnsw": HNSW graph (`hnsw_m` links per node, `ef_construction`,
    `ef_search`); FAISS cannot delete from it, so `remove` rebuilds it.

Whatever the type, the k results of a search carry exact distances
recomputed from the stored embeddings, ordered by (distance, row).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
from typing import Optional, Sequence

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from keras_reid import runs

FORMAT = "keras_reid.gallery"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
INDEX_TYPES = ("flat", "ivfpq", "hnsw")
# Rows a norm may differ from 1 by before the embeddings are refused as not
# L2-normalised (float32 round-off of a normalised vector is ~1e-7).
_NORM_TOLERANCE = 1e-3


class GalleryError(ValueError):
  """A gallery operation that cannot be done as asked (the message says why)."""


class IndexFileError(GalleryError):
  """The index directory is missing, truncated, damaged or of another format."""


class ModelMismatchError(GalleryError):
  """Embeddings of another model (dimension or model id) than the index's."""


class EmptyIndexError(GalleryError):
  """A search of an index that holds no embeddings."""


@dataclasses.dataclass(frozen=True)
class IndexOptions:
  """Which FAISS index, and its parameters (None = chosen from the data).

  Attributes:
    index_type: one of INDEX_TYPES.
    nlist: ivfpq cells; default about 4 sqrt(N), at least 39 training
      embeddings per cell.
    pq_m: ivfpq sub-vectors (must divide the dimension); default the
      largest divisor of D not above D / 8 (8 dimensions per byte code).
    pq_bits: bits per ivfpq sub-vector code.
    nprobe: ivfpq cells visited per query.
    refine: ivfpq candidates re-ranked exactly, as a multiple of k.
    hnsw_m: HNSW links per node.
    ef_construction: HNSW candidate list while building.
    ef_search: HNSW candidate list while searching (raised to k if lower).
  """
  index_type: str = "flat"
  nlist: Optional[int] = None
  pq_m: Optional[int] = None
  pq_bits: int = 8
  nprobe: int = 32
  refine: int = 10
  hnsw_m: int = 32
  ef_construction: int = 200
  ef_search: int = 128

  def __post_init__(self):
    if self.index_type not in INDEX_TYPES:
      raise GalleryError(f"index_type {self.index_type!r} is not one of "
                         f"{', '.join(INDEX_TYPES)}.")
    for name in ("nlist", "pq_m", "pq_bits", "nprobe", "refine", "hnsw_m",
                 "ef_construction", "ef_search"):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value < 1):
        raise GalleryError(f"index option {name}={value!r}: expected a "
                           "positive integer.")

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, data: dict) -> "IndexOptions":
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise GalleryError(f"unknown index option(s) {sorted(unknown)}.")
    return cls(**data)


@dataclasses.dataclass(frozen=True)
class SearchResult:
  """The k nearest gallery images of each query.

  Attributes:
    rows: [Q, k] int64 positions in the gallery (`Gallery.metadata`), best
      first; -1 where the gallery holds fewer than k images (or an
      approximate index found fewer).
    distances: [Q, k] float32 Euclidean distances between the L2-normalised
      query and gallery embeddings; NaN where rows is -1.
  """
  rows: np.ndarray
  distances: np.ndarray


def _largest_divisor_at_most(n: int, limit: int) -> int:
  return max(d for d in range(1, max(1, limit) + 1) if n % d == 0)


def normalized(name: str, embeddings, dimension: Optional[int] = None
               ) -> np.ndarray:
  """[N, D] float32 rows scaled to unit length.

  Raises:
    GalleryError: not a 2-D array, a non-finite value or an all-zero row
      (naming `name` and the row).
    ModelMismatchError: D differs from `dimension`.
  """
  x = np.asarray(embeddings, np.float32)
  if x.ndim != 2:
    raise GalleryError(f"{name}: expected embeddings [N, D], got shape "
                       f"{x.shape}.")
  if dimension is not None and x.shape[1] != dimension:
    raise ModelMismatchError(
        f"{name} have dimension {x.shape[1]}, the index {dimension}: they "
        "come from another model; embed with the index's model or build a "
        "new index.")
  bad = ~np.isfinite(x).all(axis=1)
  if bad.any():
    raise GalleryError(f"{name}: row {int(np.argmax(bad))} has a non-finite "
                       "value.")
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  if (norms == 0).any():
    raise GalleryError(f"{name}: row {int(np.argmax(norms[:, 0] == 0))} is "
                       "all zeros and has no direction.")
  if np.abs(norms - 1).max(initial=0) <= _NORM_TOLERANCE:
    return np.ascontiguousarray(x)
  return np.ascontiguousarray(x / norms)


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def _write_bytes_atomically(path: str, write) -> dict:
  """write(tmp_path), then os.replace; returns {"name", "bytes", "sha256"}."""
  tmp = f"{path}.tmp{os.getpid()}"
  write(tmp)
  entry = {"name": os.path.basename(path), "bytes": os.path.getsize(tmp),
           "sha256": _sha256(tmp)}
  os.replace(tmp, path)
  return entry


_METADATA_SCHEMA = pa.schema([
    ("row_id", pa.int64()), ("path", pa.string()), ("pid", pa.int64()),
    ("camid", pa.int64()), ("time", pa.string())])


def _empty_metadata() -> pa.Table:
  return _METADATA_SCHEMA.empty_table()


class Gallery:
  """Embeddings and metadata of gallery images, searchable by FAISS.

  Held in memory: the metadata table (`metadata`), the [N, D] float32
  L2-normalised embeddings (`embeddings`) and the FAISS index over them.
  `Gallery.create` starts an empty one, `Gallery.open` reads a directory,
  `save` writes one (see the module docstring).
  """

  def __init__(self, model_id: str, dimension: int, options: IndexOptions,
               metadata: pa.Table, embeddings: np.ndarray, index,
               next_row_id: int, generation: int = 0,
               model_info: Optional[dict] = None):
    self.model_id = model_id
    self.model_info = dict(model_info or {})
    self.dimension = dimension
    self.options = options
    self.metadata = metadata
    self.embeddings = embeddings
    self._index = index
    self._next_row_id = next_row_id
    self._generation = generation

  @classmethod
  def create(cls, model_id: str, dimension: int,
             options: IndexOptions = IndexOptions(),
             model_info: Optional[dict] = None) -> "Gallery":
    """An empty gallery for `model_id`'s embeddings of size `dimension`.

    `model_info` (JSON-able: where the model lies, its kind) is kept in the
    manifest for the commands that embed queries with the same model.
    """
    if not model_id:
      raise GalleryError("model_id is empty: name the model whose "
                         "embeddings the index holds.")
    if not isinstance(dimension, int) or dimension < 1:
      raise GalleryError(f"dimension {dimension!r}: expected a positive "
                         "integer.")
    if options.pq_m is not None and dimension % options.pq_m:
      raise GalleryError(f"pq_m={options.pq_m} does not divide the "
                         f"dimension {dimension}; choose a divisor of it.")
    return cls(model_id, dimension, options, _empty_metadata(),
               np.zeros((0, dimension), np.float32), None, 0,
               model_info=model_info)

  def __len__(self) -> int:
    return self.metadata.num_rows

  # ---- the FAISS index -------------------------------------------------

  def _new_index(self, training: np.ndarray):
    """An empty (trained, for ivfpq) FAISS index with ids."""
    o, d = self.options, self.dimension
    if o.index_type == "flat":
      return faiss.IndexIDMap2(faiss.IndexFlatIP(d))
    if o.index_type == "hnsw":
      hnsw = faiss.IndexHNSWFlat(d, o.hnsw_m)
      hnsw.hnsw.efConstruction = o.ef_construction
      return faiss.IndexIDMap2(hnsw)
    n = len(training)
    bits_needed = 2 ** o.pq_bits
    nlist = o.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
    if n < max(nlist, bits_needed):
      raise GalleryError(
          f"an ivfpq index is trained on the first embeddings it gets: "
          f"{n} are fewer than nlist={nlist} cells or the "
          f"{bits_needed} codes of pq_bits={o.pq_bits}. Add at least "
          f"{max(nlist, bits_needed)} images at once, or use "
          "--index_type=flat (exact, best below ~100k images).")
    m = o.pq_m or _largest_divisor_at_most(d, d // 8)
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFPQ(quantizer, d, nlist, m, o.pq_bits)
    # k-means on at most 64 embeddings per cell (a seeded sample): enough
    # for the centroids, and training time stays linear in nlist.
    cap = 64 * max(nlist, bits_needed // 4)
    if n > cap:
      pick = np.random.default_rng(0).choice(n, cap, replace=False)
      training = training[np.sort(pick)]
    index.train(training)
    # The manifest records what was chosen, not "auto".
    self.options = dataclasses.replace(o, nlist=nlist, pq_m=m)
    return index

  def _configure(self, index) -> None:
    """Search-time parameters (not all are stored by FAISS)."""
    if self.options.index_type == "ivfpq":
      index.nprobe = self.options.nprobe
    elif self.options.index_type == "hnsw":
      faiss.downcast_index(index.index).hnsw.efSearch = self.options.ef_search

  def _rebuild(self, training: Optional[np.ndarray] = None) -> None:
    self._index = self._new_index(
        self.embeddings if training is None else training)
    self._configure(self._index)
    if len(self):
      self._index.add_with_ids(self.embeddings, self._row_ids())

  def _row_ids(self) -> np.ndarray:
    return self.metadata.column("row_id").to_numpy()

  # ---- updates ---------------------------------------------------------

  def positions(self, paths: Sequence[str]) -> np.ndarray:
    """[len(paths)] int64 gallery positions of `paths`, -1 where absent."""
    where = {p: i for i, p in
             enumerate(self.metadata.column("path").to_pylist())}
    return np.array([where.get(p, -1) for p in paths], np.int64)

  def add(self, embeddings, paths: Sequence[str], *,
          pids: Optional[Sequence[Optional[int]]] = None,
          camids: Optional[Sequence[Optional[int]]] = None,
          times: Optional[Sequence[Optional[str]]] = None,
          model_id: Optional[str] = None) -> int:
    """Adds images; an image whose path is already there is replaced.

    Args:
      embeddings: [N, D] float, scaled to unit length if they are not.
      paths: [N] image paths (the key of `remove`), unique.
      pids, camids, times: [N] each, None (or a None item) where unknown.
      model_id: the model that embedded them; refused if it is not the
        index's (None: the caller vouches).

    Returns:
      How many of the paths replaced an image already in the gallery.

    Raises:
      ModelMismatchError, GalleryError (duplicate paths, lengths, values).
    """
    self._check_model(model_id, "the embeddings to add")
    x = normalized("the embeddings to add", embeddings, self.dimension)
    paths = [str(p) for p in paths]
    n = len(paths)
    if x.shape[0] != n:
      raise GalleryError(f"{x.shape[0]} embeddings for {n} paths: expected "
                         "one embedding per path.")
    if len(set(paths)) != n:
      dup = next(p for i, p in enumerate(paths) if p in paths[:i])
      raise GalleryError(f"path {dup!r} is listed twice in one add.")
    columns = {}
    for name, values in (("pid", pids), ("camid", camids), ("time", times)):
      if values is None:
        values = [None] * n
      values = list(values)
      if len(values) != n:
        raise GalleryError(f"{len(values)} {name}s for {n} paths.")
      columns[name] = values
    existing = set(self.metadata.column("path").to_pylist())
    replaced = len(self.remove([p for p in paths if p in existing])[0])
    if not n:
      return replaced
    row_ids = np.arange(self._next_row_id, self._next_row_id + n,
                        dtype=np.int64)
    new = pa.table({"row_id": row_ids, "path": paths, **columns},
                   schema=_METADATA_SCHEMA)
    self.metadata = pa.concat_tables([self.metadata, new])
    self.embeddings = np.concatenate([self.embeddings, x])
    self._next_row_id += n
    if self._index is None:
      self._rebuild(training=x)
    else:
      self._index.add_with_ids(x, row_ids)
    return replaced

  def remove(self, paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """Removes the images of `paths`.

    Returns:
      (removed paths, paths the gallery does not hold).
    """
    paths = [str(p) for p in paths]
    pos = self.positions(paths)
    missing = [p for p, i in zip(paths, pos) if i < 0]
    drop = np.unique(pos[pos >= 0])
    if not drop.size:
      return [], missing
    row_ids = self._row_ids()[drop]
    keep = np.ones(len(self), bool)
    keep[drop] = False
    self.metadata = self.metadata.filter(pa.array(keep))
    self.embeddings = np.ascontiguousarray(self.embeddings[keep])
    if self.options.index_type == "hnsw":
      self._rebuild()  # FAISS's HNSW has no deletion
    else:
      self._index.remove_ids(row_ids)
    return [p for p, i in zip(paths, pos) if i >= 0], missing

  # ---- search ----------------------------------------------------------

  def set_search_options(self, **options) -> None:
    """Changes the search-time options (nprobe, refine, ef_search) in place;
    the index itself is unchanged."""
    allowed = {"nprobe", "refine", "ef_search"}
    if set(options) - allowed:
      raise GalleryError(f"{sorted(set(options) - allowed)} are fixed when "
                         "the index is built; at search time only "
                         f"{sorted(allowed)} can change.")
    self.options = dataclasses.replace(self.options, **options)
    if self._index is not None:
      self._configure(self._index)

  def _check_model(self, model_id: Optional[str], what: str) -> None:
    if model_id is not None and model_id != self.model_id:
      raise ModelMismatchError(
          f"{what} come from model {model_id!r}, the index holds embeddings "
          f"of model {self.model_id!r}: distances between two models' "
          "embeddings mean nothing. Search with the index's model, or build "
          "an index with this one.")

  def search(self, queries, k: int = 10, *,
             model_id: Optional[str] = None) -> SearchResult:
    """The k gallery images nearest to each query.

    Args:
      queries: [Q, D] float embeddings (scaled to unit length if not).
      k: results per query (fewer exist when the gallery is smaller: -1).
      model_id: the model that embedded the queries; refused if it is not
        the index's (None: the caller vouches).

    Raises:
      ModelMismatchError, EmptyIndexError.
    """
    self._check_model(model_id, "the queries")
    q = normalized("the queries", queries, self.dimension)
    if k < 1:
      raise GalleryError(f"k={k}: expected at least 1 result per query.")
    if not len(self):
      raise EmptyIndexError(
          "the gallery index holds no images (every one was removed, or "
          "none was added): nothing to search. Add images first "
          "(python -m keras_reid.gallery add).")
    kk = min(k, len(self))
    fetch = kk
    if self.options.index_type == "ivfpq":
      fetch = min(len(self), kk * self.options.refine)
    elif self.options.index_type == "hnsw":
      hnsw = faiss.downcast_index(self._index.index).hnsw
      hnsw.efSearch = max(self.options.ef_search, fetch)
    _, ids = self._index.search(q, fetch)
    row_ids = self._row_ids()
    rows = np.searchsorted(row_ids, np.maximum(ids, 0))
    rows = np.where(ids >= 0, rows, -1)
    # Exact squared Euclidean distances of the candidates (the evaluator's
    # quantity), computed by FAISS without gathering the rows.
    sq = np.empty(rows.shape, np.float32)
    safe = np.ascontiguousarray(np.maximum(rows, 0), np.int64)
    faiss.fvec_L2sqr_by_idx(faiss.swig_ptr(sq), faiss.swig_ptr(q),
                            faiss.swig_ptr(self.embeddings),
                            faiss.swig_ptr(safe), self.dimension, len(q),
                            fetch)
    sq = np.where(rows >= 0, sq, np.inf)
    order = np.lexsort((np.where(rows >= 0, rows, np.iinfo(np.int64).max),
                        sq), axis=1)[:, :kk]
    rows = np.take_along_axis(rows, order, 1)
    dist = np.sqrt(np.take_along_axis(sq, order, 1)).astype(np.float32)
    dist[rows < 0] = np.nan
    if kk < k:
      pad = k - kk
      rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
      dist = np.pad(dist, ((0, 0), (0, pad)), constant_values=np.nan)
    return SearchResult(rows=rows.astype(np.int64), distances=dist)

  # ---- disk ------------------------------------------------------------

  def index_bytes(self) -> int:
    """Size of the serialised FAISS index (its memory, about)."""
    return 0 if self._index is None else int(
        faiss.serialize_index(self._index).size)

  def save(self, directory: str) -> dict:
    """Writes the index directory (see the module docstring); returns the
    manifest."""
    os.makedirs(directory, exist_ok=True)
    if self._index is None and self.options.index_type != "ivfpq":
      self._rebuild()  # an empty one; ivfpq waits for training data
    generation = max(self._generation, _current_generation(directory)) + 1
    table = self.metadata.append_column(
        "embedding", pa.FixedSizeListArray.from_arrays(
            pa.array(self.embeddings.reshape(-1)), self.dimension))
    files = {"table": _write_bytes_atomically(
        os.path.join(directory, f"table-{generation}.parquet"),
        lambda p: pq.write_table(table, p))}
    if self._index is not None:
      files["index"] = _write_bytes_atomically(
          os.path.join(directory, f"index-{generation}.faiss"),
          lambda p: faiss.write_index(self._index, p))
    pids = self.metadata.column("pid")
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model_id": self.model_id, "dimension": self.dimension,
        "model": self.model_info,
        "index": self.options.to_dict(), "generation": generation,
        "next_row_id": self._next_row_id,
        "counts": {
            "images": len(self),
            "with_pid": len(self) - pids.null_count,
            "identities": len(pc.unique(pids.drop_null())),
            "with_camera": len(self) - self.metadata.column("camid")
            .null_count},
        "files": files}
    runs.write_json(os.path.join(directory, MANIFEST_FILE), manifest)
    self._generation = generation
    for path in glob.glob(os.path.join(directory, "table-*.parquet")) + \
        glob.glob(os.path.join(directory, "index-*.faiss")):
      if os.path.basename(path) not in {f["name"] for f in files.values()}:
        os.remove(path)
    return manifest

  @classmethod
  def open(cls, directory: str) -> "Gallery":
    """Reads an index directory, checking every file against the manifest.

    Raises:
      IndexFileError: no manifest, another format or version, a file
        missing, truncated or changed, or contents that disagree with the
        manifest (each message names the file and the fix).
    """
    manifest = read_manifest(directory)
    files = manifest["files"]
    paths = {}
    for key in ("table", "index"):
      if key not in files:
        if key == "index" and manifest["counts"]["images"] == 0:
          continue
        raise IndexFileError(f"{directory}/{MANIFEST_FILE} lists no {key} "
                             "file: the index is damaged; rebuild it.")
      paths[key] = _checked_file(directory, files[key])
    d = manifest["dimension"]
    try:
      table = pq.read_table(paths["table"])
    except (pa.ArrowException, OSError) as e:
      raise IndexFileError(f"{paths['table']} cannot be read as Parquet "
                           f"({e}); rebuild the index.") from e
    expected = _METADATA_SCHEMA.append(
        pa.field("embedding", pa.list_(pa.float32(), d)))
    if not table.schema.equals(expected, check_metadata=False) or (
        table.num_rows != manifest["counts"]["images"]):
      raise IndexFileError(
          f"{paths['table']}: {table.num_rows} rows of schema "
          f"{table.schema.names}; the manifest expects "
          f"{manifest['counts']['images']} rows of {expected.names} "
          f"(embedding of dimension {d}). Rebuild the index.")
    column = table.column("embedding").combine_chunks()
    embeddings = np.ascontiguousarray(
        column.values.to_numpy(zero_copy_only=False).reshape(-1, d),
        np.float32) if table.num_rows else np.zeros((0, d), np.float32)
    metadata = table.drop_columns(["embedding"])
    index = None
    if "index" in paths:
      try:
        index = faiss.read_index(paths["index"])
      except RuntimeError as e:
        raise IndexFileError(f"{paths['index']} cannot be read by FAISS "
                             f"({str(e).splitlines()[0]}); rebuild the "
                             "index.") from e
      if index.d != d or index.ntotal != table.num_rows:
        raise IndexFileError(
            f"{paths['index']} holds {index.ntotal} vectors of dimension "
            f"{index.d}; the manifest {table.num_rows} of dimension {d}. "
            "Rebuild the index.")
    try:
      options = IndexOptions.from_dict(manifest["index"])
    except (GalleryError, TypeError) as e:
      raise IndexFileError(f"{directory}/{MANIFEST_FILE}: index options "
                           f"{manifest['index']!r} ({e}).") from e
    gallery = cls(manifest["model_id"], d, options, metadata, embeddings,
                  index, manifest["next_row_id"], manifest["generation"],
                  model_info=manifest.get("model"))
    if index is not None:
      gallery._configure(index)
    return gallery


def _current_generation(directory: str) -> int:
  try:
    with open(os.path.join(directory, MANIFEST_FILE)) as f:
      return int(json.load(f).get("generation", 0))
  except (OSError, ValueError, AttributeError):
    return 0


def read_manifest(directory: str) -> dict:
  """The manifest of an index directory, checked for format and version.

  Raises:
    IndexFileError: missing, unreadable, or another format / version.
  """
  path = os.path.join(directory, MANIFEST_FILE)
  if not os.path.isfile(path):
    raise IndexFileError(
        f"{directory!r} is not a gallery index: it has no {MANIFEST_FILE}. "
        "Build one with python -m keras_reid.gallery build --index=DIR.")
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise IndexFileError(f"{path} is not readable JSON ({e}); the index is "
                         "damaged: rebuild it.") from e
  found = manifest.get("format") if isinstance(manifest, dict) else None
  if found != FORMAT:
    raise IndexFileError(f"{path} is not a keras_reid gallery manifest "
                         f"(format {found!r}, expected {FORMAT!r}).")
  version = manifest.get("format_version")
  if version != FORMAT_VERSION:
    raise IndexFileError(
        f"{path}: index format version {version!r}; this keras-reid reads "
        f"version {FORMAT_VERSION}. Rebuild the index with this version "
        "(python -m keras_reid.gallery build).")
  needed = {"model_id", "dimension", "index", "generation", "next_row_id",
            "counts", "files"}
  if needed - set(manifest):
    raise IndexFileError(f"{path} lacks {sorted(needed - set(manifest))}; "
                         "the index is damaged: rebuild it.")
  return manifest


def _checked_file(directory: str, entry: dict) -> str:
  """The path of a manifest's file entry, after its size and SHA-256."""
  path = os.path.join(directory, entry["name"])
  if not os.path.isfile(path):
    raise IndexFileError(f"{path} is missing (the manifest lists it); the "
                         "index is damaged: rebuild it.")
  size = os.path.getsize(path)
  if size != entry["bytes"]:
    raise IndexFileError(
        f"{path} has {size} bytes, the manifest {entry['bytes']}: the file "
        "is truncated or was replaced. Rebuild the index.")
  if _sha256(path) != entry["sha256"]:
    raise IndexFileError(f"{path}: its SHA-256 differs from the manifest's; "
                         "the file was changed. Rebuild the index.")
  return path
