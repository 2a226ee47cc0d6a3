"""Hostile input to `python -m keras_reid.serving.test_server`: a port in use.

Guaranteed: a second test server asked for the gRPC or REST port of a running
one fails with an error naming that port (the entry point: exit status 1,
one line, within its start-up time) instead of binding beside it, where
gRPC's default SO_REUSEPORT had the kernel split requests between two
models; it holds no port afterwards, and the first server keeps serving.
Loopback only (127.0.0.1); every server started here is shut down.
"""

import os
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from keras_reid.serving.client import tf_serving as client
from keras_reid.serving.test_server import model_server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST = "127.0.0.1"
MODEL = "reid"
# Starting TensorFlow in a subprocess takes seconds, more on a busy machine.
START_S = 180


class _Doubler(tf.Module):

  @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
  def serve(self, x):
    return {"y": 2 * x}


@pytest.fixture(scope="module")
def model_base(tmp_path_factory):
  """A model base path with one version: the smallest SavedModel."""
  base = tmp_path_factory.mktemp("export") / MODEL
  module = _Doubler()
  tf.saved_model.save(module, str(base / "1"),
                      signatures={"serving_default": module.serve})
  return str(base)


@pytest.fixture(scope="module")
def running(model_base):
  server = model_server.serve({MODEL: model_base}, host=HOST)
  try:
    yield server
  finally:
    server.stop()


def _free_port():
  with socket.socket() as s:
    s.bind((HOST, 0))
    return s.getsockname()[1]


def _assert_serves(server):
  target = f"{HOST}:{server.grpc_port}"
  metadata = client.GrpcClient(target, MODEL, retries=0, timeout_s=10).metadata()
  assert metadata is not None


def _second_server(tmp_path, model_base, port, rest_api_port):
  """Runs the entry point until it exits; fails if it starts serving."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
  with open(stdout, "w") as out, open(stderr, "w") as err:
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_reid.serving.test_server",
         f"--model_name={MODEL}", f"--model_base_path={model_base}",
         f"--host={HOST}", f"--port={port}", f"--rest_api_port={rest_api_port}"],
        cwd=ROOT, env=env, stdout=out, stderr=err)
  try:
    deadline = time.monotonic() + START_S
    while process.poll() is None:
      if "TEST server" in stdout.read_text():
        pytest.fail(f"a second server started on a port in use: "
                    f"{stdout.read_text()}")
      if time.monotonic() > deadline:
        pytest.fail(f"the second server neither failed nor started in "
                    f"{START_S} s")
      time.sleep(0.2)
  finally:
    if process.poll() is None:
      process.kill()
    process.wait(timeout=30)
  return process.returncode, stderr.read_text()


def _error_line(returncode, stderr):
  assert returncode == 1, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, stderr[-3000:]
  return errors[0]


def test_second_grpc_server_on_the_port_fails(tmp_path, model_base, running):
  port = running.grpc_port
  error = _error_line(*_second_server(tmp_path, model_base, port, -1))
  assert f"gRPC port {port} on {HOST} is already in use" in error
  _assert_serves(running)


def test_second_rest_server_on_the_port_fails(tmp_path, model_base, running):
  port = running.rest_port
  error = _error_line(*_second_server(tmp_path, model_base, 0, port))
  assert f"REST port {port} on {HOST} is already in use" in error
  _assert_serves(running)


@pytest.mark.parametrize("which", ["grpc", "rest"])
def test_serve_refuses_a_port_in_use_and_frees_the_other(model_base, running,
                                                         which):
  other = _free_port()
  ports = ({"port": running.grpc_port, "rest_api_port": other}
           if which == "grpc" else
           {"port": other, "rest_api_port": running.rest_port})
  taken = running.grpc_port if which == "grpc" else running.rest_port
  try:
    second = model_server.serve({MODEL: model_base}, host=HOST, **ports)
  except OSError as e:
    assert f"port {taken} on {HOST} is already in use" in str(e)
  else:
    second.stop()
    pytest.fail(f"a second server bound the {which} port {taken} in use")
  # The port it did bind is given back.
  with socket.socket() as s:
    s.bind((HOST, other))
  _assert_serves(running)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
