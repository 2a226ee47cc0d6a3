"""The strong baseline's losses in the training loop: the center loss's
centres train, checkpoint and resume exactly; the soft-margin triplet trains
on K x M batches; with the defaults the step is as before."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_reid import runs
from keras_reid.data.synthetic import generator as synthetic
from keras_reid.models import builders
from keras_reid.training import loop
from keras_reid.training import stages
from tests.training import tiny_config

NUM_CLASSES = 3
K, M, H, W = 3, 2, 64, 32
CENTERS_KEY = "centers/.ATTRIBUTES/VARIABLE_VALUE"


def _make_dataset(context, first_batch=0):
  """K x M batches of a fixed stream: batch t from (0, t) only."""
  del context

  def batch(t):
    rng = np.random.default_rng([0, int(t)])
    return rng.normal(size=(K * M, H, W, 3)).astype(np.float32)

  labels = np.repeat(np.arange(K), M).astype(np.int32)
  ii, jj = np.triu_indices(K * M, k=1)
  pairs = dict(labels=labels, pair_i=ii.astype(np.int32),
               pair_j=jj.astype(np.int32),
               pair_same=(labels[ii] == labels[jj]).astype(np.float32))

  def element(t):
    images = tf.numpy_function(batch, [t], tf.float32, stateful=False)
    images.set_shape((K * M, H, W, 3))
    return dict(pairs, images=images)

  return tf.data.Dataset.counter(first_batch).map(element)


def _config(**loss):
  config = tiny_config.get_config()
  config.loss.update(loss)
  config.train.checkpoint_every = 2
  return config


def _model(config):
  keras.utils.set_random_seed(0)  # the same initial weights every time
  return builders.build_training_model(
      config.model, num_classes=NUM_CLASSES, input_shape=(H, W, 3), seed=0)


def _run(config, workdir, iterations, model=None):
  model = model or _model(config)
  step = loop.FineTuningStep("s", 2, iterations=iterations, lr=0.01,
                             lr_decay_iterations=100, lr_decay_factor=0.1,
                             batch_size=K * M)
  path = loop.run_fine_tuning_step(
      model, step, make_dataset=_make_dataset, config=config,
      strategy=tf.distribute.get_strategy(), workdir=str(workdir),
      writer=tf.summary.create_file_writer(str(workdir / "tb")))
  return model, path


def test_centers_train_checkpoint_and_resume_exactly(tmp_path):
  config = _config(center_weight=0.5, center_lr=0.5, triplet_weight=1.0,
                   triplet_soft_margin=True)
  straight, path = _run(config, tmp_path / "straight", 4)
  centers = tf.train.load_variable(path, CENTERS_KEY)
  assert centers.shape == (NUM_CLASSES, 256)
  assert np.abs(centers).sum(1).all()  # every class's centre moved from 0
  # Stopped after 2 iterations, then resumed on a freshly built model.
  _run(config, tmp_path / "resumed", 2)
  resumed, path2 = _run(config, tmp_path / "resumed", 4)
  np.testing.assert_allclose(tf.train.load_variable(path2, CENTERS_KEY),
                             centers, rtol=1e-6, atol=1e-7)
  for a, b in zip(straight.weights, resumed.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6,
                               err_msg=a.path)


def test_the_centers_pull_the_embeddings_and_get_their_own_lr():
  config = _config(center_weight=0.5, center_lr=0.5, cls_weight=1.0)
  model = _model(config)
  builders.set_step_trainable(model, 2)
  weights = loop.loss_weights(config.loss, 2)
  state = loop.make_center_state(model, weights)
  assert state.centers.shape == (NUM_CLASSES, 256)
  assert all(v.name != "centers" for v in model.trainable_variables)
  step = loop.FineTuningStep("s", 2, 1, lr=0.0, lr_decay_iterations=100,
                             lr_decay_factor=0.1)  # the model stands still
  optimizer = loop.make_optimizer(config.train, step)
  optimizer.build(model.trainable_variables)
  iteration = loop.make_train_iteration(
      model, optimizer, tf.distribute.get_strategy(), weights,
      jit_compile=False, center_state=state)
  batch = next(iter(_make_dataset(None)))
  embedding = model({k: batch[k] for k in ("images", "pair_i", "pair_j")},
                    training=True)["embedding"].numpy()
  values = iteration(iter(_make_dataset(None)))
  assert "loss/center" in values
  # From 0, one SGD step on the unweighted loss (lr 0.5, B = 6):
  # c_j = 0.5 * 2 / 6 * sum of class j's embeddings (the embedding in
  # training mode: BatchNorm on the batch's statistics, as in the step).
  labels = batch["labels"].numpy()
  want = np.stack([0.5 * 2 / 6 * embedding[labels == j].sum(0)
                   for j in range(NUM_CLASSES)])
  np.testing.assert_allclose(state.centers.numpy(), want, rtol=1e-4,
                             atol=1e-6)
  assert float(values["loss/center"]) > 0


def test_defaults_have_no_centers_and_the_same_checkpoint(tmp_path):
  config = _config()
  weights = loop.loss_weights(config.loss, 2)
  assert weights["center_weight"] == 0.0 and not weights["triplet_soft_margin"]
  assert loop.make_center_state(_model(config), weights) is None
  _, path = _run(config, tmp_path, 2)
  names = [n for n, _ in tf.train.list_variables(path)]
  assert not [n for n in names if n.startswith(("centers", "center_"))]


def test_a_tiny_run_with_every_training_ingredient(tmp_path):
  """Random erasing, warmup + cosine, soft-margin triplet and center loss
  through stages.train on K x M synthetic batches: it trains, logs each
  loss and evaluates."""
  root = str(tmp_path / "synthetic")
  synthetic.generate(root, num_ids=6, seed=0)
  config = tiny_config.get_config()
  config.data.synthetic_dir = root
  config.data.random_erasing_prob = 0.5
  config.loss.update(dict(triplet_weight=1.0, triplet_soft_margin=True,
                          center_weight=5e-4, center_lr=0.5))
  config.stages.synthetic.update(dict(
      lr_schedule="cosine", step1_warmup_iterations=1,
      step2_warmup_iterations=2, images_per_id=3))
  workdir = str(tmp_path / "run")
  metrics = stages.train(config, workdir)
  assert 0.0 <= metrics["rank1"] <= 1.0
  tags = set()
  logdir = runs.tensorboard_dir(workdir)
  for name in os.listdir(logdir):
    path = os.path.join(logdir, name)
    if os.path.isfile(path):
      for event in tf.compat.v1.train.summary_iterator(path):
        tags.update(value.tag for value in event.summary.value)
  assert {"loss/triplet", "loss/center", "loss/cls", "lr"} <= tags


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
