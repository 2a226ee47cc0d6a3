"""Embeds image files with a served model (keras_reid.serving.client).

    python -m keras_reid.serving.client --server=localhost:8500 --model=reid \
        a.jpg b.bmp

sends each file's bytes to the model's serve_bytes signature (JPEG, PNG,
BMP, GIF; the server decodes them) and prints one line per image: the file,
the embedding's dimension and norm, its first values; for two images also
their cosine similarity. `--output=FILE.npy` (the vectors) or `.npz`
(vectors and paths) writes the embeddings instead of the summary.
`--protocol=rest --server=localhost:8501` uses the REST API. Does not import
TensorFlow. A missing or unreadable file, a file the server cannot decode or
an unreachable server is one line on stderr and exit status 1.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import app
from absl import flags
import numpy as np

# Before anything that imports TensorFlow (nothing here does; a user's
# plugin might), to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid.serving.client import tf_serving

_SERVER = flags.DEFINE_string(
    "server", "localhost:8500",
    "host:port of the model server (gRPC 8500, REST 8501).")
_MODEL = flags.DEFINE_string("model", "reid",
                             "Model name in the server's models.config.")
_VERSION = flags.DEFINE_integer("version", 0,
                                "Model version; 0 = the latest served.")
_PROTOCOL = flags.DEFINE_enum("protocol", "grpc", ["grpc", "rest"],
                              "Which API to use.")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", 10.0,
                                "Deadline of each request attempt.")
_RETRIES = flags.DEFINE_integer("retries", 2,
                                "Retries when the server is unavailable.")
_FILES_PER_REQUEST = flags.DEFINE_integer("files_per_request", 32,
                                          "Files per request.", lower_bound=1)
_OUTPUT = flags.DEFINE_string(
    "output", None,
    "Write the embeddings here instead of printing a summary: .npy = the "
    "float32 [N, D] array (rows in argument order), .npz = 'embeddings' and "
    "'paths'. Written atomically.")


def main(argv: Sequence[str]) -> int:
  """Returns the exit status: 0, or 1 after a one-line error on stderr."""
  try:
    return _embed_and_report(argv)
  except (tf_serving.ServingError, OSError, ValueError) as e:
    # A user's mistake or the server's answer, never a traceback.
    print(f"error: {_one_line(str(e))}", file=sys.stderr, flush=True)
    return 1


def _one_line(message: str) -> str:
  """The message's lines joined, less TensorFlow's "[[{{node ...}}]]" lines
  (where in the server's graph an assertion failed)."""
  lines = [line.strip() for line in message.splitlines()]
  return " ".join(line for line in lines if line and not line.startswith("[["))


def _embed_and_report(argv: Sequence[str]) -> int:
  paths = list(argv[1:])
  if not paths:
    raise app.UsageError(
        "Expected image files: python -m keras_reid.serving.client "
        "[--server=host:port --model=reid] a.jpg [b.bmp ...]")
  # Read first: a missing file fails before a connection is made.
  tf_serving.read_files(paths)
  client = tf_serving.make_client(
      _SERVER.value, _MODEL.value, protocol=_PROTOCOL.value,
      version=_VERSION.value or None, timeout_s=_TIMEOUT_S.value,
      retries=_RETRIES.value)
  embeddings = tf_serving.embed_paths(client, paths,
                                      batch_size=_FILES_PER_REQUEST.value)
  if _OUTPUT.value:
    tf_serving.write_embeddings(_OUTPUT.value, paths, embeddings)
    print(f"wrote {len(paths)} embeddings of dimension "
          f"{embeddings.shape[1]} to {_OUTPUT.value}")
    return 0
  for path, embedding in zip(paths, embeddings):
    print(tf_serving.summary_line(path, embedding))
  if len(paths) == 2:
    print(f"cosine similarity: {float(np.dot(*embeddings)):.4f}")
  return 0


if __name__ == "__main__":
  app.run(main)
