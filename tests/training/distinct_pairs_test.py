"""train.distinct_pairs: the verification heads once per distinct pair.

The pipeline repeats each positive pair to match the negatives
(pipeline.pair_indices); with the key on the step runs the heads on the
distinct pairs and gathers their logits back, which must leave the loss
and the update unchanged when no dropout mask is drawn.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_reid import config as config_lib
from keras_reid.data import pipeline
from keras_reid.models import builders
from keras_reid.training import loop
from tests.training import tiny_config

NUM_CLASSES = 3
K, M, H, W = 3, 2, 64, 32


def _batch():
  rng = np.random.default_rng(0)
  pair_i, pair_j, pair_same = pipeline.pair_indices(K, M)
  return dict(images=rng.normal(size=(K * M, H, W, 3)).astype(np.float32),
              labels=np.repeat(np.arange(K), M).astype(np.int32),
              pair_i=pair_i, pair_j=pair_j, pair_same=pair_same)


def _make_dataset(context, first_batch=0):
  del context, first_batch
  return tf.data.Dataset.from_tensors(_batch()).repeat()


def test_distinct_pair_indices_against_numpy():
  pair_i, pair_j, _ = pipeline.pair_indices(4, 3)
  distinct_i, distinct_j, copies = loop.distinct_pair_indices(pair_i, pair_j)
  distinct = set(zip(pair_i.tolist(), pair_j.tolist()))
  assert len(pair_i) > len(distinct)  # the positives are repeated
  assert sorted(zip(distinct_i.numpy().tolist(),
                    distinct_j.numpy().tolist())) == sorted(distinct)
  np.testing.assert_array_equal(tf.gather(distinct_i, copies), pair_i)
  np.testing.assert_array_equal(tf.gather(distinct_j, copies), pair_j)


def _one_step(model, config, initial, *, distinct_pairs):
  """(step's scalars, weights after) of one step 2 iteration from `initial`."""
  model.set_weights(initial)
  step2 = loop.FineTuningStep("s", 2, iterations=1, lr=0.1,
                              lr_decay_iterations=100, lr_decay_factor=0.1,
                              batch_size=K * M)
  optimizer = loop.make_optimizer(config.train, step2)
  iteration = loop.make_train_iteration(
      model, optimizer, tf.distribute.get_strategy(),
      loop.loss_weights(config.loss, 2), jit_compile=False,
      distinct_pairs=distinct_pairs,
      weight_decay=loop.coupled_weight_decay(config.train))
  values = iteration(iter(_make_dataset(None)))
  return ({k: float(v) for k, v in values.items()},
          [w.copy() for w in model.get_weights()])


def test_one_step_gives_the_same_loss_and_update_without_dropout():
  config = tiny_config.get_config()
  config.model.cls_dropout = 0.0
  config.model.ver_dropout = 0.0  # no masks: the two forms are one function
  model = builders.build_training_model(
      config.model, num_classes=NUM_CLASSES, input_shape=(H, W, 3), seed=0)
  builders.set_step_trainable(model, 2)
  initial = [w.copy() for w in model.get_weights()]
  off, weights_off = _one_step(model, config, initial, distinct_pairs=False)
  on, weights_on = _one_step(model, config, initial, distinct_pairs=True)
  assert off["loss/ver"] > 0
  # float32; only the summation order of the heads' gradients differs.
  for key in off:
    np.testing.assert_allclose(on[key], off[key], rtol=1e-6, err_msg=key)
  # The update (lr 0.1) differs by float32 rounding of the gradients' sums
  # (measured <= 8e-6 in a conv kernel).
  moved = 0
  for before, a, b in zip(initial, weights_off, weights_on):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=2e-5)
    moved += not np.array_equal(before, a)
  assert moved > 10  # the step did update the weights compared


def test_repeated_pairs_share_one_dropout_mask():
  config = tiny_config.get_config()  # ver_dropout 0.5, "pairwise"
  model = builders.build_training_model(
      config.model, num_classes=NUM_CLASSES, input_shape=(H, W, 3), seed=0)
  batch = _batch()
  positive = np.flatnonzero(batch["pair_same"])[0]
  copies_of_first = np.flatnonzero(
      (batch["pair_i"] == batch["pair_i"][positive])
      & (batch["pair_j"] == batch["pair_j"][positive]))
  assert len(copies_of_first) > 1

  def logits(pair_i, pair_j):
    inputs = {"images": batch["images"], "pair_i": pair_i, "pair_j": pair_j}
    return model({k: tf.convert_to_tensor(v) for k, v in inputs.items()},
                 training=True)["verification_logits"]
  repeated = logits(batch["pair_i"], batch["pair_j"]).numpy()[copies_of_first]
  assert not np.allclose(repeated[0], repeated[1])  # a mask per copy
  distinct_i, distinct_j, copies = loop.distinct_pair_indices(
      batch["pair_i"], batch["pair_j"])
  shared = tf.gather(logits(distinct_i, distinct_j), copies).numpy()
  for row in shared[copies_of_first]:
    np.testing.assert_array_equal(row, shared[copies_of_first[0]])


def test_the_key_reaches_the_train_step(tmp_path, monkeypatch):
  config = tiny_config.get_config()
  config.train.distinct_pairs = True
  model = builders.build_training_model(
      config.model, num_classes=NUM_CLASSES, input_shape=(H, W, 3), seed=0)
  seen = []
  make = loop.make_train_iteration

  def spy(*args, **kwargs):
    seen.append(kwargs["distinct_pairs"])
    return make(*args, **kwargs)
  monkeypatch.setattr(loop, "make_train_iteration", spy)
  step = loop.FineTuningStep("s", 2, iterations=1, lr=0.01,
                             lr_decay_iterations=100, lr_decay_factor=0.1,
                             batch_size=K * M)
  loop.run_fine_tuning_step(
      model, step, make_dataset=_make_dataset, config=config,
      strategy=tf.distribute.get_strategy(), workdir=str(tmp_path),
      writer=tf.summary.create_file_writer(str(tmp_path / "tb")))
  assert seen == [True]


def test_defaults_off_and_rejected_with_xla():
  config = tiny_config.get_config()
  assert config.train.distinct_pairs is False
  config.train.distinct_pairs = True
  config_lib.validate_config(config)
  config.train.jit_compile = True
  with pytest.raises(ValueError, match="train.distinct_pairs.*jit_compile"):
    config_lib.validate_config(config)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
