"""Tests of the lr schedules: the paper's step decay, warmup, cosine."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_reid import config as config_lib
from keras_reid import schema
from keras_reid.training import loop
from keras_reid.training import stages
from tests.training import tiny_config


def _step(**kwargs):
  fields = dict(stage="s", step=2, iterations=100, lr=0.01,
                lr_decay_iterations=30, lr_decay_factor=0.1)
  fields.update(kwargs)
  return loop.FineTuningStep(**fields)


def _values(schedule, iterations):
  return np.array([float(schedule(t)) for t in iterations])


def test_default_stage_keys_give_the_papers_step_decay_unchanged():
  stage = schema.stage_config(step2_lr=0.01, lr_decay_iterations=30)
  step = loop.stage_steps("s", stage, all_heads=False)[1]
  schedule = loop.learning_rate_schedule(step)
  # The very object the optimizer had before warmup / cosine existed.
  assert type(schedule) is keras.optimizers.schedules.ExponentialDecay
  assert schedule.get_config() == dict(
      initial_learning_rate=0.01, decay_steps=30, decay_rate=0.1,
      staircase=True, name="ExponentialDecay")
  t = np.arange(0, 100, 7)
  np.testing.assert_allclose(_values(schedule, t), 0.01 * 0.1 ** (t // 30),
                             rtol=1e-6)


def test_step_decay_with_linear_warmup_by_hand():
  step = _step(warmup_iterations=10, warmup_start_factor=0.1)
  schedule = loop.learning_rate_schedule(step)
  # Bag of tricks: lr * (f + (1 - f) * t / W) while t < W, then the step
  # decay at its own (unshifted) points.
  expected = {0: 0.001, 5: 0.01 * (0.1 + 0.9 * 0.5), 9: 0.01 * 0.91,
              10: 0.01, 29: 0.01, 30: 0.001, 61: 1e-4}
  got = _values(schedule, list(expected))
  np.testing.assert_allclose(got, list(expected.values()), rtol=1e-5)


def test_cosine_decay_by_hand_with_and_without_warmup():
  lr, total, warmup, f = 0.01, 100, 20, 0.25
  plain = loop.learning_rate_schedule(_step(lr_schedule="cosine"))
  warm = loop.learning_rate_schedule(_step(
      lr_schedule="cosine", warmup_iterations=warmup, warmup_start_factor=f))
  t = np.arange(0, total + 1)
  np.testing.assert_allclose(
      _values(plain, t), lr * 0.5 * (1 + np.cos(np.pi * t / total)),
      rtol=1e-5, atol=1e-9)
  hand = np.where(
      t < warmup, lr * (f + (1 - f) * t / warmup),
      lr * 0.5 * (1 + np.cos(np.pi * (t - warmup) / (total - warmup))))
  np.testing.assert_allclose(_values(warm, t), hand, rtol=1e-5, atol=1e-9)
  assert float(warm(warmup)) == pytest.approx(lr)


def test_stage_steps_read_the_warmup_and_schedule_keys():
  stage = schema.stage_config(lr_schedule="cosine", step1_warmup_iterations=3,
                              step2_warmup_iterations=7,
                              warmup_start_factor=0.01)
  step1, step2 = loop.stage_steps("s", stage, all_heads=True)
  assert (step1.lr_schedule, step1.warmup_iterations) == ("cosine", 3)
  assert (step2.lr_schedule, step2.warmup_iterations) == ("cosine", 7)
  assert step1.warmup_start_factor == step2.warmup_start_factor == 0.01


def test_lr_is_a_function_of_the_restored_iteration(tmp_path):
  """A resumed step's optimizer, restored from its checkpoint, is where an
  uninterrupted one is on the lr curve."""
  config = tiny_config.get_config()
  step = _step(lr_schedule="cosine", warmup_iterations=10)
  variable = keras.Variable(np.zeros(3, np.float32))
  optimizer = loop.make_optimizer(config.train, step)
  optimizer.build([variable])
  for _ in range(17):
    optimizer.apply_gradients([(tf.ones(3), variable)])
  path = tf.train.Checkpoint(optimizer=optimizer).save(str(tmp_path / "ckpt"))
  resumed = loop.make_optimizer(config.train, step)
  resumed.build([keras.Variable(np.zeros(3, np.float32))])
  tf.train.Checkpoint(optimizer=resumed).restore(path)
  hand = 0.01 * 0.5 * (1 + math.cos(math.pi * (17 - 10) / 90))
  assert float(resumed.learning_rate) == pytest.approx(hand, rel=1e-5)
  assert float(optimizer.learning_rate) == pytest.approx(hand, rel=1e-5)


def test_linear_warmup_round_trips_its_config():
  schedule = loop.learning_rate_schedule(_step(warmup_iterations=4))
  again = loop.LinearWarmup.from_config(schedule.get_config())
  t = np.arange(12)
  np.testing.assert_allclose(_values(again, t), _values(schedule, t))


@pytest.mark.parametrize("overrides, keys", [
    (dict(step2_warmup_iterations=50, step2_iterations=40),
     ("step2_warmup_iterations=50", "step2_iterations=40")),
    (dict(step1_warmup_iterations=5, step1_iterations=4),
     ("step1_warmup_iterations=5", "step1_iterations=4")),
    (dict(step2_warmup_iterations=30, step2_iterations=400,
          lr_decay_iterations=20),
     ("step2_warmup_iterations=30", "lr_decay_iterations=20")),
    (dict(warmup_start_factor=1.5), ("warmup_start_factor=1.5",)),
    (dict(step2_warmup_iterations=-1), ("step2_warmup_iterations=-1",)),
])
def test_bad_warmups_are_config_errors_naming_the_keys(overrides, keys):
  config = tiny_config.get_config()
  config.stages.synthetic.update(overrides)
  with pytest.raises(ValueError) as error:
    config_lib.validate_config(config)
  for key in keys:
    assert key in str(error.value)


def test_cosine_ignores_the_decay_interval_and_unknown_schedules_fail():
  config = tiny_config.get_config()
  config.stages.synthetic.update(dict(
      lr_schedule="cosine", step2_warmup_iterations=30, step2_iterations=400,
      lr_decay_iterations=20))
  stages.check_config(config)  # no decay points to collide with
  config.stages.synthetic.lr_schedule = "linear"
  with pytest.raises(ValueError, match=r"lr_schedule='linear'.*cosine"):
    stages.check_config(config)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
