"""Tests of the phase clock: its arithmetic on a scripted clock, and that a
fine-tuning step puts its time in the right phases (a whole run's
phase_seconds: tests/training/train_test.py)."""

import time

import pytest
import tensorflow as tf

from keras_reid.models import builders
from keras_reid.training import loop
from keras_reid.training import timing
from tests.training import fixed_batch
from tests.training import tiny_config


class _ScriptedTime:
  """perf_counter that returns what the test says."""

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_phases_add_up_on_a_scripted_clock(monkeypatch):
  now = _ScriptedTime()
  monkeypatch.setattr(timing.time, "perf_counter", now)
  clock = timing.PhaseClock()
  with clock.phase("evaluation"):
    now.now += 3.0
    with clock.phase("summaries"):  # nested: counts as evaluation
      now.now += 1.0
    clock.add("iterations", 50.0)  # inside a phase: not counted again
  clock.add("step_start", 2.0)
  now.now += 2.0
  for first in (True, False, False):
    clock.count_iteration(8, first=first)
  clock.add("iterations", 4.0)
  now.now += 4.0
  with clock.phase("checkpoint_saves"):
    now.now += 0.5
  now.now += 1.5  # outside every phase: "other"

  got = clock.breakdown()
  assert got["total_seconds"] == pytest.approx(12.0)
  assert got["seconds"] == pytest.approx(dict(
      step_start=2.0, iterations=4.0, evaluation=4.0, checkpoint_saves=0.5,
      summaries=0.0, pseudo_labels=0.0, other=1.5))
  assert got["images_trained"] == 24
  # 16 images in the iterations phase's 4 s; 24 over the whole 12 s.
  assert got["images_per_second"] == pytest.approx(
      dict(iterations=4.0, run=2.0))
  line = timing.describe(got)
  assert line.startswith("Time 12 s, 2 training images/s over the run: ")
  assert "iterations 4 s (33%, 4 img/s)" in line


def test_an_unknown_phase_is_refused():
  clock = timing.PhaseClock()
  with pytest.raises(ValueError, match="'training'.*step_start"):
    with clock.phase("training"):
      pass
  with pytest.raises(ValueError, match="'io'"):
    clock.add("io", 1.0)


K, M, H, W = 3, 2, 64, 32


def _make_dataset(context):
  del context
  return fixed_batch.make_dataset(K, M, H, W)


def test_a_step_puts_evaluations_checkpoints_and_iterations_apart(tmp_path):
  config = tiny_config.get_config()
  config.train.checkpoint_every = 2
  model = builders.build_training_model(
      config.model, num_classes=K, input_shape=(H, W, 3), seed=0)
  writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
  step = loop.FineTuningStep("s", 2, iterations=6, lr=0.01,
                             lr_decay_iterations=100, lr_decay_factor=0.1,
                             batch_size=K * M, eval_every=3)
  evaluations = []

  def slow_evaluate(model):
    del model
    evaluations.append(time.perf_counter())
    time.sleep(1.0)
    return {"rank1": 0.5}

  clock = timing.PhaseClock()
  loop.run_fine_tuning_step(model, step, make_dataset=_make_dataset,
                            config=config, strategy=tf.distribute.get_strategy(),
                            workdir=str(tmp_path), writer=writer,
                            evaluate=slow_evaluate, clock=clock)
  got = clock.breakdown()
  seconds = got["seconds"]
  assert len(evaluations) == 2  # at iterations 3 and 6
  # The evaluations' 2 s of sleep are in "evaluation" (its summaries
  # counted apart), not in the iterations (6 of a tiny model: well under).
  assert 2.0 <= seconds["evaluation"] < 3.0
  assert 0 < seconds["iterations"] < 1.0
  assert seconds["checkpoint_saves"] > 0  # iterations 2, 4, 6 and the last
  assert seconds["step_start"] > 0 and seconds["summaries"] > 0
  # Every iteration's images; the first one's time is start-up's.
  assert got["images_trained"] == 6 * K * M
  assert got["images_per_second"]["iterations"] == pytest.approx(
      5 * K * M / seconds["iterations"])
  assert sum(seconds.values()) == pytest.approx(got["total_seconds"])


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
