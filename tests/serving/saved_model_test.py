"""Tests of the SavedModel export: signatures, numerics, checks, versions."""

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_reid import progress
from keras_reid import runs
from keras_reid import schema
from keras_reid.data import preprocessing
from keras_reid.models import builders
from keras_reid.models import restore
from keras_reid.serving import saved_model


H, W = 64, 32


def _expected_embeddings(exported, images):
  x = tf.image.resize(tf.cast(images, tf.float32), (H, W), method="bilinear",
                      antialias=True)
  x = preprocessing.normalize(x, exported.normalization)
  return tf.math.l2_normalize(exported.embedder(x, training=False), -1).numpy()


def _expected_probability(exported, images_a, images_b):
  prep = lambda i: preprocessing.normalize(
      tf.image.resize(tf.cast(i, tf.float32), (H, W), antialias=True),
      exported.normalization)
  return np.reshape(exported.pair_scorer(
      {"images_a": prep(images_a), "images_b": prep(images_b)},
      training=False), [-1])


@pytest.fixture(scope="module")
def loaded(exported):
  return tf.saved_model.load(exported.path)


@pytest.mark.slow  # a subprocess starting TensorFlow
def test_loads_and_runs_without_keras_reid(exported, tmp_path):
  images = exported.images(0, 3, 80, 40)
  native = exported.images(1, 2, H, W)
  pngs = [tf.io.encode_png(i).numpy() for i in images]
  np.savez(tmp_path / "in.npz", images=images, native=native,
           pngs=np.array(pngs, dtype=object))
  script = textwrap.dedent("""
      import sys
      import numpy as np
      import tensorflow as tf
      path, io_dir = sys.argv[1], sys.argv[2]
      inputs = np.load(io_dir + "/in.npz", allow_pickle=True)
      m = tf.saved_model.load(path)
      out = {
          "embeddings": m.signatures["serving_default"](
              images=tf.constant(inputs["images"]))["embeddings"].numpy(),
          "native": m.signatures["serving_default"](
              images=tf.constant(inputs["native"]))["embeddings"].numpy(),
          "bytes": m.signatures["serve_bytes"](
              images=tf.constant(list(inputs["pngs"])))["embeddings"].numpy(),
          "probability": m.signatures["verify"](
              images_a=tf.constant(inputs["images"]),
              images_b=tf.constant(inputs["images"][::-1]))[
                  "same_probability"].numpy(),
      }
      assert not any(k.startswith("keras_reid") for k in sys.modules), "imported"
      np.savez(io_dir + "/out.npz", **out)

      # `saved_model_cli show --all --dir path`, run in this process: one
      # TensorFlow start-up instead of two keeps the test fast.
      import contextlib
      from tensorflow.python.tools import saved_model_cli
      sys.argv = ["saved_model_cli", "show", "--all", "--dir", path]
      with open(io_dir + "/cli.txt", "w") as f, contextlib.redirect_stdout(f):
        try:
          saved_model_cli.main()
        except SystemExit as e:
          assert not e.code, e.code
      """)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("PYTHONPATH", None)
  # cwd outside the repository, so keras_reid is not importable at all.
  result = subprocess.run(
      [sys.executable, "-c", script, os.path.abspath(exported.path),
       str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
      timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  out = np.load(tmp_path / "out.npz")

  expected = _expected_embeddings(exported, images)
  assert out["embeddings"].shape == expected.shape == (3, 256)
  np.testing.assert_allclose(out["embeddings"], expected, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(out["embeddings"], axis=1), 1.,
                             atol=1e-5)
  # At the model's own size the resize is the identity: plain Keras model.
  plain = exported.embedder(preprocessing.normalize(
      tf.cast(native, tf.float32), exported.normalization)).numpy()
  plain /= np.linalg.norm(plain, axis=1, keepdims=True)
  np.testing.assert_allclose(out["native"], plain, atol=1e-5)
  # PNG is lossless: the bytes signature sees the same pixels.
  np.testing.assert_allclose(out["bytes"], expected, atol=1e-5)
  np.testing.assert_allclose(
      out["probability"], _expected_probability(exported, images, images[::-1]),
      atol=1e-5)
  assert np.all((out["probability"] >= 0) & (out["probability"] <= 1))
  # The signatures as `saved_model_cli show --all` lists them.
  _check_saved_model_cli_output((tmp_path / "cli.txt").read_text())


def _check_saved_model_cli_output(out):
  for name in ("serving_default", "serve_bytes", "verify"):
    assert f"signature_def['{name}']" in out
  for text in ("inputs['images']", "inputs['images_a']", "inputs['images_b']",
               "outputs['embeddings']", "outputs['same_probability']",
               "DT_UINT8", "DT_STRING", "tensorflow/serving/predict"):
    assert text in out, text


def test_export_info_is_written(exported):
  with open(os.path.join(exported.path, saved_model.EXPORT_INFO_FILE)) as f:
    info = json.load(f)
  assert info["image_size"] == [H, W]
  assert info["embedding_dim"] == 256
  assert info["normalization"] == exported.normalization


def _png(exported):
  return tf.io.encode_png(exported.images(0, 1, 8, 8)[0]).numpy()


BAD_REQUESTS = {
    "rank": ("serving_default", lambda e: {"images": np.zeros((4, 8, 3), np.uint8)},
             "rank 4"),
    "channels": ("serving_default",
                 lambda e: {"images": np.zeros((1, 8, 8, 4), np.uint8)},
                 "3 (RGB) channels"),
    "empty": ("serving_default",
              lambda e: {"images": np.zeros((0, 8, 8, 3), np.uint8)},
              "empty batch"),
    "oversized": ("serving_default",
                  lambda e: {"images": np.zeros(
                      (1, saved_model.MAX_IMAGE_SIDE + 1, 2, 3), np.uint8)},
                  "image too large"),
    "undecodable": ("serve_bytes",
                    lambda e: {"images": np.array([_png(e), b"not an image"],
                                                  dtype=object)},
                    "could not decode"),
    "truncated": ("serve_bytes",
                  lambda e: {"images": np.array([_png(e)[:30]], dtype=object)},
                  "PNG"),
    "empty_bytes": ("serve_bytes",
                    lambda e: {"images": np.array([], dtype=object)},
                    "empty batch"),
    "verify_batch": ("verify",
                     lambda e: {"images_a": np.zeros((2, 8, 8, 3), np.uint8),
                                "images_b": np.zeros((3, 8, 8, 3), np.uint8)},
                     "same batch size"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_graph_assertions_reject_bad_inputs(loaded, exported, case):
  signature, make_inputs, message = BAD_REQUESTS[case]
  inputs = {k: tf.constant(list(v) if v.dtype == object else v,
                           tf.string if v.dtype == object else None)
            for k, v in make_inputs(exported).items()}
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=re.escape(message)):
    loaded.signatures[signature](**inputs)


def test_wrong_dtype_is_rejected_by_the_signature(loaded):
  with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
    loaded.signatures["serving_default"](
        images=tf.zeros((1, 8, 8, 3), tf.float32))


def _two_layer_models():
  """Embedder [B, H, W, 3] -> [B, 4] and pair scorer, same contract as builders'."""
  images = keras.Input((H, W, 3), name="images")
  embedding = keras.layers.Dense(4, name="dense")(
      keras.layers.GlobalAveragePooling2D(name="pool")(images))
  embedder = keras.Model(images, embedding)
  a = keras.Input((H, W, 3), name="images_a")
  b = keras.Input((H, W, 3), name="images_b")
  logit = keras.layers.Dense(1, activation="sigmoid", name="score")(
      keras.layers.Subtract(name="subtract")([embedder(a), embedder(b)]))
  pair_scorer = keras.Model({"images_a": a, "images_b": b},
                            keras.layers.Flatten(name="flat")(logit))
  return embedder, pair_scorer


def test_version_numbering(tmp_path):
  base = tmp_path / "reid"
  assert saved_model.next_version(str(base)) == 1
  for name in ("1", "3", "notes", ".tmp-9-x"):
    (base / name).mkdir(parents=True)
  (base / "7").write_text("a file, not a version")
  assert saved_model.next_version(str(base)) == 4
  # Numbering does not depend on the model: a two-layer one exports fast.
  embedder, pair_scorer = _two_layer_models()
  path = saved_model.export_saved_model(
      embedder, pair_scorer, export_base=str(base), image_size=(H, W),
      normalization="tf")
  assert path == str(base / "4")
  assert os.path.exists(base / "4" / "saved_model.pb")
  # No temporary folder is left behind besides the pre-existing one.
  assert sorted(os.listdir(base)) == [".tmp-9-x", "1", "3", "4", "7", "notes"]
  assert tf.saved_model.load(path).signatures["serving_default"](
      images=tf.zeros([1, 5, 7, 3], tf.uint8))["embeddings"].shape == (1, 4)
  with pytest.raises(ValueError, match="exists already"):
    saved_model.export_saved_model(
        embedder, pair_scorer, export_base=str(base), image_size=(H, W),
        normalization="tf", version=3)
  with pytest.raises(ValueError, match="Unknown normalization"):
    saved_model.export_saved_model(
        embedder, pair_scorer, export_base=str(base), image_size=(H, W),
        normalization="bogus")


def test_versions_beyond_int64_are_not_versions(tmp_path):
  # A stray folder 99999999999999999999999 pushed the next version past
  # int64, which TF-Serving cannot load.
  base = tmp_path / "reid"
  for name in ("2", "99999999999999999999999", str(2 ** 63)):
    (base / name).mkdir(parents=True)
  assert saved_model.next_version(str(base)) == 3
  (base / str(2 ** 63 - 1)).mkdir()
  with pytest.raises(ValueError, match="the largest version TF-Serving can "
                     "read; there is no next one"):
    saved_model.next_version(str(base))
  embedder, pair_scorer = _two_layer_models()
  with pytest.raises(ValueError, match=r"expected an integer in \[1, "
                     r"9223372036854775807\]"):
    saved_model.export_saved_model(
        embedder, pair_scorer, export_base=str(base), image_size=(H, W),
        normalization="tf", version=2 ** 63)


def test_version_folder_is_readable_by_other_users(tmp_path):
  # tempfile.mkdtemp made the published version 0700: TF-Serving running as
  # another user could not read it. It now has a plain mkdir's mode.
  embedder, pair_scorer = _two_layer_models()
  old = os.umask(0o022)
  try:
    path = saved_model.export_saved_model(
        embedder, pair_scorer, export_base=str(tmp_path / "reid"),
        image_size=(H, W), normalization="tf")
  finally:
    os.umask(old)
  assert os.stat(path).st_mode & 0o777 == 0o755


def test_export_run_uses_the_restored_run(tmp_path, monkeypatch, capsys):
  config = schema.base_config()
  config.data.image_height, config.data.image_width = H, W
  config.model.weights = ""
  model = builders.build_training_model(config.model, num_classes=3,
                                        input_shape=(H, W, 3), seed=1)
  monkeypatch.setattr(restore, "restore_training_model",
                      lambda workdir: (model, config))
  origin = {"stage": "synthetic", "step": 2, "complete": True}
  monkeypatch.setattr(runs, "weights_origin", lambda workdir: origin)
  calls = []
  monkeypatch.setattr(saved_model, "export_saved_model",
                      lambda *args, **kwargs: calls.append((args, kwargs)) or
                      "the/path")
  # As if the export were slow: its progress lines on stderr.
  monkeypatch.setattr(progress, "SLOW_SECONDS", 0.0)
  assert saved_model.export_run("run", str(tmp_path)) == "the/path"
  (embedder, pair_scorer), kwargs = calls[0]
  kwargs["step_done"]("traced serving_default")
  lines = capsys.readouterr().err.splitlines()
  assert lines[0].startswith("Export: 1/5 export steps (20%) - ")
  assert lines[0].endswith(" - done: restored the model")
  assert lines[1].startswith("Export: 2/5 export steps (40%) - ")
  del kwargs["step_done"]
  assert kwargs == {"export_base": str(tmp_path), "image_size": (H, W),
                    "write_extra": None,
                    "normalization": builders.normalization_for(config.model),
                    "extra_info": {"weights_from": origin}}
  # Without aux heads: the embedder maps images to the embedding only, and
  # shares the run's backbone weights.
  assert embedder.output.shape[-1] == model.output["embedding"].shape[-1]
  assert sorted(pair_scorer.input) == ["images_a", "images_b"]
  x = np.random.default_rng(0).uniform(-1, 1, (2, H, W, 3)).astype(np.float32)
  np.testing.assert_allclose(
      embedder(x).numpy(),
      model({"images": x, "pair_i": np.zeros([1], np.int32),
             "pair_j": np.zeros([1], np.int32)})["embedding"].numpy(),
      atol=1e-6)


def test_export_without_a_verification_head_has_the_embedding_signatures(
    exported, exported_without_verify):
  path = exported_without_verify.path
  loaded = tf.saved_model.load(path)
  assert sorted(loaded.signatures) == sorted(
      saved_model.EMBEDDING_SIGNATURES) == ["serve_bytes", "serving_default"]
  with open(os.path.join(path, saved_model.EXPORT_INFO_FILE)) as f:
    info = json.load(f)
  assert info["signatures"] == ["serving_default", "serve_bytes"]
  assert info["verify_unavailable"] == saved_model.VERIFY_UNAVAILABLE
  assert "config.loss.ver_weight=0" in info["verify_unavailable"]
  with open(os.path.join(exported.path, saved_model.EXPORT_INFO_FILE)) as f:
    assert "verify_unavailable" not in json.load(f)
  images = exported.images(0, 3, 80, 40)
  got = loaded.signatures["serving_default"](images=tf.constant(images))
  np.testing.assert_allclose(got["embeddings"],
                             _expected_embeddings(exported, images),
                             rtol=1e-4, atol=1e-5)


def test_export_run_without_a_verification_head(tmp_path, monkeypatch, capsys):
  config = schema.base_config()
  config.data.image_height, config.data.image_width = H, W
  config.model.weights = ""
  config.loss.ver_weight = 0.0
  model = builders.build_training_model(
      config.model, num_classes=3, input_shape=(H, W, 3), seed=1,
      verification=builders.verification_heads(config))
  monkeypatch.setattr(restore, "restore_training_model",
                      lambda workdir: (model, config))
  monkeypatch.setattr(runs, "weights_origin", lambda workdir: {})
  calls = []
  monkeypatch.setattr(saved_model, "export_saved_model",
                      lambda *args, **kwargs: calls.append((args, kwargs)) or
                      "the/path")
  monkeypatch.setattr(progress, "SLOW_SECONDS", 0.0)
  assert saved_model.export_run("run", str(tmp_path)) == "the/path"
  (embedder, pair_scorer), _ = calls[0]
  assert pair_scorer is None
  assert embedder.output.shape[-1] == model.output["embedding"].shape[-1]
  # The step "verify" would have taken is reported, so the steps add up.
  lines = capsys.readouterr().err.splitlines()
  assert lines[1].startswith("Export: 2/5 export steps (40%) - ")
  assert lines[1].endswith("no verify signature: no verification head")


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
