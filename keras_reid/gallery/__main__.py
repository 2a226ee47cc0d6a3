"""Builds, updates and searches a gallery index (keras_reid.gallery).

    python -m keras_reid.gallery build --embedder=EXPORT_DIR_OR_RUN \
        --images=FOLDER_OR_MANIFEST.csv --index=DIR [--index_type=flat]
    python -m keras_reid.gallery build --embeddings='OUT/embeddings-*.parquet' \
        --index=DIR      (the shards of python -m keras_reid.gallery.embed_beam)
    python -m keras_reid.gallery add --index=DIR --images=FOLDER_OR_CSV
    python -m keras_reid.gallery remove --index=DIR [--images=...] PATHS...
    python -m keras_reid.gallery search --index=DIR [--k=10] \
        [--eval_report=REPORT.json] IMAGES...

What each command does: keras_reid/gallery/commands.py, which this entry
point calls with its flags' values.
"""

from __future__ import annotations

from typing import Sequence

from absl import app
from absl import flags

# Before anything that imports TensorFlow, to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid import user_errors
from keras_reid.gallery import commands
from keras_reid.gallery import index as index_lib

_OPTIONS = index_lib.IndexOptions()

_INDEX = flags.DEFINE_string("index", None, "The index directory.")
_EMBEDDER = flags.DEFINE_string(
    "embedder", None, "An exported SavedModel version folder or a training run "
    "directory. Required by build; add and search default to the index's.")
_IMAGES = flags.DEFINE_string(
    "images", None, "A folder of images (searched recursively) or a CSV "
    "manifest with a `path` column and optional pid, camid, time columns.")
_EMBEDDINGS = flags.DEFINE_string(
    "embeddings", None, "build only, instead of --images: a glob of the "
    "Parquet shards of python -m keras_reid.gallery.embed_beam (indexed "
    "without embedding again; --embedder, if given, must be their model).")
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


def main(argv: Sequence[str]) -> None:
  if len(argv) < 2 or argv[1] not in commands.COMMANDS:
    raise app.UsageError(
        f"expected a command, one of {', '.join(commands.COMMANDS)}: python "
        "-m keras_reid.gallery build --embedder=... --images=... --index=DIR")
  settings = commands.Settings(
      index=_INDEX.value, embedder=_EMBEDDER.value, images=_IMAGES.value,
      embeddings=_EMBEDDINGS.value,
      index_type=_INDEX_TYPE.value, nlist=_NLIST.value, pq_m=_PQ_M.value,
      pq_bits=_PQ_BITS.value, nprobe=_NPROBE.value, refine=_REFINE.value,
      hnsw_m=_HNSW_M.value, ef_construction=_EF_CONSTRUCTION.value,
      ef_search=_EF_SEARCH.value, k=_K.value, eval_report=_EVAL_REPORT.value,
      batch_size=_BATCH_SIZE.value, chunk_size=_CHUNK_SIZE.value)
  commands.run(argv[1], settings, argv[2:])


if __name__ == "__main__":
  app.run(user_errors.one_line_errors(main))
