"""A tiny run with every strong-baseline model switch on (GeM, last stride 1,
BNNeck, retrieval after the BNNeck): it resumes as if never stopped, restores
from its config.json, evaluates and exports with the retrieval feature."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from keras_reid import runs
from keras_reid.data import from_config
from keras_reid.data import preprocessing
from keras_reid.evaluation import embedders
from keras_reid.evaluation import reference
from keras_reid.models import builders
from keras_reid.models import restore
from keras_reid.serving import saved_model
from keras_reid.training import stages
from tests.training import tiny_config

STRONG_MODEL = dict(bnneck=True, retrieval_feature="bnneck", pooling="gem",
                    last_stride=1, cls_dropout=0.0)


def _config(base):
  config = tiny_config.get_config()
  config.data.synthetic_dir = os.path.join(base, "synthetic")
  config.model.update(STRONG_MODEL)
  config.stages.synthetic.update(dict(step1_iterations=1, step2_iterations=2))
  return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, config, metrics) of one tiny strong-model run."""
  base = str(tmp_path_factory.mktemp("strong"))
  config = _config(base)
  workdir = os.path.join(base, "run")
  metrics = stages.train(config, workdir)
  return workdir, config, metrics


def _inputs(config, n=3):
  images = np.random.default_rng(0).integers(
      0, 256, (n, config.data.image_height, config.data.image_width, 3),
      dtype=np.uint8)
  x = preprocessing.normalize(tf.constant(images, tf.float32),
                              builders.normalization_for(config.model)).numpy()
  pairs = np.zeros((1,), "int32")
  return images, {"images": x, "pair_i": pairs, "pair_j": pairs}


def test_restored_model_has_the_trained_switches_and_evaluates_with_them(run):
  workdir, config, metrics = run
  model, loaded = restore.restore_training_model(workdir)
  assert loaded.model.to_dict() == config.model.to_dict()
  backbone = model.get_layer("backbone")
  gem = backbone.get_layer("gem_pool")
  # Stride 16 at 64x32 (stride 32 would give 2x1).
  assert tuple(gem.input.shape[1:3]) == (4, 2)
  # GeM's p trained in step 2 and came back from the checkpoint; a fresh
  # build starts at 3.
  assert float(gem.p_weight.numpy()) != 3.0
  # The BNNeck's statistics too (a fresh build has moving mean 0).
  assert np.abs(model.get_layer("bnneck").moving_mean.numpy()).max() > 0
  assert not model.get_layer("classifier").use_bias

  _, x = _inputs(loaded)
  out = model(x, training=False)
  embed = builders.embedding_function(model)
  np.testing.assert_allclose(embed(x["images"]),
                             out[builders.RETRIEVAL_OUTPUT], rtol=1e-5,
                             atol=1e-6)
  assert not np.allclose(out[builders.RETRIEVAL_OUTPUT], out["embedding"],
                         atol=1e-3)

  # The stage's evaluation scored the retrieval feature: the reference
  # evaluator on the restored embedder's features gives its metrics.
  dataset = from_config.load_stage_dataset(config.stages.synthetic, config)
  load = dict(image_size=(config.data.image_height, config.data.image_width),
              normalization=builders.normalization_for(config.model),
              batch_size=config.data.eval_batch_size)

  def ids(records):
    return (np.array([r.pid for r in records]),
            np.array([r.camid for r in records]))

  (qp, qc), (gp, gc) = ids(dataset.query), ids(dataset.gallery)
  want = reference.evaluate_features(
      embedders.extract_features(embed, dataset.query, **load),
      embedders.extract_features(embed, dataset.gallery, **load),
      qp, gp, qc, gc)
  for key in ("rank1", "rank5", "mAP"):
    assert metrics[key] == pytest.approx(want[key], abs=1e-6), key


def test_exported_saved_model_embeds_with_the_bnneck(run, tmp_path):
  workdir, _, _ = run
  path = saved_model.export_run(workdir, str(tmp_path / "export"))
  with open(os.path.join(path, saved_model.EXPORT_INFO_FILE)) as f:
    assert json.load(f)["embedding_dim"] == 256
  serving = tf.saved_model.load(path)
  model, config = restore.restore_training_model(workdir)
  images, x = _inputs(config)
  got = serving.signatures["serving_default"](
      images=tf.constant(images))["embeddings"].numpy()
  out = model(x, training=False)
  want = tf.math.l2_normalize(out[builders.RETRIEVAL_OUTPUT], axis=-1)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  pooled = tf.math.l2_normalize(out["embedding"], axis=-1)
  assert not np.allclose(got, pooled, atol=1e-3)


def test_resuming_after_step1_matches_the_uninterrupted_run(run, tmp_path):
  workdir, config, metrics = run
  resumed = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed)
  # As if stopped after step 1: step 2 neither finished nor checkpointed.
  progress = os.path.join(resumed, runs.PROGRESS_FILE)
  with open(progress) as f:
    data = json.load(f)
  data["finished"] = data["finished"][:1]
  with open(progress, "w") as f:
    json.dump(data, f)
  shutil.rmtree(runs.step_dir(resumed, "synthetic", 2))
  os.remove(runs.metrics_path(resumed))
  again = stages.train(config, resumed)
  assert {k: v for k, v in again.items() if not k.endswith("_seconds")} == {
      k: v for k, v in metrics.items() if not k.endswith("_seconds")}
  a, _ = restore.restore_training_model(workdir)
  b, _ = restore.restore_training_model(resumed)
  for layer in ("backbone", "bnneck", "classifier"):
    for u, v in zip(a.get_layer(layer).get_weights(),
                    b.get_layer(layer).get_weights()):
      np.testing.assert_array_equal(u, v)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
