"""Tests of the strong baseline's losses: soft-margin batch-hard triplet and
center loss, against NumPy oracles, and their config checks."""

import json

import keras
import numpy as np
import pytest
from scipy.spatial import distance
import tensorflow as tf

from keras_reid import config as config_lib
from keras_reid import default
from keras_reid import losses
from keras_reid.models import centers as centers_lib
from tests.training import tiny_config


def _pk_batch(seed, ids=4, per_id=3, dim=6):
  """A P x K batch (P identities x K images), ids in blocks."""
  rng = np.random.default_rng(seed)
  embeddings = rng.normal(size=(ids * per_id, dim)).astype(np.float32)
  labels = np.repeat(rng.permutation(10)[:ids], per_id)
  return embeddings, labels


def _numpy_batch_hard(embeddings, labels):
  """(hardest positive, hardest negative) distance of every anchor."""
  d = distance.cdist(embeddings.astype(np.float64), embeddings, "euclidean")
  same = labels[:, None] == labels[None, :]
  return np.where(same, d, -np.inf).max(1), np.where(same, np.inf, d).min(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_margin_triplet_matches_numpy(seed):
  embeddings, labels = _pk_batch(seed)
  pos, neg = _numpy_batch_hard(embeddings, labels)
  soft = losses.batch_hard_triplet_loss(embeddings, labels, soft=True,
                                        margin=123.0)  # margin not read
  np.testing.assert_allclose(float(soft), np.mean(np.log1p(np.exp(pos - neg))),
                             rtol=1e-5)
  hinge = losses.batch_hard_triplet_loss(embeddings, labels, margin=0.3)
  np.testing.assert_allclose(float(hinge),
                             np.mean(np.maximum(0.3 + pos - neg, 0)),
                             rtol=1e-5, atol=1e-7)


def test_soft_margin_through_the_table_and_its_gradient():
  embeddings, labels = _pk_batch(3)
  outputs = {"embedding": tf.constant(embeddings),
             "logits": tf.zeros((12, 10))}
  terms = losses.compute_losses(outputs, labels, np.zeros(0), ver_weight=0.0,
                                triplet_weight=1.0, triplet_soft_margin=True)
  pos, neg = _numpy_batch_hard(embeddings, labels)
  assert float(terms["triplet"]) == pytest.approx(
      np.mean(np.log1p(np.exp(pos - neg))), rel=1e-5)
  # Gradient: softplus' = sigmoid, through d = ||a - p|| (NumPy oracle).
  x = tf.Variable(embeddings)
  with tf.GradientTape() as tape:
    loss = losses.batch_hard_triplet_loss(x, labels, soft=True)
  got = tape.gradient(loss, x).numpy()
  d = distance.cdist(embeddings, embeddings)
  same = labels[:, None] == labels[None, :]
  want = np.zeros_like(embeddings, np.float64)
  b = len(labels)
  for a in range(b):
    p = np.argmax(np.where(same[a], d[a], -np.inf))
    n = np.argmin(np.where(same[a], np.inf, d[a]))
    s = 1 / (1 + np.exp(-(d[a, p] - d[a, n]))) / b
    unit_p = (embeddings[a] - embeddings[p]) / d[a, p]
    unit_n = (embeddings[a] - embeddings[n]) / d[a, n]
    want[a] += s * (unit_p - unit_n)
    want[p] -= s * unit_p
    want[n] += s * unit_n
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def _numpy_center(embeddings, centers, labels):
  diff = embeddings[:, None, :] - centers[None, :, :]
  d2 = (diff.astype(np.float64) ** 2).sum(-1)
  weights = (np.eye(len(centers))[labels] if labels.ndim == 1 else labels)
  return d2, float((weights * d2).sum(1).mean())


def test_center_loss_and_its_gradients_match_numpy():
  rng = np.random.default_rng(4)
  embeddings, labels = _pk_batch(4, ids=3, per_id=4, dim=5)
  labels = labels % 5  # classes 0..4, two of them without images
  centers = rng.normal(size=(5, 5)).astype(np.float32)
  d2, want = _numpy_center(embeddings, centers, labels)
  got_d2 = centers_lib.squared_distances(embeddings, centers).numpy()
  np.testing.assert_allclose(got_d2, d2, rtol=1e-4, atol=1e-4)
  x, c = tf.Variable(embeddings), tf.Variable(centers)
  with tf.GradientTape() as tape:
    loss = losses.center_loss(centers_lib.squared_distances(x, c), labels)
  assert float(loss) == pytest.approx(want, rel=1e-5)
  grad_x, grad_c = tape.gradient(loss, [x, c])
  b = len(labels)
  # d/df_i = 2 (f_i - c_{y_i}) / B; d/dc_j = -2 sum_{y_i = j} (f_i - c_j) / B.
  np.testing.assert_allclose(
      grad_x.numpy(), 2 * (embeddings - centers[labels]) / b,
      rtol=1e-4, atol=1e-5)
  want_c = np.zeros_like(centers)
  for i, y in enumerate(labels):
    want_c[y] -= 2 * (embeddings[i] - centers[y]) / b
  np.testing.assert_allclose(grad_c.numpy(), want_c, rtol=1e-4, atol=1e-5)
  assert not grad_c.numpy()[[k for k in range(5) if k not in labels]].any()
  # Soft labels: the expected squared distance under the distribution.
  soft = rng.dirichlet(np.ones(5), size=b).astype(np.float32)
  _, want_soft = _numpy_center(embeddings, centers, soft)
  assert float(losses.center_loss(got_d2, soft)) == pytest.approx(
      want_soft, rel=1e-4)


def test_center_sgd_update_is_the_bag_of_tricks_rule():
  """One SGD step at lr on the unweighted loss: c_j += lr * 2 / B *
  sum_{y_i = j} (f_i - c_j), whatever the loss weight."""
  embeddings, labels = _pk_batch(5, ids=2, per_id=3, dim=4)
  labels = np.repeat([0, 2], 3)
  centers = centers_lib.make_centers(3, 4)
  assert centers.name == centers_lib.CENTERS_NAME
  assert not centers.numpy().any()  # zero start
  with tf.GradientTape() as tape:
    loss = losses.center_loss(
        centers_lib.squared_distances(embeddings, centers), labels)
  optimizer = keras.optimizers.SGD(learning_rate=0.5)
  optimizer.apply_gradients([(tape.gradient(loss, centers), centers)])
  want = np.zeros((3, 4))
  for j in (0, 2):
    want[j] = 0.5 * 2 / 6 * embeddings[labels == j].sum(0)
  np.testing.assert_allclose(centers.numpy(), want, rtol=1e-5, atol=1e-6)


def test_describe_run_lists_the_new_losses():
  data = json.loads(default.get_config().to_json())
  data["loss"].update(triplet_weight=1.0, center_weight=5e-4,
                      triplet_soft_margin=True)
  described = config_lib.describe_run(data)
  assert described["losses"] == "cls+ver+triplet+center"
  assert described["loss.triplet_soft_margin"] is True


@pytest.mark.parametrize("loss, stage, keys", [
    (dict(center_weight=5e-4), dict(step2_iterations=0),
     ("loss.center_weight=0.0005", "step2_iterations=0")),
    (dict(triplet_weight=1.0), dict(step2_iterations=0),
     ("loss.triplet_weight=1.0", "step2_iterations=0")),
    (dict(center_weight=5e-4, center_lr=0.0), {},
     ("loss.center_weight=0.0005", "loss.center_lr=0.0")),
    (dict(center_weight=-1.0), {}, ("loss.center_weight=-1.0",)),
])
def test_bad_loss_combinations_are_config_errors(loss, stage, keys):
  config = tiny_config.get_config()
  config.loss.update(loss)
  config.stages.synthetic.update(stage)
  with pytest.raises(ValueError) as error:
    config_lib.validate_config(config)
  for key in keys:
    assert key in str(error.value)
  config = tiny_config.get_config()
  config.loss.update(dict(center_weight=5e-4, triplet_weight=1.0,
                          triplet_soft_margin=True))
  config_lib.validate_config(config)  # the strong baseline's losses


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
