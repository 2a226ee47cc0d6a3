"""The gallery commands (build, add, remove, search) behind
`python -m keras_reid.gallery`, which parses their flags into `Settings`.

`build` embeds with progress lines, in chunks kept under INDEX/pending (a
rerun of a killed build continues), lists and skips unreadable images, and
writes the index (keras_reid/gallery/index.py); or, given
settings.embeddings, indexes the Parquet shards of the batch embedding
pipeline (keras_reid/gallery/shards.py) without embedding again. `add` and `search` embed
with the model the index was built with (or settings.embedder, which must be
the same model). `search` prints each query's top k with distances, and a
same-person decision when an evaluation report's threshold applies
(keras_reid/gallery/matching.py).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Sequence

from keras_reid.gallery import embedding_model
from keras_reid.gallery import index as index_lib
from keras_reid.gallery import ingestion
from keras_reid.gallery import matching
from keras_reid.gallery import shards

COMMANDS = ("build", "add", "remove", "search")
_OPTIONS = index_lib.IndexOptions()


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the commands read; the entry point's flags of the same names.

  None for nprobe / refine / ef_search means the index's own value (at
  build: IndexOptions' defaults); nlist / pq_m None: chosen from the data.
  """
  index: str
  embedder: str | None = None
  images: str | None = None
  embeddings: str | None = None
  index_type: str = "flat"
  nlist: int | None = None
  pq_m: int | None = None
  pq_bits: int = _OPTIONS.pq_bits
  nprobe: int | None = None
  refine: int | None = None
  hnsw_m: int = _OPTIONS.hnsw_m
  ef_construction: int = _OPTIONS.ef_construction
  ef_search: int | None = None
  k: int = 10
  eval_report: str | None = None
  batch_size: int = 64
  chunk_size: int = 1024


def _pending(index_dir: str) -> str:
  return os.path.join(index_dir, "pending")


def _model(settings: Settings, default_source: str | None) -> embedding_model.ModelIdentity:
  source = settings.embedder or default_source
  if not source:
    raise ValueError("--embedder is required: an exported SavedModel folder or "
                     "a training run directory.")
  return embedding_model.identify(source)


def _check_same_model(settings: Settings, gallery: index_lib.Gallery,
                      identity: embedding_model.ModelIdentity) -> None:
  if identity.model_id != gallery.model_id:
    raise index_lib.ModelMismatchError(
        f"--embedder {identity.source!r} is model {identity.model_id!r}; the "
        f"index {settings.index!r} holds embeddings of model "
        f"{gallery.model_id!r}. Use the index's model, or build a new index "
        "with this one.")


def _embed_images(settings: Settings, identity, gallery_model_id: str):
  images = ingestion.list_images(settings.images)
  ingestion.start_pending(_pending(settings.index), images, gallery_model_id,
                          settings.chunk_size)
  model = embedding_model.Model(identity, batch_size=settings.batch_size)
  embedded = ingestion.embed_resumably(
      model.embed, images, _pending(settings.index), gallery_model_id,
      chunk_size=settings.chunk_size)
  if embedded.skipped:
    print(f"skipped {len(embedded.skipped)} unreadable image(s):",
          file=sys.stderr)
    for path in embedded.skipped:
      print(f"  {path}", file=sys.stderr)
  return embedded


def _add(gallery, embedded) -> int:
  im = embedded.images
  return gallery.add(embedded.embeddings, im.paths, pids=im.pids,
                     camids=im.camids, times=im.times)


def _from_shards(settings: Settings):
  """(identity, Embedded) of the shards settings.embeddings."""
  read = shards.read_shards(settings.embeddings)
  identity = embedding_model.ModelIdentity(
      read.model_source, embedding_model.SAVED_MODEL, read.model_id)
  if settings.embedder:
    given = _model(settings, None)
    if given.model_id != read.model_id:
      raise index_lib.ModelMismatchError(
          f"--embedder {given.source!r} is model {given.model_id!r}; the "
          f"shards {settings.embeddings!r} hold embeddings of model "
          f"{read.model_id!r} ({read.model_source}). Leave --embedder out, "
          "or embed the images again with this model.")
  print(f"read {len(read.images)} embeddings from {len(read.files)} "
        f"shard(s) of {settings.embeddings}", file=sys.stderr)
  return identity, ingestion.Embedded(read.images, read.embeddings, [])


def build(settings: Settings) -> None:
  """Embeds settings.images (or reads the shards settings.embeddings) and
  writes a new index into settings.index."""
  if os.path.isfile(os.path.join(settings.index, index_lib.MANIFEST_FILE)):
    raise ValueError(f"--index {settings.index!r} already holds an index: "
                     "update it with add / remove, or build into a new "
                     "folder.")
  if settings.embeddings:
    identity, embedded = _from_shards(settings)
  else:
    identity = _model(settings, None)
    embedded = _embed_images(settings, identity, identity.model_id)
  options = index_lib.IndexOptions(
      index_type=settings.index_type, nlist=settings.nlist, pq_m=settings.pq_m,
      pq_bits=settings.pq_bits, nprobe=settings.nprobe or _OPTIONS.nprobe,
      refine=settings.refine or _OPTIONS.refine, hnsw_m=settings.hnsw_m,
      ef_construction=settings.ef_construction,
      ef_search=settings.ef_search or _OPTIONS.ef_search)
  gallery = index_lib.Gallery.create(
      identity.model_id, embedded.embeddings.shape[1], options,
      model_info={"source": identity.source, "kind": identity.kind})
  _add(gallery, embedded)
  manifest = gallery.save(settings.index)
  ingestion.discard_pending(_pending(settings.index))
  print(f"indexed {manifest['counts']['images']} images "
        f"({len(embedded.skipped)} skipped) into {settings.index}: "
        f"{options.index_type}, dimension {gallery.dimension}, model "
        f"{gallery.model_id!r}")


def update(settings: Settings, command: str, paths: Sequence[str]) -> None:
  """"add" settings.images, or "remove" `paths` (and settings.images)."""
  gallery = index_lib.Gallery.open(settings.index)
  if command == "add":
    identity = _model(settings, gallery.model_info.get("source"))
    _check_same_model(settings, gallery, identity)
    embedded = _embed_images(settings, identity, gallery.model_id)
    replaced = _add(gallery, embedded)
    gallery.save(settings.index)
    ingestion.discard_pending(_pending(settings.index))
    print(f"added {len(embedded.images) - replaced} images, replaced "
          f"{replaced}, skipped {len(embedded.skipped)}; the index holds "
          f"{len(gallery)}.")
    return
  paths = [os.path.abspath(p) for p in paths]
  if settings.images:
    paths += ingestion.list_images(settings.images).paths
  if not paths:
    raise ValueError("remove: give the image paths to remove, or "
                         "--images=FOLDER_OR_CSV.")
  removed, missing = gallery.remove(paths)
  if not removed:
    raise ValueError(f"none of the {len(paths)} paths is in the index "
                     f"{settings.index!r} (e.g. {paths[0]!r}; the index keys "
                     "images by absolute path): nothing removed.")
  for path in missing:
    print(f"not in the index: {path}", file=sys.stderr)
  gallery.save(settings.index)
  print(f"removed {len(removed)} images; the index holds {len(gallery)}.")


def search(settings: Settings, queries: Sequence[str]) -> None:
  """Prints the top settings.k of each query image file."""
  if not queries:
    raise ValueError("search: give the query image files.")
  gallery = index_lib.Gallery.open(settings.index)
  overrides = {name: value for name, value in (
      ("nprobe", settings.nprobe), ("refine", settings.refine),
      ("ef_search", settings.ef_search)) if value is not None}
  if overrides:
    gallery.set_search_options(**overrides)
  if not len(gallery):
    raise index_lib.EmptyIndexError(
        f"the index {settings.index!r} holds no images (every one was removed): "
        "nothing to search. Add images with python -m keras_reid.gallery "
        "add.")
  identity = _model(settings, gallery.model_info.get("source"))
  _check_same_model(settings, gallery, identity)
  paths = [os.path.abspath(p) for p in queries]
  from keras_reid.data import image_files  # TensorFlow
  bad = image_files.validate_images(paths)
  if bad:
    raise ValueError("query image(s) missing or unreadable: "
                     + ", ".join(paths[i] for i in bad))
  model = embedding_model.Model(identity, settings.batch_size)
  queries = model.embed(paths)
  result = gallery.search(queries, settings.k, model_id=identity.model_id)
  threshold = matching.default_threshold(
      identity.kind, identity.source, settings.eval_report,
      model.cosine_threshold)
  print(matching.format_results(paths, result, gallery.metadata, threshold))


def run(command: str, settings: Settings, args: Sequence[str] = ()) -> None:
  """Runs `command` (one of COMMANDS) with its positional `args`.

  Raises:
    ValueError: an unknown command or missing arguments, naming them.
  """
  if command not in COMMANDS:
    raise ValueError(f"expected a command, one of {', '.join(COMMANDS)}; "
                     f"got {command!r}.")
  if not settings.index:
    raise ValueError(f"{command}: --index=DIR is required.")
  if settings.embeddings and (command != "build" or settings.images):
    raise ValueError("--embeddings=GLOB is an input of build only, instead "
                     f"of --images (got {command}"
                     f"{' with --images' if settings.images else ''}).")
  if command in ("build", "add") and not (settings.images
                                          or settings.embeddings):
    raise ValueError(f"{command}: --images=FOLDER_OR_CSV is required"
                     f"{' (or --embeddings=GLOB)' if command == 'build' else ''}.")
  if command in ("build", "add") and args:
    raise ValueError(f"{command} takes no positional arguments: {list(args)}")
  if command == "build":
    build(settings)
  elif command == "search":
    search(settings, args)
  else:
    update(settings, command, args)
