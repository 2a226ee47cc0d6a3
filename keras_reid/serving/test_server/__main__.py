"""Runs the TEST model server (keras_reid.serving.test_server) by hand.

    python -m keras_reid.serving.test_server --model_name=reid \
        --model_base_path=export/reid --port=8500 --rest_api_port=8501

Not for production: deploy with tensorflow_model_server (export/README.md).
A port in use, or a model folder without a SavedModel, is one line on stderr
and exit status 1.
"""

from __future__ import annotations

from typing import Sequence

from absl import app
from absl import flags

# Before anything that imports TensorFlow, to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid import user_errors
from keras_reid.serving.test_server import model_server

_MODEL_NAME = flags.DEFINE_string("model_name", "reid",
                                  "Name clients ask for.")
_MODEL_BASE_PATH = flags.DEFINE_string(
    "model_base_path", "export/reid", "Folder with numeric version subfolders.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to bind.")
_PORT = flags.DEFINE_integer("port", 8500, "gRPC port.")
_REST_API_PORT = flags.DEFINE_integer("rest_api_port", 8501,
                                      "REST port; -1 disables REST.")


def main(argv: Sequence[str]) -> None:
  del argv
  server = model_server.serve(
      {_MODEL_NAME.value: _MODEL_BASE_PATH.value}, host=_HOST.value,
      port=_PORT.value,
      rest_api_port=None if _REST_API_PORT.value < 0 else _REST_API_PORT.value)
  print(f"TEST server (not for production): gRPC {_HOST.value}:"
        f"{server.grpc_port}, REST {server.rest_port}", flush=True)
  server.wait()


if __name__ == "__main__":
  app.run(user_errors.one_line_errors(main))
