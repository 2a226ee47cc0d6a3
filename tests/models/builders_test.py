"""Tests of the training model, head replacement, embedder and pair scorer."""

import numpy as np
import pytest

import keras

from configs import default
from keras_reid.models import builders

SHAPE = (32, 32, 3)  # keras.applications' smallest input.


def _config(**overrides):
  config = default.get_config().model
  config.update(overrides)
  return config


def _inputs(batch=4, shape=SHAPE):
  images = np.random.default_rng(0).uniform(-1, 1, (batch, *shape)).astype("float32")
  return {"images": images, "pair_i": np.array([0, 0, 1], "int32"),
          "pair_j": np.array([1, 2, 3], "int32")}


@pytest.fixture(scope="module")
def aux_model():
  return builders.build_training_model(
      _config(aux_heads=True), num_classes=3, input_shape=SHAPE, seed=0)


def test_outputs_have_stable_names_and_shapes(aux_model):
  outputs = aux_model(_inputs(), training=True)
  shapes = {k: tuple(v.shape) for k, v in outputs.items()}
  assert shapes == {
      "embedding": (4, 256), "logits": (4, 3), "verification_logits": (3, 2),
      "aux1_logits": (4, 3), "aux1_verification_logits": (3, 2),
      "aux2_logits": (4, 3), "aux2_verification_logits": (3, 2)}
  for name in builders.CLASSIFIER_LAYER_NAMES:
    assert aux_model.get_layer(name).units == 3


def test_no_aux_outputs_without_aux_heads():
  model = builders.build_training_model(_config(), num_classes=2, input_shape=SHAPE)
  assert set(model(_inputs())) == {"embedding", "logits", "verification_logits"}
  assert builders.normalization_for(_config()) == "tf"


def test_replace_classifiers_keeps_other_weights(aux_model):
  new = builders.replace_classifiers(aux_model, _config(aux_heads=True),
                                     num_classes=7, input_shape=SHAPE)
  assert tuple(new(_inputs())["logits"].shape) == (4, 7)
  for name in builders.CLASSIFIER_LAYER_NAMES:
    assert new.get_layer(name).kernel.shape[-1] == 7
  for name in ("backbone", "verifier", "aux1_fc", "aux2_verifier", "aux1_bn"):
    for old_w, new_w in zip(aux_model.get_layer(name).get_weights(),
                            new.get_layer(name).get_weights()):
      np.testing.assert_array_equal(old_w, new_w)
  x = _inputs()
  np.testing.assert_allclose(new(x)["embedding"], aux_model(x)["embedding"],
                             rtol=1e-5, atol=1e-6)


def test_freeze_bn_freezes_every_backbone_batch_norm():
  model = builders.build_training_model(_config(freeze_bn=True), num_classes=2,
                                        input_shape=SHAPE)
  bns = [layer for layer in model.get_layer("backbone").layers
         if isinstance(layer, keras.layers.BatchNormalization)]
  assert bns and not any(bn.trainable for bn in bns)
  assert model.get_layer("backbone").get_layer("conv1").trainable
  # Frozen BN runs on moving statistics even with training=True.
  x = _inputs()
  np.testing.assert_allclose(model(x, training=True)["embedding"],
                             model(x, training=False)["embedding"], rtol=1e-5, atol=1e-6)


def test_set_step_trainable():
  model = builders.build_training_model(_config(aux_heads=True), num_classes=2,
                                        input_shape=SHAPE)
  builders.set_step_trainable(model, 1)
  names = {w.path.split("/")[0] for w in model.trainable_weights}
  assert names == set(builders.CLASSIFIER_LAYER_NAMES)
  builders.set_step_trainable(model, 2, freeze_bn=True)
  assert len(model.trainable_weights) > 20
  assert not any(layer.trainable for layer in model.get_layer("backbone").layers
                 if isinstance(layer, keras.layers.BatchNormalization))


def test_step1_with_all_heads_trains_every_layer_outside_the_backbone():
  model = builders.build_training_model(_config(aux_heads=True), num_classes=2,
                                        input_shape=SHAPE)
  builders.set_step_trainable(model, 1, all_heads=True)
  names = {w.path.split("/")[0] for w in model.trainable_weights}
  assert names == {"classifier", "verifier", "aux1_classifier",
                   "aux1_verifier", "aux1_conv", "aux1_bn", "aux1_fc",
                   "aux2_classifier", "aux2_verifier", "aux2_conv", "aux2_bn",
                   "aux2_fc"}
  assert not model.get_layer("backbone").trainable_weights


def test_embedder_and_pair_scorer_share_the_trained_weights(aux_model):
  x = _inputs()
  reference = aux_model(x, training=False)
  embedder = builders.build_embedder(aux_model)
  np.testing.assert_allclose(embedder(x["images"]), reference["embedding"],
                             rtol=1e-5, atol=1e-6)
  scorer = builders.build_pair_scorer(aux_model)
  images = x["images"]
  probability = np.asarray(scorer({"images_a": images[x["pair_i"]],
                                   "images_b": images[x["pair_j"]]}))
  expected = keras.ops.softmax(reference["verification_logits"])[:, 1]
  np.testing.assert_allclose(probability, expected, rtol=1e-5, atol=1e-6)
  assert probability.shape == (3,)


def test_saved_model_round_trips(aux_model, tmp_path):
  path = str(tmp_path / "model.keras")
  aux_model.save(path)
  restored = keras.saving.load_model(path)
  x = _inputs()
  for key, value in aux_model(x).items():
    np.testing.assert_allclose(restored(x)[key], value, rtol=1e-5, atol=1e-6)
  assert restored.get_layer("ver_dropout").get_config()["mode"] == "pairwise"


def test_independent_mode_reaches_the_layer():
  model = builders.build_training_model(_config(ver_dropout_mode="independent"),
                                        num_classes=2, input_shape=SHAPE)
  assert model.get_layer("ver_dropout").mode == "independent"


def test_unknown_backbone_lists_valid_names():
  with pytest.raises(KeyError, match="mobilenet_v2"):
    builders.normalization_for(_config(backbone="alexnet"))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
