"""Hostile input to `python -m keras_reid.serving.test_server`: a port in use,
REST bodies TF-Serving refuses.

Guaranteed: a second test server asked for the gRPC or REST port of a running
one fails with an error naming that port (the entry point: exit status 1,
one line, within its start-up time) instead of binding beside it, where
gRPC's default SO_REUSEPORT had the kernel split requests between two
models; it holds no port afterwards, and the first server keeps serving.

Every REST predict request gets an answer: a body that is not a JSON object,
a signature_name that is not a string, JSON nested deeper than an input can
be, ragged lists, leaves of the wrong type and base64 that does not decode are
HTTP 400 with TF-Serving's {"error": "<reason>"} naming the reason (they
dropped the connection, or bad base64 was decoded leniently to other bytes),
and the server keeps serving. A model base path that does not exist or is a
file is one line naming it.
Loopback only (127.0.0.1); every server started here is shut down.
"""

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from keras_reid.serving.client import tf_serving as client
from keras_reid.serving.test_server import model_server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST = "127.0.0.1"
MODEL = "reid"
BYTES_MODEL = "lengths"
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


class _Lengths(tf.Module):

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="b")])
  def serve(self, b):
    return {"n": tf.strings.length(b)}


@pytest.fixture(scope="module")
def bytes_base(tmp_path_factory):
  """A model with a string input: the byte length of each string."""
  base = tmp_path_factory.mktemp("export") / BYTES_MODEL
  module = _Lengths()
  tf.saved_model.save(module, str(base / "1"),
                      signatures={"serving_default": module.serve})
  return str(base)


@pytest.fixture(scope="module")
def running(model_base, bytes_base):
  server = model_server.serve({MODEL: model_base, BYTES_MODEL: bytes_base},
                              host=HOST)
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


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_base_path_that_is_no_folder_is_one_line(tmp_path, kind):
  base = tmp_path / "export" / MODEL
  if kind == "file":
    base.parent.mkdir()
    base.write_text("not a folder")
  error = _error_line(*_second_server(tmp_path, base, 0, 0))
  what = "does not exist" if kind == "missing" else "is a file"
  assert error.startswith(f"error: Model base path '{base}' of model "
                          f"'{MODEL}' {what}; expected a folder with numeric "
                          "version subfolders"), error


def _post(server, model, body: bytes):
  """(HTTP status, parsed JSON reply) of a REST predict request."""
  connection = http.client.HTTPConnection(HOST, server.rest_port, timeout=60)
  try:
    connection.request("POST", f"/v1/models/{model}:predict", body=body)
    response = connection.getresponse()
    return response.status, json.loads(response.read())
  finally:
    connection.close()


def _nested(depth):
  return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize("model, body, reason", [
    # Not an object.
    (MODEL, '"hello"', r'JSON Value: "hello" Is not object.*got a JSON String'),
    (MODEL, "[[1, 2]]", r"Is not object.*got a JSON Array"),
    (MODEL, "3", r"Is not object.*got a JSON Number"),
    (MODEL, "", r"The document is empty"),
    (MODEL, '{"inputs": [[1, 2]', r"JSON Parse error"),
    # signature_name of another type.
    (MODEL, '{"signature_name": ["serving_default"], "inputs": [[1, 2]]}',
     r"'signature_name' key must be a string value, got a JSON Array"),
    (MODEL, '{"signature_name": {"a": 1}, "inputs": [[1, 2]]}',
     r"'signature_name' key must be a string value, got a JSON Object"),
    (MODEL, '{"signature_name": 7, "inputs": [[1, 2]]}',
     r"'signature_name' key must be a string value, got a JSON Number"),
    # Nested too deeply: for Python's parser, for NumPy.
    (MODEL, '{"inputs": ' + _nested(100_000) + "}",
     r"nested too deeply to parse"),
    (MODEL, '{"inputs": ' + _nested(65) + "}",
     r"Input 'x' is nested more than 64 lists deep"),
    # Ragged.
    (MODEL, '{"inputs": [[1, 2], [3]]}',
     r"Input 'x': Encountered list at unexpected size: 1 at level: 1 "
     r"expected size: 2: the input is ragged \(shape \[2, 2\]"),
    (MODEL, '{"inputs": [[1, 2], 3]}',
     r"JSON Value: 3 found at level 1 .* the input is ragged"),
    (MODEL, '{"inputs": [[1, [2]], [3, 4]]}',
     r"Encountered list at unexpected level: 2 .* ragged"),
    (BYTES_MODEL, '{"inputs": [{"b64": "aGk="}, [{"b64": "aGk="}]]}',
     r"Input 'b': Encountered list at unexpected level.* ragged"),
    # Bad base64.
    (BYTES_MODEL, '{"inputs": [{"b64": "@@@@"}]}',
     r'Input \'b\': Unable to base64 decode \{"b64": "@@@@"\}'),
    (BYTES_MODEL, '{"inputs": [{"b64": "aGk"}]}',
     r"Unable to base64 decode .*Incorrect padding"),
    (BYTES_MODEL, '{"inputs": [{"b64": 5}]}',
     r"not formatted correctly for base64 data"),
    (BYTES_MODEL, '{"inputs": [{"b64": "aGk=", "x": 1}]}',
     r"not formatted correctly for base64 data"),
    # Leaves of the wrong JSON type or out of the dtype's range.
    (MODEL, '{"inputs": null}', r"JSON Value: null Type: Null is not of "
     r"expected type: float32"),
    (MODEL, '{"inputs": [[true, 1]]}', r"JSON Value: true Type: True is not"),
    (MODEL, '{"inputs": [["a", 1]]}', r'JSON Value: "a" Type: String is not'),
    (MODEL, '{"inputs": [[1e39, 1]]}',
     r"Cannot convert JSON value: 1e\+39 to float32 without loss"),
    (MODEL, '{"inputs": [[1' + "0" * 400 + ', 1]]}',
     r"to float32 without loss of precision"),
    (BYTES_MODEL, '{"inputs": [3]}', r"JSON Value: 3 Type: Number is not of "
     r"expected type: string"),
    (MODEL, '{"instances": [[1, 2]]}', r"Missing 'inputs' key"),
])
def test_rest_refuses_a_bad_body_with_400_and_the_reason(running, model, body,
                                                         reason):
  status, reply = _post(running, model, body.encode())
  assert status == 400, reply
  assert set(reply) == {"error"}, reply
  assert re.search(reason, reply["error"]), reply["error"]
  # Still serving.
  assert _post(running, MODEL, b'{"inputs": [[1, 2.5]]}') == (
      200, {"outputs": [[2.0, 5.0]]})


@pytest.mark.parametrize("length, reason", [
    (None, r"Content-Length header missing"),
    ("-5", r"Content-Length header '-5'"),
    ("many", r"Content-Length header 'many'"),
    (str(2**40), r"Request body of 1099511627776 bytes exceeds the limit"),
])
def test_rest_refuses_a_bad_content_length(running, length, reason):
  request = f"POST /v1/models/{MODEL}:predict HTTP/1.0\r\nHost: {HOST}\r\n"
  if length is not None:
    request += f"Content-Length: {length}\r\n"
  with socket.create_connection((HOST, running.rest_port), timeout=60) as s:
    s.sendall(request.encode() + b"\r\n")
    reply = b""
    while chunk := s.recv(65536):
      reply += chunk
  head, _, body = reply.partition(b"\r\n\r\n")
  assert head.startswith(b"HTTP/1.0 400 "), reply
  assert re.search(reason, json.loads(body)["error"]), reply


def test_rest_reads_what_tf_serving_reads(running):
  """The strict parsing still takes every well-formed body."""
  assert _post(running, BYTES_MODEL,
               b'{"inputs": [{"b64": "aGVsbG8="}, "h\u00e9", {"b64": ""}]}'
               ) == (200, {"outputs": [5, 3, 0]})
  assert _post(running, BYTES_MODEL, b'{"inputs": {"b": [{"b64": "aGk="}]}}'
               ) == (200, {"outputs": [2]})
  # Integers and floats for a float input, NaN as TF-Serving's parser
  # reads it.
  status, reply = _post(running, MODEL,
                        b'{"signature_name": "", "inputs": [[1, 0.1], '
                        b'[NaN, -3]]}')
  assert status == 200 and reply["outputs"][0] == [2.0, 2 * float(
      np.float32(0.1))]
  assert np.isnan(reply["outputs"][1][0]) and reply["outputs"][1][1] == -6.0


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
