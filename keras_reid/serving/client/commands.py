"""The client command behind `python -m keras_reid.serving.client`, which
parses its flags into `Settings`.

`run(settings, paths)` sends each file's bytes to the served model's
serve_bytes signature (JPEG, PNG, BMP, GIF; the server decodes them) and
prints one line per image: the file, the embedding's dimension and norm, its
first values; for two images also their cosine similarity. With
settings.output (.npy: the vectors, .npz: vectors and paths) it writes the
embeddings instead of the summary. A missing or unreadable file, a file the
server cannot decode or an unreachable server is one line on stderr and exit
status 1. Imports no TensorFlow (tf_serving.py's protos only).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Optional, Sequence

import numpy as np

from keras_reid.serving.client import tf_serving

PROTOCOLS = ("grpc", "rest")


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the command reads; the entry point's flags of the same names.

  Attributes:
    server: host:port of the model server (gRPC 8500, REST 8501).
    model: the model's name in the server's models.config.
    version: the model version; 0 = the latest served.
    protocol: one of PROTOCOLS.
    timeout_s: deadline of each request attempt.
    retries: retries when the server is unavailable.
    files_per_request: files sent per request (>= 1).
    output: a .npy / .npz file to write the embeddings to instead of the
      summary (atomically), or None.
  """
  server: str = "localhost:8500"
  model: str = "reid"
  version: int = 0
  protocol: str = "grpc"
  timeout_s: float = 10.0
  retries: int = 2
  files_per_request: int = 32
  output: Optional[str] = None


def run(settings: Settings, paths: Sequence[str]) -> int:
  """Embeds the image files `paths` and reports them on stdout.

  Returns:
    The exit status: 0, or 1 after a one-line error on stderr (a user's
    mistake or the server's answer, never a traceback).
  """
  try:
    return _embed_and_report(settings, list(paths))
  except (tf_serving.ServingError, OSError, ValueError) as e:
    print(f"error: {_one_line(str(e))}", file=sys.stderr, flush=True)
    return 1


def _one_line(message: str) -> str:
  """The message's lines joined, less TensorFlow's "[[{{node ...}}]]" lines
  (where in the server's graph an assertion failed)."""
  lines = [line.strip() for line in message.splitlines()]
  return " ".join(line for line in lines if line and not line.startswith("[["))


def _embed_and_report(settings: Settings, paths: list[str]) -> int:
  if not paths:
    raise ValueError("expected image files: python -m "
                     "keras_reid.serving.client [--server=host:port "
                     "--model=reid] a.jpg [b.bmp ...]")
  # Read first: a missing file fails before a connection is made.
  tf_serving.read_files(paths)
  client = tf_serving.make_client(
      settings.server, settings.model, protocol=settings.protocol,
      version=settings.version or None, timeout_s=settings.timeout_s,
      retries=settings.retries)
  embeddings = tf_serving.embed_paths(client, paths,
                                      batch_size=settings.files_per_request)
  if settings.output:
    tf_serving.write_embeddings(settings.output, paths, embeddings)
    print(f"wrote {len(paths)} embeddings of dimension "
          f"{embeddings.shape[1]} to {settings.output}")
    return 0
  for path, embedding in zip(paths, embeddings):
    print(tf_serving.summary_line(path, embedding))
  if len(paths) == 2:
    print(f"cosine similarity: {float(np.dot(*embeddings)):.4f}")
  return 0
