"""Tests for keras_reid.training.hparams: a run's HParams session in TensorBoard."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from keras_reid import config as config_lib
from keras_reid import runs
from keras_reid.data.synthetic import generator as synthetic
from keras_reid.evaluation import ranking
from keras_reid.evaluation import report
from keras_reid.training import hparams
from keras_reid.training import stages
from tests.training import tiny_config


def _events(logdir):
  """Every (summary value, step) in the event files under logdir."""
  out = []
  for name in sorted(os.listdir(logdir)):
    path = os.path.join(logdir, name)
    if os.path.isfile(path) and "tfevents" in name:
      for event in tf.compat.v1.train.summary_iterator(path):
        out.extend((value, event.step) for value in event.summary.value)
  return out


def test_describe_run_lists_the_differences_and_key_choices():
  config = tiny_config.get_config()
  config.model.ver_dropout_mode = "independent"
  config.loss.triplet_weight = 0.5
  described = config_lib.describe_run(config)
  # Against keras_reid.schema: the default experiment's and tiny_config's
  # changes, by hand.
  expected_differences = {
      "data.image_height": 64, "data.image_width": 32,
      "data.augment_copies": 2, "data.synthetic_num_ids": 6,
      "data.eval_batch_size": 32, "model.ver_dropout_mode": "independent",
      "loss.triplet_weight": 0.5, "train.checkpoint_every": 2,
      "train.log_every": 2, "stages.synthetic.ids_per_batch": 2,
      "stages.synthetic.images_per_id": 2, "stages.synthetic.step1_iterations": 3,
      "stages.synthetic.step2_iterations": 6, "stages.synthetic.step2_lr": 0.01,
      "stages.synthetic.lr_decay_iterations": 700}
  differences = config_lib.differences(config)
  # The test config may pin train.precision (a schema moving elsewhere).
  pinned = {k: differences.pop(k) for k in ("train.precision",)
            if k in differences}
  assert differences == expected_differences
  # train.precision where the schema has it, else from mixed_precision.
  precision = (config.train.precision if "precision" in config.train
               else "float32")
  assert described == {
      "backbone": "mobilenet_v1", "datasets": "synthetic",
      "losses": "cls+ver+triplet", "ver_dropout_mode": "independent",
      "precision": precision, **expected_differences, **pinned}
  # A config.json's dict (what compare reads) gives the same.
  assert config_lib.describe_run(json.loads(config.to_json())) == described


def test_tiny_run_writes_its_hparams_session(tmp_path):
  config = tiny_config.get_config()
  config.data.synthetic_dir = str(tmp_path / "synthetic")
  synthetic.generate(config.data.synthetic_dir, num_ids=6, seed=0)
  config.stages.synthetic.step1_iterations = 1
  config.stages.synthetic.step2_iterations = 2
  workdir = str(tmp_path / "run")
  stages.train(config, workdir)
  with open(os.path.join(workdir, runs.METRICS_FILE)) as f:
    metrics = json.load(f)

  events = _events(os.path.join(workdir, "tensorboard"))
  plugin = [(v, s) for v, s in events
            if v.metadata.plugin_data.plugin_name == hparams_metadata.PLUGIN_NAME]
  starts = [hparams_metadata.parse_session_start_info_plugin_data(
      v.metadata.plugin_data.content) for v, _ in plugin
            if v.tag == hparams_metadata.SESSION_START_INFO_TAG]
  ends = [hparams_metadata.parse_session_end_info_plugin_data(
      v.metadata.plugin_data.content) for v, _ in plugin
          if v.tag == hparams_metadata.SESSION_END_INFO_TAG]
  assert len(starts) == 1 and len(ends) == 1
  assert ends[0].status == api_pb2.STATUS_SUCCESS
  logged = {}
  for key, value in starts[0].hparams.items():
    kind = value.WhichOneof("kind")
    logged[key] = getattr(value, kind)
  expected = config_lib.describe_run(config)
  assert set(logged) == set(expected)
  for key in ("backbone", "datasets", "losses", "ver_dropout_mode",
              "precision", "stages.synthetic.step2_iterations"):
    assert key in logged
  for key, value in expected.items():
    assert logged[key] == pytest.approx(value), key
  assert logged["stages.synthetic.step2_iterations"] == 2
  assert logged["losses"] == "cls+ver"

  final = {v.tag: (tf.make_ndarray(v.tensor), s) for v, s in events
           if v.tag.startswith(hparams.METRIC_PREFIX)}
  for key in ranking.METRIC_KEYS:
    value, step = final[hparams.METRIC_PREFIX + key]
    assert float(value) == pytest.approx(metrics[key], abs=1e-6), key
    assert step == 3  # the run's last step
  assert float(final["final/train_seconds"][0]) == pytest.approx(
      metrics["train_seconds"], rel=1e-5)
  # The final CMC figure, drawn from metrics.json's curve.
  images = [(v, s) for v, s in events
            if v.tag == "eval/cmc" and s == 3]
  assert len(images) == 1
  png = tf.make_ndarray(images[0][0].tensor)[2]
  np.testing.assert_array_equal(
      tf.io.decode_png(png).numpy(),
      report.cmc_image(metrics, "CMC synthetic"))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
