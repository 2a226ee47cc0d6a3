"""A TEST server speaking TF-Serving's gRPC and REST APIs, backed by SavedModels.

This is not a production server: deploy with tensorflow_model_server (see
export/README.md). It exists because tensorflow_model_server cannot be
installed on the development machines (it ships as Docker images and Google's
apt repository only), and the client and the SavedModel's input checks must
still be tested end to end over a real gRPC connection.

It implements PredictionService.Predict and GetModelMetadata (the generated
servicer of tensorflow-serving-api) and the REST endpoints
`POST /v1/models/<name>[/versions/<v>]:predict` (columnar "inputs" format) and
`GET /v1/models/<name>[/versions/<v>]/metadata`, with TF-Serving's status
codes and, where the client depends on them, its error messages:
NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for an unknown
signature, missing inputs, a wrong dtype, and any InvalidArgumentError raised
by the SavedModel's graph assertions. Every REST request gets an answer: a
body TF-Serving would refuse (not a JSON object, a signature_name that is not
a string, nesting too deep, ragged lists, bad base64; see rest_json.py) is
HTTP 400 with {"error": "<reason>"}, as TF-Serving answers, and a bug of this
server HTTP 500 with its message, never a dropped connection.

It serves every numeric version folder under a model's base path, loaded
once at start. Run it by hand:

    python -m keras_reid.serving.test_server --model_name=reid \
        --model_base_path=export/reid --port=8500 --rest_api_port=8501
"""

from __future__ import annotations

import concurrent.futures
import errno
import http.server
import json
import os
import re
import socket
import threading
from typing import Mapping, Optional

from absl import logging
from google.protobuf import json_format
import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from keras_reid.serving.test_server import rest_json


# The largest request or response either endpoint takes.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class ServingStatusError(Exception):
  """A request failed with a gRPC status code (a grpc.StatusCode)."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code
    self.message = message


class SavedModelRepository:
  """Loaded SavedModels: model name -> version -> (loaded, SignatureDefs).

  Args:
    models: model name -> base path whose numeric subfolders are versions.
  """

  def __init__(self, models: Mapping[str, str]):
    self._models: dict[str, dict[int, tuple]] = {}
    for name, base in models.items():
      if not os.path.isdir(base):
        raise FileNotFoundError(
            f"Model base path {base!r} of model {name!r} "
            + ("is a file" if os.path.exists(base) else "does not exist")
            + "; expected a folder with numeric version subfolders, as "
            "python -m keras_reid.export --export_dir=<base path> writes.")
      versions = {}
      for entry in os.listdir(base):
        path = os.path.join(base, entry)
        if re.fullmatch(r"\d+", entry) and os.path.isdir(path):
          versions[int(entry)] = (tf.saved_model.load(path),
                                  _read_signature_defs(path))
      if not versions:
        raise ValueError(f"No numeric version folder under {base!r} for model "
                         f"{name!r}; export one with python -m keras_reid.export.")
      self._models[name] = versions
      logging.info("Serving model %r versions %s from %s", name,
                   sorted(versions), base)

  def resolve(self, name: str, version: Optional[int]) -> tuple[int, object, dict]:
    """Returns (version, loaded SavedModel, SignatureDefs) or raises NOT_FOUND."""
    versions = self._models.get(name)
    if versions is None:
      what = f"Latest({name})" if not version else f"Specific({name}, {version})"
      raise ServingStatusError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: {what}")
    if not version:
      version = max(versions)
    if version not in versions:
      raise ServingStatusError(
          grpc.StatusCode.NOT_FOUND,
          f"Servable not found for request: Specific({name}, {version})")
    return (version,) + versions[version]

  def predict(self, name: str, version: Optional[int], signature: str,
              inputs: Mapping[str, np.ndarray]) -> tuple[int, dict[str, np.ndarray]]:
    """Runs a signature. Returns (version served, outputs by name)."""
    version, loaded, signature_defs = self.resolve(name, version)
    signature = signature or "serving_default"
    if signature not in signature_defs or signature.startswith("__"):
      raise ServingStatusError(
          grpc.StatusCode.INVALID_ARGUMENT,
          f'Serving signature name: "{signature}" not found in signature def')
    expected = signature_defs[signature].inputs
    missing = sorted(set(expected) - set(inputs))
    extra = sorted(set(inputs) - set(expected))
    if missing or extra:
      raise ServingStatusError(
          grpc.StatusCode.INVALID_ARGUMENT,
          f"Signature {signature!r} expects inputs {sorted(expected)}; "
          f"missing {missing}, unexpected {extra}")
    feeds = {}
    for key, value in inputs.items():
      dtype = tf.dtypes.as_dtype(expected[key].dtype)
      value = np.asarray(value)
      got = tf.dtypes.as_dtype(value.dtype) if value.dtype != object else tf.string
      if got != dtype:
        # TF-Serving's wording for a feed of the wrong type.
        raise ServingStatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Expects arg {key!r} to be {dtype.name} but {got.name} is "
            "provided")
      feeds[key] = tf.constant(value, dtype)
    try:
      outputs = loaded.signatures[signature](**feeds)
    except tf.errors.InvalidArgumentError as e:
      raise ServingStatusError(grpc.StatusCode.INVALID_ARGUMENT,
                               e.message) from e
    except (ValueError, TypeError) as e:
      # Raised before the graph runs, e.g. a rank that the signature fixes.
      raise ServingStatusError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from e
    except tf.errors.OpError as e:
      raise ServingStatusError(grpc.StatusCode.INTERNAL, e.message) from e
    return version, {k: v.numpy() for k, v in outputs.items()}


def _read_signature_defs(path: str) -> dict:
  """SignatureDefs of a SavedModel's "serve" MetaGraph, from saved_model.pb."""
  proto = saved_model_pb2.SavedModel()
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    proto.ParseFromString(f.read())
  for meta_graph in proto.meta_graphs:
    if "serve" in meta_graph.meta_info_def.tags:
      return dict(meta_graph.signature_def)
  raise ValueError(f"SavedModel {path!r} has no 'serve' MetaGraph.")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """gRPC PredictionService (Predict, GetModelMetadata) over a repository."""

  def __init__(self, repository: SavedModelRepository):
    self._repository = repository

  def Predict(self, request, context):  # pylint: disable=invalid-name
    spec = request.model_spec
    try:
      if spec.WhichOneof("version_choice") == "version_label":
        raise ServingStatusError(grpc.StatusCode.UNIMPLEMENTED,
                                 "version_label is not supported by the test "
                                 "server; use version.")
      inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
      version, outputs = self._repository.predict(
          spec.name, spec.version.value or None, spec.signature_name, inputs)
    except ServingStatusError as e:
      context.abort(e.code, e.message)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = spec.name
    response.model_spec.version.value = version
    response.model_spec.signature_name = spec.signature_name or "serving_default"
    for key, value in outputs.items():
      if not request.output_filter or key in request.output_filter:
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    return response

  def GetModelMetadata(self, request, context):  # pylint: disable=invalid-name
    spec = request.model_spec
    try:
      if list(request.metadata_field) != ["signature_def"]:
        raise ServingStatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "Metadata field(s) must be exactly ['signature_def']; got "
            f"{list(request.metadata_field)}")
      version, _, signature_defs = self._repository.resolve(
          spec.name, spec.version.value or None)
    except ServingStatusError as e:
      context.abort(e.code, e.message)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = spec.name
    response.model_spec.version.value = version
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for name, sig in signature_defs.items():
      sig_map.signature_def[name].CopyFrom(sig)
    response.metadata["signature_def"].Pack(sig_map)
    return response


_HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400,
                grpc.StatusCode.NOT_FOUND: 404,
                grpc.StatusCode.UNIMPLEMENTED: 501,
                grpc.StatusCode.INTERNAL: 500}
_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(/versions/(?P<version>\d+))?"
    r"(?P<verb>:predict|/metadata)?$")


class _RestHandler(http.server.BaseHTTPRequestHandler):
  repository: SavedModelRepository  # set on the subclass made by serve()

  def log_message(self, fmt, *args):  # quiet: absl logging at debug level
    logging.debug("REST " + fmt, *args)

  def _reply(self, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def _route(self, method: str):
    match = _PATH.match(self.path)
    try:
      if not match or (method == "POST") != (match["verb"] == ":predict"):
        raise ServingStatusError(grpc.StatusCode.NOT_FOUND,
                                 f"Malformed request: {method} {self.path}")
      name, version = match["name"], int(match["version"] or 0) or None
      if method == "GET":
        version, _, signature_defs = self.repository.resolve(name, version)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in signature_defs.items():
          sig_map.signature_def[key].CopyFrom(sig)
        return self._reply(200, {
            "model_spec": {"name": name, "version": str(version)},
            "metadata": {"signature_def": json_format.MessageToDict(sig_map)}})
      body = rest_json.parse_json(self._read_body())
      signature = rest_json.signature_name(body)
      _, _, signature_defs = self.repository.resolve(name, version)
      if signature not in signature_defs:
        raise ServingStatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f'Serving signature name: "{signature}" not found in signature def')
      inputs = rest_json.inputs(body, {
          key: tf.dtypes.as_dtype(info.dtype)
          for key, info in signature_defs[signature].inputs.items()})
      _, outputs = self.repository.predict(name, version, signature, inputs)
      outputs = {k: v.tolist() for k, v in outputs.items()}
      # Like TF-Serving: a single output is returned without its name.
      self._reply(200, {"outputs": next(iter(outputs.values()))
                        if len(outputs) == 1 else outputs})
    except ServingStatusError as e:
      self._reply(_HTTP_STATUS.get(e.code, 500), {"error": e.message})
    except rest_json.RequestError as e:
      self._reply(400, {"error": str(e)})
    except Exception as e:  # pylint: disable=broad-except
      # A bug of this server: still an answer, never a dropped connection.
      logging.exception("REST %s %s failed", method, self.path)
      self._reply(500, {"error": f"Internal error: {type(e).__name__}: {e}"})

  def _read_body(self) -> bytes:
    """The request body, as long as Content-Length says (at most
    MAX_MESSAGE_BYTES, the gRPC endpoint's limit too)."""
    length = self.headers.get("Content-Length")
    try:
      size = int(length)
    except (TypeError, ValueError):
      size = -1
    if size < 0:
      got = "missing" if length is None else f"{length!r}"
      raise rest_json.RequestError(
          f"Content-Length header {got}: expected the body's size in bytes "
          "(a predict request needs a JSON body)")
    if size > MAX_MESSAGE_BYTES:
      raise rest_json.RequestError(
          f"Request body of {size} bytes exceeds the limit of "
          f"{MAX_MESSAGE_BYTES} bytes")
    return self.rfile.read(size)

  def do_GET(self):  # pylint: disable=invalid-name
    self._route("GET")

  def do_POST(self):  # pylint: disable=invalid-name
    self._route("POST")


class TestServer:
  """A running test server; `stop()` shuts both endpoints down.

  Attributes:
    grpc_port: the bound gRPC port.
    rest_port: the bound REST port (None when REST is off).
  """

  def __init__(self, grpc_server, grpc_port: int, http_server, rest_port):
    self._grpc_server = grpc_server
    self._http_server = http_server
    self.grpc_port = grpc_port
    self.rest_port = rest_port

  def stop(self) -> None:
    self._grpc_server.stop(grace=None)
    if self._http_server is not None:
      self._http_server.shutdown()
      self._http_server.server_close()

  def wait(self) -> None:
    self._grpc_server.wait_for_termination()


def _port_in_use(protocol: str, host: str, port: int) -> OSError:
  return OSError(
      f"The {protocol} port {port} on {host} is already in use (another server, "
      "or a test server started earlier): stop it, or choose another port "
      "(0 picks a free one).")


def _check_port_free(protocol: str, host: str, port: int) -> None:
  """Raises OSError naming `port` if a server listens on it.

  gRPC logs its own bind failure to stderr before failing, so the port is
  tried first with a plain socket. SO_REUSEADDR, as gRPC and http.server
  set it, lets it bind over connections closing on the port, never over a
  listening server.
  """
  if port == 0:
    return
  try:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
  except socket.gaierror as e:
    raise OSError(f"Cannot bind the {protocol} port to host {host!r}: {e}; "
                  "expected an address or a name of this machine.") from e
  with socket.socket(family, kind, proto) as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      probe.bind(address)
    except OSError as e:
      if e.errno == errno.EADDRINUSE:
        raise _port_in_use(protocol, host, port) from e
      raise


def serve(models: Mapping[str, str], *, host: str = "127.0.0.1",
          port: int = 0, rest_api_port: Optional[int] = 0,
          max_workers: int = 4) -> TestServer:
  """Starts the test server in background threads.

  Both ports are bound before the models load, so a port in use fails at
  once.

  Args:
    models: model name -> base path (numeric version folders inside).
    host: interface to bind; loopback by default.
    port: gRPC port; 0 picks a free one.
    rest_api_port: REST port; 0 picks a free one, None disables REST.
    max_workers: gRPC worker threads.

  Returns:
    The running TestServer, with the ports it bound.

  Raises:
    OSError: a port is in use (the message names it) or cannot be bound; a
      model's base path is not a folder (FileNotFoundError, naming it).
    ValueError: a model's base path has no SavedModel version folder.
  """
  # gRPC sets SO_REUSEPORT by default: a second server on a port in use
  # would bind too, and the kernel would split the requests between them.
  server = grpc.server(
      concurrent.futures.ThreadPoolExecutor(max_workers=max_workers),
      options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
               ("grpc.so_reuseport", 0)])
  http_server = None
  try:
    _check_port_free("gRPC", host, port)
    try:
      bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpcio >= 1.60 raises where older ones return 0
      bound = 0
    if not bound:
      raise _port_in_use("gRPC", host, port)
    rest_port = None
    if rest_api_port is not None:
      handler = type("RestHandler", (_RestHandler,), {})
      try:
        http_server = http.server.ThreadingHTTPServer((host, rest_api_port),
                                                      handler)
      except OSError as e:
        if e.errno == errno.EADDRINUSE:
          raise _port_in_use("REST", host, rest_api_port) from e
        raise
      rest_port = http_server.server_address[1]
    repository = SavedModelRepository(models)
  except BaseException:
    # An unstarted gRPC server holds its port until the process exits; for
    # the moment it runs, one without services only answers UNIMPLEMENTED.
    server.start()
    server.stop(grace=None).wait()
    if http_server is not None:
      http_server.server_close()
    raise
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionServicer(repository), server)
  server.start()
  if http_server is not None:
    handler.repository = repository
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
  logging.info("Test server: gRPC %s:%d, REST %s", host, bound, rest_port)
  return TestServer(server, bound, http_server, rest_port)
