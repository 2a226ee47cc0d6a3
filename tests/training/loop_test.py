"""Tests of one fine-tuning step: what trains in each step, NaN handling."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_reid.models import builders
from keras_reid.training import loop
from keras_reid.training import stage_setup
from keras_reid.training import stages
from tests.training import fixed_batch
from tests.training import tiny_config

NUM_CLASSES = 3
K, M, H, W = 3, 2, 64, 32


def _make_dataset(context):
  del context
  return fixed_batch.make_dataset(K, M, H, W)


def _setup(tmp_path, **train_overrides):
  config = tiny_config.get_config()
  config.train.update(train_overrides)
  model = builders.build_training_model(
      config.model, num_classes=NUM_CLASSES, input_shape=(H, W, 3), seed=0)
  writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
  return config, model, writer


def _weights(layer):
  return [w.numpy().copy() for w in layer.weights]


def _changed(before, after):
  return any(not np.array_equal(b, a) for b, a in zip(before, after))


def test_step1_trains_only_classifier_and_step2_trains_all(tmp_path):
  config, model, writer = _setup(tmp_path)
  strategy = tf.distribute.get_strategy()
  backbone0 = _weights(model.get_layer("backbone"))
  verifier0 = _weights(model.get_layer("verifier"))
  classifier0 = _weights(model.get_layer("classifier"))

  step1 = loop.FineTuningStep("s", 1, iterations=3, lr=0.05, lr_decay_iterations=100,
                              lr_decay_factor=0.1, batch_size=K * M)
  path = loop.run_fine_tuning_step(model, step1, make_dataset=_make_dataset,
                                   config=config, strategy=strategy,
                                   workdir=str(tmp_path), writer=writer)
  assert os.path.exists(path + ".index")
  # Frozen in step 1: BN moving statistics included (inference mode).
  assert not _changed(backbone0, _weights(model.get_layer("backbone")))
  assert not _changed(verifier0, _weights(model.get_layer("verifier")))
  assert _changed(classifier0, _weights(model.get_layer("classifier")))
  trainable = {v.path for v in model.trainable_variables}
  assert trainable and all("classifier" in p for p in trainable)

  step2 = loop.FineTuningStep("s", 2, iterations=3, lr=0.05, lr_decay_iterations=100,
                              lr_decay_factor=0.1, batch_size=K * M)
  loop.run_fine_tuning_step(model, step2, make_dataset=_make_dataset, config=config,
                            strategy=strategy, workdir=str(tmp_path), writer=writer)
  assert _changed(backbone0, _weights(model.get_layer("backbone")))
  assert _changed(verifier0, _weights(model.get_layer("verifier")))
  assert len(model.trainable_variables) == len(
      [v for v in model.variables if v.trainable]) > len(trainable)


def test_step1_with_all_heads_trains_verifier_on_the_frozen_base(tmp_path):
  config, model, writer = _setup(tmp_path)
  backbone0 = _weights(model.get_layer("backbone"))
  verifier0 = _weights(model.get_layer("verifier"))
  step1 = loop.FineTuningStep("s", 1, iterations=3, lr=0.05, lr_decay_iterations=100,
                              lr_decay_factor=0.1, batch_size=K * M, all_heads=True)
  loop.run_fine_tuning_step(model, step1, make_dataset=_make_dataset, config=config,
                            strategy=tf.distribute.get_strategy(),
                            workdir=str(tmp_path), writer=writer)
  assert not _changed(backbone0, _weights(model.get_layer("backbone")))
  # The verifier moves only through the verification loss: on in step 1.
  assert _changed(verifier0, _weights(model.get_layer("verifier")))
  weights = loop.loss_weights(config.loss, 1, verifiers_train=True)
  assert weights["ver_weight"] == config.loss.ver_weight
  assert loop.loss_weights(config.loss, 1)["ver_weight"] == 0.0


def _missing_gradient_warnings(workdir, model, config, all_heads):
  """The optimizer's "Gradients do not exist" warnings of a step 1 + 2."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for step, kwargs in ((1, dict(all_heads=all_heads)), (2, {})):
      loop.run_fine_tuning_step(
          model, loop.FineTuningStep("s", step, iterations=2, lr=0.05,
                                     lr_decay_iterations=100,
                                     lr_decay_factor=0.1, batch_size=K * M,
                                     **kwargs),
          make_dataset=_make_dataset, config=config,
          strategy=tf.distribute.get_strategy(),
          workdir=str(workdir),
          writer=tf.summary.create_file_writer(str(workdir / "tb")))
  return [str(w.message) for w in caught
          if "Gradients do not exist" in str(w.message)]


def test_without_the_verification_loss_every_variable_gets_a_gradient(
    tmp_path):
  config = tiny_config.get_config()
  config.loss.ver_weight = 0.0
  config.train.weight_decay = 0.0  # its gradient would reach the kernels
  # A stage from the backbone: step 1 trains every head it builds.
  keras.utils.set_random_seed(0)
  model = stage_setup.init_stage_model(None, config.stages.synthetic, config,
                                       NUM_CLASSES)
  assert not builders.has_verification_head(model)
  assert not [v.path for v in model.variables if "verifier" in v.path]
  assert _missing_gradient_warnings(tmp_path / "a", model, config, True) == []
  # The same loss on a model with verification heads (as every model was
  # built before): the verifier's variables get none.
  keras.utils.set_random_seed(0)
  with_heads = builders.build_training_model(
      config.model, num_classes=NUM_CLASSES, input_shape=(H, W, 3),
      seed=config.seed)
  warned = _missing_gradient_warnings(tmp_path / "b", with_heads, config,
                                      True)
  assert warned and all("verifier/" in w for w in warned)
  # And it trained every other layer exactly as the model without them: a
  # run with ver_weight=0 learns what it learnt when it had the heads.
  for layer in model.layers:
    for a, b in zip(layer.get_weights(),
                    with_heads.get_layer(layer.name).get_weights(),
                    strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                 err_msg=layer.name)


def test_which_stages_train_all_heads_in_step1():
  config = tiny_config.get_config()
  stage = config.stages.synthetic
  assert stage_setup.step1_trains_all_heads(stage, 0)  # first stage: from backbone
  assert not stage_setup.step1_trains_all_heads(stage, 1)  # continues a model
  stage.init = "backbone"
  assert stage_setup.step1_trains_all_heads(stage, 1)
  stage.init = "/runs/other"  # a previous run's heads carry over
  assert not stage_setup.step1_trains_all_heads(stage, 0)
  stage.init = "backbone"
  stage.step1_trains = "classifiers"
  assert not stage_setup.step1_trains_all_heads(stage, 0)
  stage.step1_trains = "everything"
  with pytest.raises(ValueError, match="step1_trains"):
    stages.check_config(config)


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path):
  config, model, writer = _setup(tmp_path, checkpoint_every=1)
  step = loop.FineTuningStep("s", 2, iterations=50, lr=1e30, lr_decay_iterations=1000,
                             lr_decay_factor=0.1, batch_size=K * M)
  with pytest.raises(FloatingPointError, match="Last good checkpoint|last good checkpoint"):
    loop.run_fine_tuning_step(model, step, make_dataset=_make_dataset, config=config,
                              strategy=tf.distribute.get_strategy(),
                              workdir=str(tmp_path), writer=writer)
  latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints" / "s" / "step2"))
  assert latest is not None
  # The kept checkpoint holds only finite weights.
  for name, _ in tf.train.list_variables(latest):
    if name.startswith("model/") and "VARIABLE_VALUE" in name:
      value = tf.train.load_variable(latest, name)
      if np.issubdtype(np.asarray(value).dtype, np.floating):
        assert np.all(np.isfinite(value)), name


def _one_step_update(tmp_path, **train_overrides):
  """(weights before, after one step 2 iteration, reference gradients)."""
  config, model, _ = _setup(tmp_path, **train_overrides)
  del model
  config.model.cls_dropout = 0.0  # deterministic: the reference gradient
  config.model.ver_dropout = 0.0  # below sees the same network
  model = builders.build_training_model(
      config.model, num_classes=NUM_CLASSES, input_shape=(H, W, 3), seed=0)
  builders.set_step_trainable(model, 2)
  step2 = loop.FineTuningStep("s", 2, iterations=1, lr=0.1,
                              lr_decay_iterations=100, lr_decay_factor=0.1,
                              batch_size=K * M)
  strategy = tf.distribute.get_strategy()
  optimizer = loop.make_optimizer(config.train, step2)
  variables = model.trainable_variables
  optimizer.build(variables)
  batch = next(iter(_make_dataset(None)))
  weights = loop.loss_weights(config.loss, 2)
  with tf.GradientTape() as tape:
    outputs = model({k: batch[k] for k in ("images", "pair_i", "pair_j")},
                    training=True)
    total = loop.losses.compute_losses(outputs, batch["labels"],
                                       batch["pair_same"], **weights)["total"]
  grads = {v.path: g.numpy() for v, g in zip(variables,
                                             tape.gradient(total, variables))}
  before = {v.path: v.numpy().copy() for v in variables}
  train_iteration = loop.make_train_iteration(
      model, optimizer, strategy, weights, jit_compile=False,
      weight_decay=loop.coupled_weight_decay(config.train))
  train_iteration(iter(_make_dataset(None)))
  after = {v.path: v.numpy() for v in variables}
  return before, after, grads


def test_coupled_l2_decays_kernels_only_like_caffe(tmp_path):
  lr, wd = 0.1, 0.05
  before, after, grads = _one_step_update(
      tmp_path, weight_decay=wd, weight_decay_mode="coupled_l2", momentum=0.9)
  kernels = [p for p in before if p.endswith("kernel")]
  others = [p for p in before if not p.endswith("kernel")]
  assert "classifier/kernel" in kernels and "classifier/bias" in others
  assert any(p.endswith("gamma") for p in others)
  # SGD's first step (zero momentum buffer): w - lr * (g + wd * w) for a
  # kernel, w - lr * g for biases and BatchNorm parameters.
  for p in kernels:
    np.testing.assert_allclose(
        after[p], before[p] - lr * (grads[p] + wd * before[p]),
        rtol=1e-4, atol=2e-5, err_msg=p)
  for p in others:
    np.testing.assert_allclose(after[p], before[p] - lr * grads[p],
                               rtol=1e-4, atol=2e-5, err_msg=p)


def test_decoupled_decay_is_keras_weight_decay_on_every_variable(tmp_path):
  lr, wd = 0.1, 0.05
  before, after, grads = _one_step_update(
      tmp_path, weight_decay=wd, weight_decay_mode="decoupled", momentum=0.0)
  for p in ("classifier/kernel", "classifier/bias"):
    # Keras: w <- w - lr * wd * w, then the gradient step.
    expected = before[p] * (1 - lr * wd) - lr * grads[p]
    np.testing.assert_allclose(after[p], expected, rtol=1e-4, atol=1e-6)


def test_optimizer_names(tmp_path):
  config, _, _ = _setup(tmp_path)
  step = loop.FineTuningStep("s", 2, iterations=1, lr=0.1, lr_decay_iterations=100,
                             lr_decay_factor=0.1)
  config.train.optimizer = "adam"
  assert type(loop.make_optimizer(config.train, step)).__name__ == "Adam"
  config.train.optimizer = "adamw"
  with pytest.raises(ValueError, match="weight_decay_mode=decoupled"):
    loop.make_optimizer(config.train, step)
  config.train.weight_decay_mode = "decoupled"
  assert type(loop.make_optimizer(config.train, step)).__name__ == "AdamW"
  config.train.optimizer = "rmsprop"
  with pytest.raises(ValueError, match="adamw"):
    loop.make_optimizer(config.train, step)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
