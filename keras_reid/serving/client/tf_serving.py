"""Clients for a keras-reid model served by TF-Serving: gRPC, REST and a CLI.

    python -m keras_reid.serving.client --server=localhost:8500 --model=reid \
        a.jpg b.bmp

sends each file's bytes to the serve_bytes signature and prints a summary
of each embedding. `--protocol=rest --server=localhost:8501` uses the REST
API instead.

No TensorFlow: the gRPC requests are tensorflow-serving-api's protos, loaded
without TensorFlow's runtime (protos.py); files travel as their bytes and
the server decodes them (its decoder reads every BMP the package reads).

Both clients speak to the signatures written by keras_reid.serving.saved_model
(serving_default, serve_bytes, verify); `predict` reaches any signature.
Every call has a deadline; UNAVAILABLE (server down or restarting) and
RESOURCE_EXHAUSTED are retried with exponential backoff, then raised as
ServerUnavailableError. Errors are ServingError subclasses whose message names
the server, model, version and signature involved and what to check.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from typing import Callable, Mapping, Optional, Sequence

from absl import logging
from google.protobuf import json_format
import grpc
import numpy as np

from keras_reid.serving.client import protos

get_model_metadata_pb2 = protos.get_model_metadata_pb2
predict_pb2 = protos.predict_pb2
prediction_service_pb2_grpc = protos.prediction_service_pb2_grpc

DEFAULT_SIGNATURE = "serving_default"
# Why a keras-reid model lacks "verify" (keras_reid.serving.saved_model's
# VERIFY_UNAVAILABLE; this module imports no TensorFlow).
NO_VERIFY = (
    "A keras-reid model without 'verify' has no verification head: its run "
    "was trained with config.loss.ver_weight=0. Compare embeddings instead "
    "(the dot product of embed()'s unit vectors is their cosine "
    "similarity), or serve a run trained with loss.ver_weight > 0.")
# 64 uint8 images of 512x256 are 25 MB; gRPC's default limit is 4 MB.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class ServingError(RuntimeError):
  """A request to the model server failed; the message says why."""


class ServerUnavailableError(ServingError):
  """The server could not be reached (down, wrong address, or overloaded)."""


class ModelNotFoundError(ServingError):
  """The server does not serve this model name or version."""


class SignatureNotFoundError(ServingError):
  """The model has no signature of this name."""


class InvalidRequestError(ServingError):
  """The server rejected the inputs (dtype, shape, empty batch, bad bytes)."""


class DeadlineExceededError(ServingError):
  """The server did not answer within the deadline."""


def _describe(server: str, model: str, version: Optional[int],
              signature: Optional[str]) -> str:
  what = f"model {model!r}, " + (
      f"version {version}" if version else "latest version")
  if signature:
    what += f", signature {signature!r}"
  return f"{what} at {server}"


def _classify(code: str, message: str, where: str) -> ServingError:
  """Turns a server status (gRPC code name) into the matching ServingError."""
  if code == "UNAVAILABLE":
    return ServerUnavailableError(
        f"Server unreachable for {where}: {message}. Check that the model "
        "server is running and that --server is its host:port (gRPC 8500, "
        "REST 8501 by default).")
  if code == "NOT_FOUND":
    return ModelNotFoundError(
        f"Not served: {where}: {message}. Check the model name and version "
        "against the server's models.config and its model_base_path folders.")
  if code == "DEADLINE_EXCEEDED":
    return DeadlineExceededError(
        f"No answer within the deadline for {where}: {message}. Raise "
        "timeout_s or send smaller batches.")
  if code == "INVALID_ARGUMENT" and "not found in signature def" in message:
    return SignatureNotFoundError(
        f"Unknown signature for {where}: {message}. keras-reid exports "
        "'serving_default', 'serve_bytes' and 'verify'; `metadata()` lists "
        "what the server has.")
  if code == "INVALID_ARGUMENT":
    return InvalidRequestError(f"Request rejected for {where}: {message}")
  return ServingError(f"{code} from {where}: {message}")


_RETRYABLE = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")


def _with_retries(call: Callable[[], object], *, retries: int,
                  backoff_s: float, code_of: Callable[[Exception], str]):
  """Runs `call`, retrying retryable failures with exponential backoff."""
  for attempt in range(retries + 1):
    try:
      return call()
    except Exception as e:  # pylint: disable=broad-except
      code = code_of(e)
      if code not in _RETRYABLE or attempt == retries:
        raise
      delay = backoff_s * 2**attempt
      logging.warning("Attempt %d failed with %s; retrying in %.2fs.",
                      attempt + 1, code, delay)
      time.sleep(delay)


class _Client:
  """What the gRPC and REST clients share: the keras-reid signatures."""

  def predict(self, inputs: Mapping[str, np.ndarray],
              signature: str = DEFAULT_SIGNATURE) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def embed(self, images: np.ndarray) -> np.ndarray:
    """uint8 [B, H, W, 3] RGB -> float32 [B, D] L2-normalised embeddings."""
    images = np.asarray(images)
    return self.predict({"images": images}, "serving_default")["embeddings"]

  def embed_files(self, contents: Sequence[bytes]) -> np.ndarray:
    """Encoded JPEG/PNG/BMP files (bytes) [B] -> float32 [B, D] embeddings."""
    contents = np.array(list(contents), dtype=object)
    return self.predict({"images": contents}, "serve_bytes")["embeddings"]

  def verify(self, images_a: np.ndarray, images_b: np.ndarray) -> np.ndarray:
    """Two uint8 [B, H, W, 3] batches -> float32 [B] same-person probability.

    Raises:
      SignatureNotFoundError: the served model has no "verify" signature:
        it was exported without a verification head (the message says so
        and what to use instead).
    """
    try:
      return self.predict({"images_a": np.asarray(images_a),
                           "images_b": np.asarray(images_b)},
                          "verify")["same_probability"]
    except SignatureNotFoundError as e:
      raise SignatureNotFoundError(f"{e} {NO_VERIFY}") from e


class GrpcClient(_Client):
  """Client for TF-Serving's gRPC PredictionService.

  Args:
    server: "host:port" of the gRPC endpoint (TF-Serving's --port, 8500).
    model: the model name (models.config `name`).
    version: a model version, or None for the latest the server has.
    timeout_s: deadline of each attempt, in seconds.
    retries: extra attempts after UNAVAILABLE / RESOURCE_EXHAUSTED.
    backoff_s: delay before the first retry; doubles each retry.
  """

  def __init__(self, server: str, model: str, *, version: Optional[int] = None,
               timeout_s: float = 10.0, retries: int = 2,
               backoff_s: float = 0.2):
    self.server = server
    self.model = model
    self.version = version
    self.timeout_s = timeout_s
    self.retries = retries
    self.backoff_s = backoff_s
    self._channel = grpc.insecure_channel(server, options=[
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(
        self._channel)

  def close(self) -> None:
    self._channel.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def _call(self, method, request, signature: Optional[str]):
    try:
      return _with_retries(
          lambda: method(request, timeout=self.timeout_s),
          retries=self.retries, backoff_s=self.backoff_s,
          code_of=lambda e: (e.code().name if isinstance(e, grpc.RpcError)
                             else ""))
    except grpc.RpcError as e:
      raise _classify(
          e.code().name, e.details() or "",
          _describe(self.server, self.model, self.version, signature)) from e

  def _set_spec(self, spec, signature: Optional[str]) -> None:
    spec.name = self.model
    if self.version:
      spec.version.value = int(self.version)
    if signature:
      spec.signature_name = signature

  def predict(self, inputs: Mapping[str, np.ndarray],
              signature: str = DEFAULT_SIGNATURE) -> dict[str, np.ndarray]:
    """Runs one signature. Returns its outputs as NumPy arrays by name."""
    request = predict_pb2.PredictRequest()
    self._set_spec(request.model_spec, signature)
    for name, value in inputs.items():
      # An object array holds encoded files (bytes): DT_STRING, even empty.
      request.inputs[name].CopyFrom(protos.to_tensor_proto(value))
    response = self._call(self._stub.Predict, request, signature)
    return {k: protos.to_ndarray(v) for k, v in response.outputs.items()}

  def metadata(self) -> dict[str, dict]:
    """Signature name -> {"inputs": {name: (dtype, shape)}, "outputs": ...}."""
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    self._set_spec(request.model_spec, None)
    request.metadata_field.append("signature_def")
    response = self._call(self._stub.GetModelMetadata, request, None)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    return summarize_signatures(sig_map)


def summarize_signatures(sig_map) -> dict[str, dict]:
  """SignatureDefMap proto -> {name: {"inputs": {name: (dtype, shape)},
  "outputs": ...}}; shape is None for unknown rank, -1 for unknown sizes."""
  def tensors(infos):
    return {k: (protos.dtype_name(v.dtype),
                None if v.tensor_shape.unknown_rank
                else [d.size for d in v.tensor_shape.dim])
            for k, v in infos.items()}
  return {name: {"inputs": tensors(s.inputs), "outputs": tensors(s.outputs)}
          for name, s in sig_map.signature_def.items()
          if not name.startswith("__")}


_HTTP_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND",
               408: "DEADLINE_EXCEEDED", 429: "RESOURCE_EXHAUSTED",
               503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def _to_json(value: np.ndarray):
  if value.dtype == object or value.dtype.kind in "SU":
    def enc(v):
      v = v.encode() if isinstance(v, str) else bytes(v)
      return {"b64": base64.b64encode(v).decode("ascii")}
    return np.vectorize(enc, otypes=[object])(value).tolist()
  return value.tolist()


class RestClient(_Client):
  """Client for TF-Serving's REST API (columnar "inputs" format).

  Args:
    server: "host:port" or "http://host:port" (TF-Serving's
      --rest_api_port, 8501).
    model, version, timeout_s, retries, backoff_s: as for GrpcClient.
  """

  def __init__(self, server: str, model: str, *, version: Optional[int] = None,
               timeout_s: float = 10.0, retries: int = 2,
               backoff_s: float = 0.2):
    self.server = server if "://" in server else f"http://{server}"
    self.model = model
    self.version = version
    self.timeout_s = timeout_s
    self.retries = retries
    self.backoff_s = backoff_s

  def _url(self, suffix: str) -> str:
    url = f"{self.server}/v1/models/{self.model}"
    if self.version:
      url += f"/versions/{int(self.version)}"
    return url + suffix

  def _request(self, url: str, body: Optional[dict], signature: Optional[str]):
    where = _describe(self.server, self.model, self.version, signature)
    data = None if body is None else json.dumps(body).encode()

    def once():
      request = urllib.request.Request(
          url, data=data, headers={"Content-Type": "application/json"})
      with urllib.request.urlopen(request, timeout=self.timeout_s) as r:
        return json.loads(r.read())

    def code_of(e: Exception) -> str:
      if isinstance(e, urllib.error.HTTPError):
        return _HTTP_CODES.get(e.code, f"HTTP {e.code}")
      if isinstance(e, (urllib.error.URLError, ConnectionError)):
        return "UNAVAILABLE"
      if isinstance(e, TimeoutError):
        return "DEADLINE_EXCEEDED"
      return ""

    try:
      return _with_retries(once, retries=self.retries,
                           backoff_s=self.backoff_s, code_of=code_of)
    except urllib.error.HTTPError as e:
      try:
        message = json.loads(e.read()).get("error", "")
      except ValueError:
        message = str(e)
      raise _classify(code_of(e), message, where) from e
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
      raise _classify(code_of(e), str(getattr(e, "reason", e)), where) from e

  def predict(self, inputs: Mapping[str, np.ndarray],
              signature: str = DEFAULT_SIGNATURE) -> dict[str, np.ndarray]:
    """Runs one signature. Returns its outputs as NumPy arrays by name."""
    body = {"signature_name": signature,
            "inputs": {k: _to_json(np.asarray(v)) for k, v in inputs.items()}}
    outputs = self._request(self._url(":predict"), body, signature)["outputs"]
    if not isinstance(outputs, dict):
      # TF-Serving omits the name when the signature has a single output.
      names = {"serving_default": "embeddings", "serve_bytes": "embeddings",
               "verify": "same_probability"}
      outputs = {names.get(signature, "output"): outputs}
    return {k: np.asarray(v, np.float32) for k, v in outputs.items()}

  def metadata(self) -> dict[str, dict]:
    """Signature name -> {"inputs": {name: (dtype, shape)}, "outputs": ...}."""
    response = self._request(self._url("/metadata"), None, None)
    sig_map = json_format.ParseDict(
        response["metadata"]["signature_def"],
        get_model_metadata_pb2.SignatureDefMap(), ignore_unknown_fields=True)
    return summarize_signatures(sig_map)


def make_client(server: str, model: str, *, protocol: str = "grpc",
                **kwargs) -> _Client:
  """Returns a GrpcClient or RestClient; `protocol` is "grpc" or "rest"."""
  clients = {"grpc": GrpcClient, "rest": RestClient}
  if protocol not in clients:
    raise ValueError(f"Unknown protocol {protocol!r}; expected one of "
                     f"{sorted(clients)}.")
  return clients[protocol](server, model, **kwargs)


def read_files(paths: Sequence[str]) -> list[bytes]:
  """The bytes of each image file, for `embed_files`.

  Raises:
    FileNotFoundError: naming the file that is missing, not a file, or
      unreadable (with the reason).
  """
  contents = []
  for path in paths:
    try:
      with open(path, "rb") as f:
        contents.append(f.read())
    except OSError as e:
      raise FileNotFoundError(
          f"image file {path!r}: {e.strerror or e}; expected a readable "
          "JPEG, PNG, BMP or GIF file.") from None
  return contents


def embed_paths(client: _Client, paths: Sequence[str], *,
                batch_size: int = 32) -> np.ndarray:
  """Embeds image files by their bytes (serve_bytes), `batch_size` a request.

  Every file is read before the first request, so a missing one fails
  before any is sent.

  Returns:
    float32 [len(paths), D], L2-normalised.

  Raises:
    FileNotFoundError: a file cannot be read (named).
    InvalidRequestError: the server cannot decode a file; the message names
      the file when the batch had several.
  """
  contents = read_files(paths)
  chunks = []
  for start in range(0, len(paths), batch_size):
    batch = contents[start:start + batch_size]
    try:
      chunks.append(client.embed_files(batch))
    except InvalidRequestError as e:
      raise InvalidRequestError(
          f"{_culprit(client, paths[start:start + batch_size], batch)}: "
          f"{e}") from None
  return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def _culprit(client: _Client, paths: Sequence[str],
             contents: Sequence[bytes]) -> str:
  """Names the first file of a rejected batch that the server rejects alone."""
  if len(paths) > 1:
    for path, data in zip(paths, contents):
      try:
        client.embed_files([data])
      except InvalidRequestError:
        return f"image file {path!r}"
  return f"image file {paths[0]!r}" if len(paths) == 1 else (
      f"image files {paths[0]!r} .. {paths[-1]!r}")


def summary_line(path: str, embedding: np.ndarray, num_values: int = 4
                 ) -> str:
  """"<path>: dim D, norm N, [v0, v1, ...]" for one embedding [D]."""
  embedding = np.asarray(embedding, np.float32).reshape(-1)
  head = ", ".join(f"{v:.4f}" for v in embedding[:num_values])
  more = ", ..." if embedding.size > num_values else ""
  return (f"{path}: dim {embedding.size}, norm "
          f"{np.linalg.norm(embedding):.4f}, [{head}{more}]")


def write_embeddings(path: str, paths: Sequence[str],
                     embeddings: np.ndarray) -> None:
  """Writes the vectors atomically (temporary file, then rename).

  `.npy`: the float32 [N, D] array alone, rows in the order of `paths`;
  `.npz`: "embeddings" [N, D] and "paths" [N] (str).

  Raises:
    ValueError: another extension.
  """
  ext = os.path.splitext(path)[1].lower()
  if ext not in (".npy", ".npz"):
    raise ValueError(f"--output={path!r}: expected a .npy (vectors only) or "
                     ".npz (vectors and paths) file name.")
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=ext, dir=folder)
  try:
    with os.fdopen(fd, "wb") as f:
      if ext == ".npy":
        np.save(f, np.asarray(embeddings, np.float32))
      else:
        np.savez(f, embeddings=np.asarray(embeddings, np.float32),
                 paths=np.asarray(list(paths), str))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
