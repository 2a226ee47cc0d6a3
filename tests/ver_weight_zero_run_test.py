"""A tiny run trained without the verification loss (loss.ver_weight=0).

It builds no verification heads: training warns of no variable without a
gradient, the run restores, evaluates (SIR; CIR refused naming the key),
exports the embedding signatures only (saying why "verify" is missing), and
keras_reid.Embedder verifies by cosine similarity. A run with ver_weight=0
trained before such runs dropped their heads (its checkpoints hold them)
still restores with them, evaluates with CIR and exports "verify".
"""

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import tensorflow as tf

import keras_reid
from keras_reid import run_evaluation
from keras_reid import runs
from keras_reid.data import from_config
from keras_reid.models import builders
from keras_reid.models import restore
from keras_reid.serving import saved_model
from keras_reid.training import stages
from tests.training import tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, config, warnings of the training, query image paths)."""
  base = tmp_path_factory.mktemp("ver_weight_zero")
  config = tiny_config.get_config()
  config.data.synthetic_dir = str(base / "synthetic")
  config.loss.ver_weight = 0.0
  workdir = str(base / "run")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    stages.train(config, workdir)
  data = from_config.load_stage_dataset(config.stages.synthetic, config)
  return (workdir, config, [str(w.message) for w in caught],
          [r.path for r in data.query[:6]])


def test_training_builds_no_verification_head(run):
  workdir, _, caught, _ = run
  assert not [w for w in caught if "Gradients do not exist" in w]
  model, _ = restore.restore_training_model(workdir)
  assert not builders.has_verification_head(model)
  assert not [v.path for v in model.variables if "verifier" in v.path]
  # Its checkpoints hold no verifier either: they do not restore into a
  # model with verification heads.
  config, progress = runs.load_finished_run(workdir)
  last = progress.last
  assert not restore.checkpoint_has_more_layers(model, last.checkpoint)
  with_heads = builders.build_training_model(
      config.model, num_classes=last.num_classes,
      input_shape=(config.data.image_height, config.data.image_width, 3))
  with pytest.raises(AssertionError, match="not bound to checkpointed"):
    restore.restore_weights(with_heads, last.checkpoint)


def test_evaluation_is_sir_only_and_cir_says_why(run, tmp_path):
  workdir = run[0]
  report = run_evaluation.evaluate_run(
      workdir, output_json=str(tmp_path / "eval.json"), pictures=False,
      tensorboard=False)
  assert "sir_cosine" in report["verification"]
  assert "verification_head" not in report["verification"]
  with pytest.raises(ValueError, match=r"CIR \(--cir='', --cir_topk=5\) "
                     r"needs a verification head.*loss.ver_weight=0"):
    run_evaluation.evaluate_run(workdir, cir_topk=5, pictures=False,
                                tensorboard=False,
                                output_json=str(tmp_path / "cir.json"))


def test_export_has_no_verify_and_embedder_verifies_by_cosine(run, tmp_path):
  workdir, _, _, paths = run
  path = saved_model.export_run(workdir, str(tmp_path / "reid"))
  assert sorted(tf.saved_model.load(path).signatures) == [
      "serve_bytes", "serving_default"]
  with open(os.path.join(path, saved_model.EXPORT_INFO_FILE)) as f:
    assert json.load(f)["verify_unavailable"] == saved_model.VERIFY_UNAVAILABLE
  for embedder in (keras_reid.Embedder.from_saved_model(path),
                   keras_reid.Embedder.from_run(workdir)):
    e = embedder.embed(paths)
    result = embedder.verify(paths[:3], paths[3:])
    np.testing.assert_allclose(result.score, np.sum(e[:3] * e[3:], 1),
                               atol=1e-5)


def test_a_run_trained_with_heads_before_still_restores_with_them(
    run, tmp_path):
  """ver_weight=0 in its config, verification heads in its checkpoint."""
  workdir = str(tmp_path / "older_run")
  shutil.copytree(run[0], workdir)
  config, progress = runs.load_finished_run(workdir)
  assert config.loss.ver_weight == 0.0
  last = progress.last
  # Its last checkpoint as a model with heads wrote it: the same weights,
  # and the verifiers.
  current = restore.rebuild_model(config, last.num_classes, last.checkpoint)
  older = builders.build_training_model(
      config.model, num_classes=last.num_classes,
      input_shape=(config.data.image_height, config.data.image_width, 3),
      seed=config.seed, verification=True)
  for layer in current.layers:
    if layer.weights:
      older.get_layer(layer.name).set_weights(layer.get_weights())
  checkpoint = tf.train.Checkpoint(model=older)
  # Created by reading it: training checkpoints hold it, restore expects it.
  assert checkpoint.save_counter is not None
  checkpoint.write(last.checkpoint)

  model, _ = restore.restore_training_model(workdir)
  assert builders.has_verification_head(model)
  for a, b in zip(model.weights, older.weights, strict=True):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  report = run_evaluation.evaluate_run(
      workdir, cir_topk=5, pictures=False, tensorboard=False)
  assert "verification_head" in report["verification"]
  assert "cir" in report
  path = saved_model.export_run(workdir, str(tmp_path / "reid"))
  assert "verify" in tf.saved_model.load(path).signatures


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
