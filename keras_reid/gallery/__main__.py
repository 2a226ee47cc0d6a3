"""Builds, updates and searches a gallery index (keras_reid.gallery).

    python -m keras_reid.gallery build --embedder=EXPORT_DIR_OR_RUN \
        --images=FOLDER_OR_MANIFEST.csv --index=DIR [--index_type=flat]
    python -m keras_reid.gallery add --index=DIR --images=FOLDER_OR_CSV
    python -m keras_reid.gallery remove --index=DIR [--images=...] PATHS...
    python -m keras_reid.gallery search --index=DIR [--k=10] \
        [--eval_report=REPORT.json] IMAGES...

`build` embeds with progress lines, in chunks kept under DIR/pending (a
rerun of a killed build continues), lists and skips unreadable images, and
writes the index (keras_reid/gallery/index.py). `add` and `search` embed
with the model the index was built with (or --embedder, which must be the
same model). `search` prints each query's top k with distances, and a
same-person decision when an evaluation report's threshold applies
(keras_reid/gallery/matching.py).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from absl import app
from absl import flags

# Before anything that imports TensorFlow, to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid import user_errors
from keras_reid.gallery import embedding_model
from keras_reid.gallery import index as index_lib
from keras_reid.gallery import ingestion
from keras_reid.gallery import matching

COMMANDS = ("build", "add", "remove", "search")
_OPTIONS = index_lib.IndexOptions()

_INDEX = flags.DEFINE_string("index", None, "The index directory.")
_EMBEDDER = flags.DEFINE_string(
    "embedder", None, "An exported SavedModel version folder or a training run "
    "directory. Required by build; add and search default to the index's.")
_IMAGES = flags.DEFINE_string(
    "images", None, "A folder of images (searched recursively) or a CSV "
    "manifest with a `path` column and optional pid, camid, time columns.")
_INDEX_TYPE = flags.DEFINE_enum(
    "index_type", "flat", list(index_lib.INDEX_TYPES),
    "flat: exact inner product; ivfpq: inverted lists + product "
    "quantisation; hnsw: graph. Fixed at build.")
_NLIST = flags.DEFINE_integer("nlist", None, "ivfpq cells (default ~4 sqrt(N)).")
_PQ_M = flags.DEFINE_integer("pq_m", None,
                             "ivfpq sub-vectors, a divisor of D (default D/8).")
_PQ_BITS = flags.DEFINE_integer("pq_bits", _OPTIONS.pq_bits,
                                "ivfpq bits per sub-vector code.")
_NPROBE = flags.DEFINE_integer("nprobe", None, "ivfpq cells visited per "
                               f"query (default: the index's, {_OPTIONS.nprobe} "
                               "at build).")
_REFINE = flags.DEFINE_integer("refine", None, "ivfpq candidates re-ranked "
                               "exactly, x k (default: the index's, "
                               f"{_OPTIONS.refine} at build).")
_HNSW_M = flags.DEFINE_integer("hnsw_m", _OPTIONS.hnsw_m, "HNSW links per node.")
_EF_CONSTRUCTION = flags.DEFINE_integer(
    "ef_construction", _OPTIONS.ef_construction, "HNSW build candidates.")
_EF_SEARCH = flags.DEFINE_integer(
    "ef_search", None, "HNSW search candidates (default: the index's, "
    f"{_OPTIONS.ef_search} at build).")
_K = flags.DEFINE_integer("k", 10, "Results per query.")
_EVAL_REPORT = flags.DEFINE_string(
    "eval_report", None, "An evaluation report (python -m keras_reid.evaluate "
    "--saved_model=... --output_json=...) whose verification threshold "
    "decides same / different person; default: the model's own (the "
    "Embedder's cosine threshold, or a run's eval.json).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per batch.")
_CHUNK_SIZE = flags.DEFINE_integer(
    "chunk_size", 1024, "Images embedded per chunk kept on disk (what a "
    "killed build loses at most).")


def _pending(index_dir: str) -> str:
  return os.path.join(index_dir, "pending")


def _model(default_source: str | None) -> embedding_model.ModelIdentity:
  source = _EMBEDDER.value or default_source
  if not source:
    raise ValueError("--embedder is required: an exported SavedModel folder or "
                     "a training run directory.")
  return embedding_model.identify(source)


def _check_same_model(gallery: index_lib.Gallery,
                      identity: embedding_model.ModelIdentity) -> None:
  if identity.model_id != gallery.model_id:
    raise index_lib.ModelMismatchError(
        f"--embedder {identity.source!r} is model {identity.model_id!r}; the "
        f"index {_INDEX.value!r} holds embeddings of model "
        f"{gallery.model_id!r}. Use the index's model, or build a new index "
        "with this one.")


def _embed_images(identity, gallery_model_id: str):
  images = ingestion.list_images(_IMAGES.value)
  ingestion.start_pending(_pending(_INDEX.value), images, gallery_model_id,
                          _CHUNK_SIZE.value)
  model = embedding_model.Model(identity, batch_size=_BATCH_SIZE.value)
  embedded = ingestion.embed_resumably(
      model.embed, images, _pending(_INDEX.value), gallery_model_id,
      chunk_size=_CHUNK_SIZE.value)
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


def _build() -> None:
  if os.path.isfile(os.path.join(_INDEX.value, index_lib.MANIFEST_FILE)):
    raise ValueError(f"--index {_INDEX.value!r} already holds an index: "
                     "update it with add / remove, or build into a new "
                     "folder.")
  identity = _model(None)
  embedded = _embed_images(identity, identity.model_id)
  options = index_lib.IndexOptions(
      index_type=_INDEX_TYPE.value, nlist=_NLIST.value, pq_m=_PQ_M.value,
      pq_bits=_PQ_BITS.value, nprobe=_NPROBE.value or _OPTIONS.nprobe,
      refine=_REFINE.value or _OPTIONS.refine, hnsw_m=_HNSW_M.value,
      ef_construction=_EF_CONSTRUCTION.value,
      ef_search=_EF_SEARCH.value or _OPTIONS.ef_search)
  gallery = index_lib.Gallery.create(
      identity.model_id, embedded.embeddings.shape[1], options,
      model_info={"source": identity.source, "kind": identity.kind})
  _add(gallery, embedded)
  manifest = gallery.save(_INDEX.value)
  ingestion.discard_pending(_pending(_INDEX.value))
  print(f"indexed {manifest['counts']['images']} images "
        f"({len(embedded.skipped)} skipped) into {_INDEX.value}: "
        f"{options.index_type}, dimension {gallery.dimension}, model "
        f"{gallery.model_id!r}")


def _update(argv: Sequence[str], command: str) -> None:
  gallery = index_lib.Gallery.open(_INDEX.value)
  if command == "add":
    identity = _model(gallery.model_info.get("source"))
    _check_same_model(gallery, identity)
    embedded = _embed_images(identity, gallery.model_id)
    replaced = _add(gallery, embedded)
    gallery.save(_INDEX.value)
    ingestion.discard_pending(_pending(_INDEX.value))
    print(f"added {len(embedded.images) - replaced} images, replaced "
          f"{replaced}, skipped {len(embedded.skipped)}; the index holds "
          f"{len(gallery)}.")
    return
  paths = [os.path.abspath(p) for p in argv]
  if _IMAGES.value:
    paths += ingestion.list_images(_IMAGES.value).paths
  if not paths:
    raise app.UsageError("remove: give the image paths to remove, or "
                         "--images=FOLDER_OR_CSV.")
  removed, missing = gallery.remove(paths)
  if not removed:
    raise ValueError(f"none of the {len(paths)} paths is in the index "
                     f"{_INDEX.value!r} (e.g. {paths[0]!r}; the index keys "
                     "images by absolute path): nothing removed.")
  for path in missing:
    print(f"not in the index: {path}", file=sys.stderr)
  gallery.save(_INDEX.value)
  print(f"removed {len(removed)} images; the index holds {len(gallery)}.")


def _search(argv: Sequence[str]) -> None:
  if not argv:
    raise app.UsageError("search: give the query image files.")
  gallery = index_lib.Gallery.open(_INDEX.value)
  overrides = {name: flag.value for name, flag in (
      ("nprobe", _NPROBE), ("refine", _REFINE), ("ef_search", _EF_SEARCH))
               if flag.value is not None}
  if overrides:
    gallery.set_search_options(**overrides)
  if not len(gallery):
    raise index_lib.EmptyIndexError(
        f"the index {_INDEX.value!r} holds no images (every one was removed): "
        "nothing to search. Add images with python -m keras_reid.gallery "
        "add.")
  identity = _model(gallery.model_info.get("source"))
  _check_same_model(gallery, identity)
  paths = [os.path.abspath(p) for p in argv]
  from keras_reid.data import image_files  # TensorFlow
  bad = image_files.validate_images(paths)
  if bad:
    raise ValueError("query image(s) missing or unreadable: "
                     + ", ".join(paths[i] for i in bad))
  model = embedding_model.Model(identity, _BATCH_SIZE.value)
  queries = model.embed(paths)
  result = gallery.search(queries, _K.value, model_id=identity.model_id)
  threshold = matching.default_threshold(
      identity.kind, identity.source, _EVAL_REPORT.value,
      model.cosine_threshold)
  print(matching.format_results(paths, result, gallery.metadata, threshold))


def main(argv: Sequence[str]) -> None:
  if len(argv) < 2 or argv[1] not in COMMANDS:
    raise app.UsageError(
        f"expected a command, one of {', '.join(COMMANDS)}: python -m "
        "keras_reid.gallery build --embedder=... --images=... --index=DIR")
  command, rest = argv[1], argv[2:]
  if not _INDEX.value:
    raise app.UsageError(f"{command}: --index=DIR is required.")
  if command in ("build", "add") and not _IMAGES.value:
    raise app.UsageError(f"{command}: --images=FOLDER_OR_CSV is required.")
  if command in ("build", "add") and rest:
    raise app.UsageError(f"{command} takes no positional arguments: {rest}")
  if command == "build":
    _build()
  elif command == "search":
    _search(rest)
  else:
    _update(rest, command)


if __name__ == "__main__":
  app.run(user_errors.one_line_errors(main))
