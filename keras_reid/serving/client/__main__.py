"""Compares two images with a served model (keras_reid.serving.client).

    python -m keras_reid.serving.client --server=localhost:8500 --model=reid \
        a.jpg b.jpg

prints both embeddings, their Euclidean distance and the same-person
probability; `--protocol=rest --server=localhost:8501` uses the REST API.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import app
from absl import flags

# Before anything that imports TensorFlow, to quiet its start-up logs.
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


def main(argv: Sequence[str]) -> int:
  if len(argv) != 3:
    raise app.UsageError(
        "Expected two image files: python -m keras_reid.serving.client "
        "[--server=host:port --model=reid] a.jpg b.jpg")
  client = tf_serving.make_client(
      _SERVER.value, _MODEL.value, protocol=_PROTOCOL.value,
      version=_VERSION.value or None, timeout_s=_TIMEOUT_S.value,
      retries=_RETRIES.value)
  try:
    result = tf_serving.compare_files(client, argv[1], argv[2])
  except tf_serving.ServingError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(tf_serving.format_comparison(result, argv[1], argv[2]))
  return 0


if __name__ == "__main__":
  app.run(main)
