"""Embeds image files with a served model (keras_reid.serving.client).

    python -m keras_reid.serving.client --server=localhost:8500 --model=reid \
        a.jpg b.bmp

sends each file's bytes to the model's serve_bytes signature and prints one
line per image (dimension, norm, first values; for two images their cosine
similarity); `--output=FILE.npy` or `.npz` writes the embeddings instead.
`--protocol=rest --server=localhost:8501` uses the REST API. Does not import
TensorFlow. What the command does: keras_reid/serving/client/commands.py,
which this entry point calls with its flags' values.
"""

from __future__ import annotations

from typing import Sequence

from absl import app
from absl import flags

# Before anything that imports TensorFlow (nothing here does; a user's
# plugin might), to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid.serving.client import commands

_DEFAULTS = commands.Settings()

_SERVER = flags.DEFINE_string(
    "server", _DEFAULTS.server,
    "host:port of the model server (gRPC 8500, REST 8501).")
_MODEL = flags.DEFINE_string("model", _DEFAULTS.model,
                             "Model name in the server's models.config.")
_VERSION = flags.DEFINE_integer("version", _DEFAULTS.version,
                                "Model version; 0 = the latest served.")
_PROTOCOL = flags.DEFINE_enum("protocol", _DEFAULTS.protocol,
                              list(commands.PROTOCOLS), "Which API to use.")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", _DEFAULTS.timeout_s,
                                "Deadline of each request attempt.")
_RETRIES = flags.DEFINE_integer("retries", _DEFAULTS.retries,
                                "Retries when the server is unavailable.")
_FILES_PER_REQUEST = flags.DEFINE_integer(
    "files_per_request", _DEFAULTS.files_per_request, "Files per request.",
    lower_bound=1)
_OUTPUT = flags.DEFINE_string(
    "output", None,
    "Write the embeddings here instead of printing a summary: .npy = the "
    "float32 [N, D] array (rows in argument order), .npz = 'embeddings' and "
    "'paths'. Written atomically.")


def main(argv: Sequence[str]) -> int:
  """Returns the exit status: 0, or 1 after a one-line error on stderr."""
  if len(argv) < 2:
    raise app.UsageError(
        "Expected image files: python -m keras_reid.serving.client "
        "[--server=host:port --model=reid] a.jpg [b.bmp ...]")
  settings = commands.Settings(
      server=_SERVER.value, model=_MODEL.value, version=_VERSION.value,
      protocol=_PROTOCOL.value, timeout_s=_TIMEOUT_S.value,
      retries=_RETRIES.value, files_per_request=_FILES_PER_REQUEST.value,
      output=_OUTPUT.value)
  return commands.run(settings, argv[1:])


if __name__ == "__main__":
  app.run(main)
