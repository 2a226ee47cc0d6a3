"""Tests of rebuilding a run's model from its config and a checkpoint.

A run with loss.ver_weight=0 has no verification heads, except one trained
before such runs dropped them: its checkpoints hold heads its config does
not ask for, and it must restore (with them) all the same.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import default
from keras_reid.models import builders
from keras_reid.models import restore

SHAPE = (32, 32, 3)


def _run_config(*, ver_weight, aux_heads):
  config = default.get_config()
  config.data.image_height, config.data.image_width = SHAPE[:2]
  config.model.aux_heads = aux_heads
  config.loss.ver_weight = ver_weight
  return config


def _checkpoint(tmp_path, *, verification, aux_heads):
  """A training-style checkpoint (model + optimizer) of random weights."""
  keras.utils.set_random_seed(7)
  model = builders.build_training_model(
      _run_config(ver_weight=1.0, aux_heads=aux_heads).model, num_classes=3,
      input_shape=SHAPE, seed=0, verification=verification)
  rng = np.random.default_rng(1)
  for v in model.weights:
    v.assign(rng.normal(0, 0.1, tuple(v.shape)).astype("float32"))
  optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
  optimizer.build(model.trainable_variables)
  path = tf.train.Checkpoint(model=model, optimizer=optimizer).save(
      str(tmp_path / "ckpt"))
  return model, path


def _same_weights(a, b):
  assert [v.path for v in a.weights] == [v.path for v in b.weights]
  for x, y in zip(a.weights, b.weights):
    np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)


@pytest.mark.parametrize("aux_heads", [False, True])
@pytest.mark.parametrize("ver_weight, trained_with_heads", [
    (3.0, True),   # the verification loss on: heads, as always
    (0.0, False),  # off: no heads
    (0.0, True),   # off, trained before ver_weight=0 dropped the heads
])
def test_rebuild_builds_the_layout_the_checkpoint_holds(
    tmp_path, aux_heads, ver_weight, trained_with_heads):
  saved, path = _checkpoint(tmp_path, verification=trained_with_heads,
                            aux_heads=aux_heads)
  config = _run_config(ver_weight=ver_weight, aux_heads=aux_heads)
  model = restore.rebuild_model(config, 3, path)
  assert builders.has_verification_head(model) == trained_with_heads
  _same_weights(model, saved)
  if trained_with_heads:  # CIR works on an older run's heads
    builders.build_pair_scorer(model)


def test_a_checkpoint_without_heads_does_not_restore_into_heads(tmp_path):
  _, path = _checkpoint(tmp_path, verification=False, aux_heads=False)
  config = _run_config(ver_weight=3.0, aux_heads=False)
  with pytest.raises(AssertionError):
    restore.rebuild_model(config, 3, path)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
