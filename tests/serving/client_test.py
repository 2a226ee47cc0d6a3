"""Client <-> server round trips over loopback gRPC and REST.

The server is tensorflow_model_server when it is on PATH, else the test
server of keras_reid.serving.test_server (same APIs, same SavedModel).
"""

import importlib
import os
import shutil
import socket
import subprocess
import time

from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf

from keras_reid.serving.client import tf_serving as client
from keras_reid.serving.test_server import model_server as test_server

# The `python -m keras_reid.serving.client` entry point (defines its flags).
client_main = importlib.import_module("keras_reid.serving.client.__main__")

MODEL = "reid"


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(exported):
  """(grpc "host:port", rest "host:port") of a server for `exported`."""
  binary = shutil.which("tensorflow_model_server")
  if binary is None:
    running = test_server.serve({MODEL: exported.base})
    yield f"127.0.0.1:{running.grpc_port}", f"127.0.0.1:{running.rest_port}"
    running.stop()
    return
  grpc_port, rest_port = _free_port(), _free_port()
  process = subprocess.Popen([
      binary, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
      f"--model_name={MODEL}", f"--model_base_path={os.path.abspath(exported.base)}"])
  target = f"127.0.0.1:{grpc_port}"
  try:
    deadline = time.time() + 60
    while True:
      try:
        client.GrpcClient(target, MODEL, retries=0, timeout_s=2).metadata()
        break
      except client.ServingError:
        if time.time() > deadline:
          raise
        time.sleep(0.5)
    yield target, f"127.0.0.1:{rest_port}"
  finally:
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module", params=["grpc", "rest"])
def reid(request, server):
  grpc_target, rest_target = server
  target = grpc_target if request.param == "grpc" else rest_target
  return client.make_client(target, MODEL, protocol=request.param,
                            timeout_s=30)


@pytest.fixture(scope="module")
def loaded(exported):
  return tf.saved_model.load(exported.path)


def test_round_trip_matches_the_saved_model(reid, exported, loaded):
  images = exported.images(0, 2, 70, 30)
  want = loaded.signatures["serving_default"](images=tf.constant(images))
  got = reid.embed(images)
  assert got.shape == (2, 256) and got.dtype == np.float32
  np.testing.assert_allclose(got, want["embeddings"].numpy(), atol=1e-5)

  files = [tf.io.encode_png(i).numpy() for i in images]
  np.testing.assert_allclose(reid.embed_files(files), got, atol=1e-5)

  probability = reid.verify(images, images[::-1])
  want = loaded.signatures["verify"](images_a=tf.constant(images),
                                     images_b=tf.constant(images[::-1]))
  assert probability.shape == (2,)
  np.testing.assert_allclose(probability, want["same_probability"].numpy(),
                             atol=1e-5)


def test_metadata_lists_the_signatures(reid):
  metadata = reid.metadata()
  assert sorted(metadata) == ["serve_bytes", "serving_default", "verify"]
  assert metadata["serving_default"]["inputs"]["images"][0] == "uint8"
  assert metadata["serve_bytes"]["inputs"]["images"] == ("string", [-1])
  assert metadata["verify"]["outputs"]["same_probability"] == ("float32", [-1])


def _png(exported):
  return tf.io.encode_png(exported.images(0, 1, 8, 8)[0]).numpy()


BAD_REQUESTS = {
    "dtype": lambda c, e: c.embed(np.zeros((1, 8, 8, 3), np.float32)),
    "rank": lambda c, e: c.embed(np.zeros((8, 8, 3), np.uint8)),
    "empty": lambda c, e: c.embed_files([]),
    "undecodable": lambda c, e: c.embed_files([_png(e), b"not an image"]),
    "oversized": lambda c, e: c.embed(np.zeros((1, 4097, 1, 3), np.uint8)),
    "verify_batch": lambda c, e: c.verify(np.zeros((2, 8, 8, 3), np.uint8),
                                          np.zeros((1, 8, 8, 3), np.uint8)),
}
MESSAGES = {"dtype": "uint8", "rank": "rank 4", "empty": "empty batch",
            "undecodable": "could not decode", "oversized": "too large",
            "verify_batch": "same batch size"}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_are_invalid_argument_and_server_keeps_serving(
    reid, exported, case):
  with pytest.raises(client.InvalidRequestError) as error:
    BAD_REQUESTS[case](reid, exported)
  assert MESSAGES[case] in str(error.value)
  assert "Request rejected" in str(error.value)
  # The server is still up and answers a good request.
  assert reid.embed(exported.images(1, 1, 64, 32)).shape == (1, 256)


def test_missing_model_version_and_signature(server, exported):
  grpc_target, rest_target = server
  images = exported.images(1, 1, 64, 32)
  for protocol, target in (("grpc", grpc_target), ("rest", rest_target)):
    with pytest.raises(client.ModelNotFoundError, match="'nope'"):
      client.make_client(target, "nope", protocol=protocol).embed(images)
    with pytest.raises(client.ModelNotFoundError, match="version 99"):
      client.make_client(target, MODEL, protocol=protocol,
                         version=99).embed(images)
    with pytest.raises(client.SignatureNotFoundError, match="embed_v2"):
      client.make_client(target, MODEL, protocol=protocol).predict(
          {"images": images}, "embed_v2")
    # Version 1 exists.
    assert client.make_client(target, MODEL, protocol=protocol,
                              version=1).embed(images).shape == (1, 256)


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_server_down_is_unavailable_after_retries(protocol, monkeypatch):
  sleeps = []
  monkeypatch.setattr(client.time, "sleep", sleeps.append)
  down = client.make_client(f"127.0.0.1:{_free_port()}", MODEL,
                            protocol=protocol, retries=2, backoff_s=0.1,
                            timeout_s=5)
  with pytest.raises(client.ServerUnavailableError, match="is running"):
    down.embed(np.zeros((1, 8, 8, 3), np.uint8))
  assert sleeps == [0.1, 0.2]  # two retries, exponential backoff


def test_retries_stop_at_the_first_success():
  failures = iter(["UNAVAILABLE", "RESOURCE_EXHAUSTED"])

  def call():
    code = next(failures, None)
    if code:
      raise RuntimeError(code)
    return "ok"
  assert client._with_retries(call, retries=3, backoff_s=0.0,
                              code_of=str) == "ok"
  # A non-retryable failure is raised at once.
  with pytest.raises(RuntimeError, match="INVALID_ARGUMENT"):
    client._with_retries(
        lambda: (_ for _ in ()).throw(RuntimeError("INVALID_ARGUMENT")),
        retries=3, backoff_s=0.0, code_of=str)


def test_grpc_deadline(server, exported):
  slow = client.GrpcClient(server[0], MODEL, timeout_s=1e-6, retries=0)
  with pytest.raises(client.DeadlineExceededError, match="deadline"):
    slow.embed(exported.images(0, 64, 64, 32))


def test_cli_prints_embeddings_distance_and_probability(
    server, exported, tmp_path, capsys):
  paths = []
  images = exported.images(2, 2, 90, 40)
  for n, image in enumerate(images):
    paths.append(str(tmp_path / f"{n}.png"))
    tf.io.write_file(paths[-1], tf.io.encode_png(image))
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  with flagsaver.flagsaver(server=server[0], model=MODEL):
    assert client_main.main(["client"] + paths) == 0
  out = capsys.readouterr().out
  assert f"embedding {paths[0]}" in out and f"embedding {paths[1]}" in out
  distance = float(out.split("euclidean distance: ")[1].split()[0])
  probability = float(out.split("same-person probability: ")[1].split()[0])
  # Oracle: the SavedModel called in this process on the same pixels (PNG is
  # lossless); the CLI prints 4 decimals.
  loaded = tf.saved_model.load(exported.path)
  want = loaded.signatures["serving_default"](images=tf.constant(images))
  want = want["embeddings"].numpy()
  assert distance == pytest.approx(np.linalg.norm(want[0] - want[1]),
                                   abs=1e-4)
  want_p = loaded.signatures["verify"](images_a=tf.constant(images[:1]),
                                       images_b=tf.constant(images[1:]))
  assert probability == pytest.approx(
      float(want_p["same_probability"].numpy()[0]), abs=1e-4)
  assert distance > 0  # two different images
  with flagsaver.flagsaver(server=server[0], model="nope"):
    assert client_main.main(["client"] + paths) == 1
  assert "Not served" in capsys.readouterr().err


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
