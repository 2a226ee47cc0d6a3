"""keras_reid.Embedder on one tiny trained run and its export.

Oracles: the evaluator's features (keras_reid.evaluation.embedders with the
run's restored model) for `from_run`, the SavedModel's own serving_default
signature for `from_saved_model`, images decoded by Pillow for the pixel
paths, NumPy for norms and cosine similarities.
"""

import os
import shutil

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import keras_reid
from keras_reid import embedder as embedder_lib
from keras_reid import run_evaluation
from keras_reid.data import from_config
from keras_reid.data import image_files
from keras_reid.evaluation import embedders
from keras_reid.models import builders
from keras_reid.models import restore
from keras_reid.serving import saved_model
from keras_reid.training import stages
from tests.training import tiny_config

pytestmark = pytest.mark.slow

ATOL = 1e-5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, config, query records, export version folder)."""
  base = tmp_path_factory.mktemp("embedder_run")
  config = tiny_config.get_config()
  config.data.synthetic_dir = str(base / "synthetic")
  workdir = str(base / "run")
  stages.train(config, workdir)
  data = from_config.load_stage_dataset(config.stages.synthetic, config)
  export = saved_model.export_run(workdir, str(base / "export" / "reid"))
  return workdir, config, data.query[:12], export


@pytest.fixture(scope="module")
def from_run(run):
  return keras_reid.Embedder.from_run(run[0])


@pytest.fixture(scope="module")
def from_export(run):
  return keras_reid.Embedder.from_saved_model(run[3])


def _pillow_pixels(paths):
  return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@pytest.fixture(scope="module")
def pngs(run, tmp_path_factory):
  """Lossless PNG copies of the query images: Pillow and TensorFlow decode
  them to the same pixels (JPEG decoders differ by a few levels)."""
  folder = tmp_path_factory.mktemp("pngs")
  out = []
  for i, pixels in enumerate(_pillow_pixels([r.path for r in run[2]])):
    Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    out.append(str(folder / f"{i:02d}.png"))
  return out


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_from_run_equals_the_evaluators_features(run, from_run):
  workdir, config, records, _ = run
  model, _ = restore.restore_training_model(workdir)
  want = embedders.extract_features(
      builders.embedding_function(model), records,
      image_size=(config.data.image_height, config.data.image_width),
      normalization=builders.normalization_for(config.model), batch_size=5)
  got = from_run.embed([r.path for r in records], batch_size=4)
  assert got.dtype == np.float32 and got.shape == want.shape
  np.testing.assert_allclose(got, _unit(want), atol=ATOL)
  assert from_run.dimension == want.shape[1]
  assert from_run.input_size == (config.data.image_height,
                                 config.data.image_width)


def test_from_saved_model_equals_serving_default(run, pngs, from_export):
  _, config, records, export = run
  serving = tf.saved_model.load(export).signatures["serving_default"]
  want = np.concatenate([
      serving(images=tf.constant(p[None]))["embeddings"].numpy()
      for p in _pillow_pixels(pngs)])
  # Files go through serve_bytes, pixels through serving_default.
  np.testing.assert_allclose(from_export.embed(pngs, batch_size=5), want,
                             atol=ATOL)
  np.testing.assert_allclose(
      from_export.embed(_pillow_pixels(pngs), batch_size=5), want, atol=ATOL)
  # JPEG files: serving_default on TensorFlow's decoding of them.
  jpegs = [r.path for r in records]
  want = np.concatenate([
      serving(images=tf.io.decode_jpeg(tf.io.read_file(p))[None])[
          "embeddings"].numpy() for p in jpegs])
  np.testing.assert_allclose(from_export.embed(jpegs, batch_size=5), want,
                             atol=ATOL)
  assert from_export.input_size == (config.data.image_height,
                                     config.data.image_width)
  assert from_export.dimension == want.shape[1]
  # The model's base folder loads its highest version.
  base = keras_reid.Embedder.from_saved_model(os.path.dirname(export))
  assert base.source == export


@pytest.mark.parametrize("which", ["from_run", "from_export"])
def test_paths_arrays_and_datasets_give_the_same_unit_vectors(
    which, pngs, request, tmp_path):
  embedder = request.getfixturevalue(which)
  paths = list(pngs)
  # Different sizes: the list of arrays is grouped into same-size batches.
  pixels = _pillow_pixels(paths)
  pixels[3] = np.ascontiguousarray(pixels[3][:50, :20])
  Image.fromarray(pixels[3]).save(tmp_path / "cropped.png")
  paths[3] = str(tmp_path / "cropped.png")
  want = embedder.embed(paths, batch_size=64)
  np.testing.assert_allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-6)
  for batch_size in (1, 5):
    np.testing.assert_allclose(embedder.embed(paths, batch_size), want,
                               atol=ATOL)
    np.testing.assert_allclose(embedder.embed(pixels, batch_size), want,
                               atol=ATOL)
  same_size = [i for i in range(len(pixels)) if i != 3]
  np.testing.assert_allclose(
      embedder.embed(np.stack([pixels[i] for i in same_size]), 4),
      want[same_size], atol=ATOL)
  np.testing.assert_allclose(embedder.embed(pixels[0]), want[:1], atol=ATOL)
  np.testing.assert_allclose(embedder.embed(paths[0]), want[:1], atol=ATOL)
  ds = tf.data.Dataset.from_generator(
      lambda: iter(pixels), output_signature=tf.TensorSpec(
          [None, None, 3], tf.uint8))
  np.testing.assert_allclose(embedder.embed(ds, 3), want, atol=ATOL)
  batched = tf.data.Dataset.from_tensor_slices(
      np.stack([pixels[i] for i in same_size])).batch(4)
  np.testing.assert_allclose(embedder.embed(batched), want[same_size],
                             atol=ATOL)
  assert embedder.embed([]).shape == (0, embedder.dimension)


def _viper_bmp(pixels, path):
  """A BMP with 2 bytes after its pixel data, as half of VIPeR's are (TF's
  own decoder rejects them)."""
  Image.fromarray(pixels).save(path, format="BMP")
  with open(path, "ab") as f:
    f.write(b"\x00\x00")
  return str(path)


@pytest.mark.parametrize("which", ["from_run", "from_export"])
def test_viper_bmp_decodes_as_its_pixels(which, run, request, tmp_path):
  embedder = request.getfixturevalue(which)
  pixels = _pillow_pixels([run[2][0].path])[0]
  bmp = _viper_bmp(pixels, tmp_path / "0001_045.bmp")
  with open(bmp, "rb") as f, pytest.raises(tf.errors.InvalidArgumentError):
    tf.io.decode_image(f.read())  # what the package's BMP fix is for
  np.testing.assert_allclose(embedder.embed([bmp]), embedder.embed(pixels),
                             atol=ATOL)


@pytest.mark.parametrize("which", ["from_run", "from_export"])
def test_bad_inputs_raise_errors_naming_them(which, run, request, tmp_path):
  embedder = request.getfixturevalue(which)
  good = run[2][0].path
  missing = str(tmp_path / "missing.jpg")
  with pytest.raises(FileNotFoundError, match="missing.jpg.*does not exist"):
    embedder.embed([good, missing])
  corrupt = tmp_path / "corrupt.jpg"
  corrupt.write_bytes(b"\xff\xd8\xff not really a jpeg" * 10)
  with pytest.raises(image_files.CorruptImageError,
                     match=r"1 image file.*corrupt\.jpg"):
    embedder.embed([good, str(corrupt), good], batch_size=2)
  with pytest.raises(FileNotFoundError, match="is not a file"):
    embedder.embed([str(tmp_path)])
  pixels = _pillow_pixels([good])[0]
  with pytest.raises(TypeError, match="uint8"):
    embedder.embed(pixels.astype(np.float32) / 255)
  with pytest.raises(ValueError, match=r"images\[1\].*\[H, W, 3\]"):
    embedder.embed([pixels, pixels[..., :1]])
  with pytest.raises(TypeError, match="paths or arrays, not both"):
    embedder.embed([good, pixels])
  with pytest.raises(TypeError, match="tf.data.Dataset of uint8"):
    embedder.embed(tf.data.Dataset.from_tensor_slices([good]))


def test_verify_scores_cosine_and_decides_with_a_threshold(run, from_export):
  paths = [r.path for r in run[2]]
  n = len(paths) // 2
  assert n >= 3
  a, b = paths[:n], paths[n:2 * n]
  e = from_export.embed(paths)
  result = from_export.verify(a, b)
  np.testing.assert_allclose(result.score, np.sum(e[:n] * e[n:2 * n], 1),
                             atol=1e-6)
  assert result.same is None and result.threshold is None
  single = from_export.verify(paths[0], paths[0])
  assert single.score.shape == (1,) and single.score[0] == pytest.approx(1.0)
  threshold = float(np.median(result.score))
  decided = keras_reid.Embedder.from_saved_model(run[3], threshold=threshold)
  out = decided.verify(a, b)
  np.testing.assert_array_equal(out.same, result.score >= threshold)
  assert out.same.any() and not out.same.all()
  with pytest.raises(ValueError, match=f"{n} images in a and {n - 1} in b"):
    from_export.verify(a, b[:-1])


def test_threshold_comes_from_the_runs_evaluation_report(run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(run[0], workdir)
  assert embedder_lib.run_threshold(workdir) is None
  report = run_evaluation.evaluate_run(workdir, pictures=False,
                                       tensorboard=False)
  threshold = report["verification"]["sir_cosine"]["threshold"]
  assert -1.0 <= threshold <= 1.0
  assert embedder_lib.run_threshold(workdir) == threshold
  assert keras_reid.Embedder.from_run(workdir).threshold == threshold
  # The export records it for the SavedModel's Embedder.
  export = saved_model.export_run(workdir, str(tmp_path / "export"))
  decided = keras_reid.Embedder.from_saved_model(export)
  assert decided.threshold == threshold
  assert keras_reid.Embedder.from_saved_model(run[3]).threshold is None
  paths = [r.path for r in run[2]]
  result = decided.verify(paths[:3], paths[3:6])
  np.testing.assert_array_equal(result.same, result.score >= threshold)


def test_missing_models_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="No SavedModel at .*nowhere"):
    keras_reid.Embedder.from_saved_model(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError):
    keras_reid.Embedder.from_run(str(tmp_path / "no_run"))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
