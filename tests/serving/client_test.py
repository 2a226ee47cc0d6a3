"""Client <-> server round trips over loopback gRPC and REST.

The server is tensorflow_model_server when it is on PATH, else the test
server of keras_reid.serving.test_server (same APIs, same SavedModel).
"""

import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from keras_reid.serving.client import commands
from keras_reid.serving.client import tf_serving as client
from keras_reid.serving.test_server import model_server as test_server

MODEL = "reid"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


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


def test_verify_on_a_model_without_verification_head_says_why(
    exported_without_verify):
  running = test_server.serve({MODEL: exported_without_verify.base})
  try:
    images = exported_without_verify.images(2, 2, 64, 32)
    for protocol, port in (("grpc", running.grpc_port),
                           ("rest", running.rest_port)):
      reid = client.make_client(f"127.0.0.1:{port}", MODEL, protocol=protocol)
      assert reid.embed(images).shape == (2, 256)
      with pytest.raises(client.SignatureNotFoundError,
                         match=r"'verify'.*no verification head.*"
                         r"config\.loss\.ver_weight=0"):
        reid.verify(images, images[::-1])
  finally:
    running.stop()


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


def _write(path, image, fmt):
  """Writes uint8 [H, W, 3] as `fmt` with Pillow; returns the path."""
  Image.fromarray(image).save(path, format=fmt)
  return str(path)


def _viper_bmp(image, path):
  """A BMP with 2 bytes after its pixel data, as half of VIPeR's are:
  tf.io.decode_image (what the client decoded with) rejects it."""
  _write(path, image, "BMP")
  with open(path, "ab") as f:
    f.write(b"\x00\x00")
  with open(path, "rb") as f, pytest.raises(tf.errors.InvalidArgumentError):
    tf.io.decode_image(f.read())
  return str(path)


def _run_cli(capsys, server, *args, protocol="grpc", model=MODEL,
             output=None):
  """(exit status, stdout, stderr) of `python -m keras_reid.serving.client
  --server=... --model=... --protocol=... [--output=...] ARGS`, in process:
  the command with the settings its flags would give."""
  target = server[0] if protocol == "grpc" else server[1]
  status = commands.run(commands.Settings(
      server=target, model=model, protocol=protocol, output=output), args)
  out = capsys.readouterr()
  return status, out.out, out.err


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_cli_embeds_png_bmp_and_jpeg_bytes(server, exported, loaded,
                                           tmp_path, capsys, protocol):
  images = exported.images(2, 2, 90, 40)
  paths = [_write(tmp_path / "a.png", images[0], "PNG"),
           _viper_bmp(images[1], tmp_path / "0001_045.bmp"),
           _write(tmp_path / "c.jpg", images[0], "JPEG")]
  status, out, err = _run_cli(capsys, server, *paths, protocol=protocol)
  assert status == 0, err
  lines = out.splitlines()
  assert len(lines) == 3
  # Oracle: the SavedModel in this process on the same pixels (PNG and BMP
  # are lossless; the JPEG as TensorFlow decodes it); 4 decimals printed.
  serving = loaded.signatures["serving_default"]
  jpeg = tf.io.decode_jpeg(tf.io.read_file(paths[2]))[None]
  want = [serving(images=tf.constant(images[:1]))["embeddings"].numpy()[0],
          serving(images=tf.constant(images[1:]))["embeddings"].numpy()[0],
          serving(images=jpeg)["embeddings"].numpy()[0]]
  for path, line, vector in zip(paths, lines, want):
    name, rest = line.split(": ", 1)
    assert name == path
    assert rest.startswith(f"dim {vector.size}, norm 1.0000, [")
    first = [float(v) for v in rest.split("[")[1].split(", ")[:4]]
    np.testing.assert_allclose(first, vector[:4], atol=1e-4)


def test_cli_two_images_print_their_cosine_similarity(server, exported,
                                                      loaded, tmp_path, capsys):
  images = exported.images(3, 2, 64, 32)
  paths = [_write(tmp_path / f"{n}.png", image, "PNG")
           for n, image in enumerate(images)]
  status, out, _ = _run_cli(capsys, server, *paths)
  assert status == 0
  cosine = float(out.split("cosine similarity: ")[1].split()[0])
  want = loaded.signatures["serving_default"](images=tf.constant(images))[
      "embeddings"].numpy()
  assert cosine == pytest.approx(float(want[0] @ want[1]), abs=1e-4)


@pytest.mark.parametrize("ext", [".npy", ".npz"])
def test_cli_output_writes_the_vectors(server, exported, loaded, tmp_path,
                                       capsys, ext):
  images = exported.images(4, 3, 70, 30)
  paths = [_write(tmp_path / f"{n}.png", image, "PNG")
           for n, image in enumerate(images)]
  output = tmp_path / "out" / f"vectors{ext}"
  status, out, err = _run_cli(capsys, server, *paths, output=str(output))
  assert status == 0, err
  assert out.strip() == (f"wrote 3 embeddings of dimension 256 to {output}")
  want = loaded.signatures["serving_default"](images=tf.constant(images))[
      "embeddings"].numpy()
  data = np.load(output)
  got = data if ext == ".npy" else data["embeddings"]
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=1e-5)
  if ext == ".npz":
    assert data["paths"].tolist() == paths
  # Nothing but the file itself is left in its folder (atomic write).
  assert os.listdir(output.parent) == [output.name]
  status, _, err = _run_cli(capsys, server, *paths,
                            output=f"{tmp_path}/v.csv")
  assert status == 1 and ".npy" in err and len(err.splitlines()) == 1


def test_cli_bad_files_and_server_errors_are_one_line(server, exported,
                                                      tmp_path, capsys):
  good = _write(tmp_path / "good.png", exported.images(5, 1, 64, 32)[0],
                "PNG")
  missing = str(tmp_path / "missing.jpg")
  status, out, err = _run_cli(capsys, server, good, missing)
  assert status == 1 and out == ""
  assert err.startswith("error: image file ") and "missing.jpg" in err
  assert len(err.splitlines()) == 1
  status, _, err = _run_cli(capsys, server, str(tmp_path))
  assert status == 1 and len(err.splitlines()) == 1
  assert repr(str(tmp_path)) in err
  corrupt = tmp_path / "corrupt.bmp"
  corrupt.write_bytes(b"BM not really a bitmap" * 4)
  status, _, err = _run_cli(capsys, server, good, str(corrupt), good)
  assert status == 1 and len(err.splitlines()) == 1
  assert "corrupt.bmp" in err and "Request rejected" in err
  status, _, err = _run_cli(capsys, server, good, model="nope")
  assert status == 1 and "Not served" in err


# Runs the CLI in a fresh process whose imports of TensorFlow's runtime
# (tensorflow.python) and Keras fail, then lists what of them got loaded.
_NO_TF_RUNTIME = """
import atexit, importlib.abc, runpy, sys

class Blocker(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if (name.split(".")[:2] == ["tensorflow", "python"]
        or name.split(".")[0] in ("keras", "tf_keras")):
      raise ImportError(f"{name} is blocked: the light client must not load it")
    return None

sys.meta_path.insert(0, Blocker())
atexit.register(lambda: print("LOADED", sorted(
    m for m in sys.modules if m in ("tensorflow", "keras")
    or m.startswith(("tensorflow.python", "keras."))), file=sys.stderr))
sys.argv = ["client"] + ARGS
runpy.run_module(MODULE, run_name="__main__", alter_sys=True)
"""


def _run_without_tf_runtime(args, module="keras_reid.serving.client"):
  script = f"ARGS = {list(args)!r}\nMODULE = {module!r}\n" + _NO_TF_RUNTIME
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get(
      "PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)


def test_the_blocker_blocks_the_plain_import_of_the_serving_protos():
  # tensorflow-serving-api imported the ordinary way loads TensorFlow's
  # runtime: the check below can fail.
  proc = _run_without_tf_runtime([], module="tensorflow_serving.apis.predict_pb2")
  assert proc.returncode != 0 and "is blocked" in proc.stderr


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_cli_bytes_path_does_not_load_tensorflow(server, exported, loaded,
                                                 tmp_path, protocol):
  image = exported.images(6, 1, 100, 41)[0]
  bmp = _viper_bmp(image, tmp_path / "0002_000.bmp")
  target = server[0] if protocol == "grpc" else server[1]
  proc = _run_without_tf_runtime([f"--server={target}", f"--model={MODEL}",
                                  f"--protocol={protocol}", bmp])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1] == "LOADED []"
  want = loaded.signatures["serving_default"](images=tf.constant(image[None]))
  first = float(proc.stdout.split("[")[1].split(",")[0])
  assert proc.stdout.startswith(f"{bmp}: dim 256, norm 1.0000, [")
  assert first == pytest.approx(float(want["embeddings"].numpy()[0, 0]),
                                abs=1e-4)
  # A missing file: one line, no traceback, TensorFlow not loaded either.
  proc = _run_without_tf_runtime([f"--server={target}",
                                  str(tmp_path / "missing.bmp")])
  assert proc.returncode == 1 and proc.stdout == ""
  lines = proc.stderr.strip().splitlines()
  assert lines[-1] == "LOADED []" and len(lines) == 2
  assert lines[0].startswith("error: image file ") and "missing.bmp" in lines[0]


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
