"""Tests of the training model, head replacement, embedder and pair scorer,
and of the strong baseline's model switches (BNNeck, retrieval feature)."""

import hashlib

import numpy as np
import pytest

import keras
import tensorflow as tf

from configs import default
from keras_reid import losses
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


def _deterministic_weights(model, seed=1):
  """Every variable of `model` set from a NumPy generator (variances > 0)."""
  rng = np.random.default_rng(seed)
  for v in model.weights:
    value = rng.normal(0, 0.3, tuple(v.shape))
    if v.path.endswith("moving_variance"):
      value = np.abs(value) + 0.5
    v.assign(value.astype("float32"))


# The default model (configs/default.py's model, 32x32, 3 classes) as built
# at commit 91977ac, before the strong-baseline keys existed: its variables
# (count, sha256 of "path shape trainable" lines) and, with
# `_deterministic_weights`, the sum of |output| of each inference output.
DEFAULT_MODEL = {
    False: (139, "ebed2edb134d07d0122fd14a6d82978aa95088d75b16d5ad51d4ffc6168c1f6e",
            {"embedding": 186.871951, "logits": 15.277354,
             "verification_logits": 1.199255}),
    True: (161, "4e9904d824871da311e4499aa782e6bd623b53a87ed02bd894a91d1249849c42",
           {"aux1_logits": 324.453615, "aux1_verification_logits": 1.756326,
            "aux2_logits": 619.955193, "aux2_verification_logits": 0.999524,
            "embedding": 186.871951, "logits": 7.318396,
            "verification_logits": 1.736697}),
}


@pytest.mark.parametrize("aux_heads", [False, True])
def test_default_model_is_unchanged_by_the_strong_baseline_keys(aux_heads):
  config = _config(aux_heads=aux_heads)
  assert (config.pooling, config.last_stride, config.bnneck,
          config.retrieval_feature) == ("avg", 2, False, "pooled")
  model = builders.build_training_model(config, num_classes=3,
                                        input_shape=SHAPE, seed=0)
  count, digest, sums = DEFAULT_MODEL[aux_heads]
  lines = "\n".join(f"{v.path} {tuple(v.shape)} {v.trainable}"
                    for v in model.weights)
  assert (len(model.weights), hashlib.sha256(lines.encode()).hexdigest()) == (
      count, digest)
  _deterministic_weights(model)
  images = np.random.default_rng(0).uniform(-1, 1, (4, *SHAPE)).astype("float32")
  outputs = model({"images": images, "pair_i": np.array([0, 1, 0], "int32"),
                   "pair_j": np.array([2, 3, 3], "int32")}, training=False)
  got = {k: float(np.abs(np.asarray(v, np.float64)).sum())
         for k, v in outputs.items()}
  # 1e-4: TensorFlow's oneDNN and Eigen kernels (keras_reid/onednn.py) round
  # differently, 1.1e-5 apart on these sums; a changed model moves them more.
  assert got == pytest.approx(sums, rel=1e-4)
  np.testing.assert_allclose(builders.build_embedder(model)(images),
                             outputs["embedding"], rtol=1e-6)


# The same model's initial weights under keras.utils.set_random_seed(0) and
# seed=0, as built before models without the verification loss dropped their
# verification heads (commit f0cc73d): (sum of |w| over model.weights, the
# same sums weighted by each variable's 1-based position).
DEFAULT_INITIAL_WEIGHTS = {
    False: (19573.203627485782, 1925351.9406693988),
    True: (115677.75622282922, 16028073.16293618),
}


def _abs_sums(model):
  return np.array([np.abs(np.asarray(v, np.float64)).sum()
                   for v in model.weights])


@pytest.mark.parametrize("aux_heads", [False, True])
def test_default_model_initial_weights_are_unchanged(aux_heads):
  keras.utils.set_random_seed(0)
  model = builders.build_training_model(_config(aux_heads=aux_heads),
                                        num_classes=3, input_shape=SHAPE,
                                        seed=0)
  sums = _abs_sums(model)
  got = (sums.sum(), (np.arange(1, len(sums) + 1) * sums).sum())
  assert got == pytest.approx(DEFAULT_INITIAL_WEIGHTS[aux_heads], rel=1e-6)


def _start_state(model):
  """Layer name -> initial weights and dropout seed-generator states."""
  state = {}
  for layer in model._flatten_layers(include_self=False, recursive=True):  # pylint: disable=protected-access
    if layer.name == "backbone":
      continue  # its layers are listed themselves
    values = [w.numpy() for w in layer.weights] + [
        g.state.numpy() for g in getattr(layer, "_seed_generators", [])]
    if values:
      state[layer.name] = values
  return state


@pytest.mark.parametrize("aux_heads", [False, True])
@pytest.mark.parametrize("seed", [0, None])
def test_without_the_verification_loss_no_verification_head_is_built(
    aux_heads, seed):
  config = _config(aux_heads=aux_heads)
  run_config = default.get_config()
  assert builders.verification_heads(run_config)
  run_config.loss.ver_weight = 0.0
  assert not builders.verification_heads(run_config)
  built = {}
  for verification in (True, False):
    keras.utils.set_random_seed(0)
    built[verification] = builders.build_training_model(
        config, num_classes=3, input_shape=SHAPE, seed=seed,
        verification=verification)
  with_heads, model = built[True], built[False]
  prefixes = ("",) + tuple(f"{k}_" for k in builders.AUX_KEYS[:2 * aux_heads])
  # Every other layer starts where it does in the model with heads (and so
  # where it did before models without the verification loss lost them).
  start, start_with_heads = _start_state(model), _start_state(with_heads)
  assert set(start_with_heads) - set(start) == {
      f"{p}{n}" for p in prefixes for n in ("ver_dropout", "verifier")}
  for name, values in start.items():
    for a, b in zip(values, start_with_heads[name], strict=True):
      np.testing.assert_array_equal(a, b, err_msg=name)
  verification_layers = {f"{p}{n}" for p in prefixes
                         for n in ("ver_dropout", *builders.VERIFIER_LAYER_NAMES)}
  assert verification_layers <= {layer.name for layer in with_heads.layers}
  assert not verification_layers & {layer.name for layer in model.layers}
  assert not [v.path for v in model.variables if "verifier" in v.path]
  assert len(with_heads.weights) - len(model.weights) == 2 * len(prefixes)
  assert builders.has_verification_head(with_heads)
  assert not builders.has_verification_head(model)
  out = model(_inputs(), training=True)
  assert not [k for k in out if "verification" in k]
  assert set(out) == set(with_heads(_inputs())) - {
      f"{p}verification_logits" for p in prefixes}
  # What needs the head says why it is missing and which key to set.
  with pytest.raises(ValueError, match=r"pair scorer needs a verification "
                     r"head.*loss.ver_weight=0.*ver_weight > 0"):
    builders.build_pair_scorer(model)
  with pytest.raises(ValueError, match=r"loss.ver_weight > 0\) continuing "
                     r"this model needs a verification head.*init=\"backbone\""):
    builders.replace_classifiers(model, config, num_classes=4,
                                 input_shape=SHAPE, verification=True)


def test_replace_classifiers_keeps_or_drops_the_verification_heads(aux_model):
  config = _config(aux_heads=True)
  kept = builders.replace_classifiers(aux_model, config, num_classes=4,
                                      input_shape=SHAPE)
  assert builders.has_verification_head(kept)
  dropped = builders.replace_classifiers(aux_model, config, num_classes=4,
                                         input_shape=SHAPE,
                                         verification=False)
  assert not builders.has_verification_head(dropped)
  assert not [v.path for v in dropped.weights if "verifier" in v.path]
  np.testing.assert_array_equal(dropped.get_layer("aux1_fc").kernel,
                                aux_model.get_layer("aux1_fc").kernel)
  again = builders.replace_classifiers(dropped, config, num_classes=5,
                                       input_shape=SHAPE)
  assert not builders.has_verification_head(again)


def _strong(**overrides):
  return _config(bnneck=True, cls_dropout=0.0, **overrides)


def _randomise_bnneck(model, prefix=""):
  """Non-trivial gamma and moving statistics, so the BN is no identity."""
  bn = model.get_layer(f"{prefix}bnneck")
  rng = np.random.default_rng(3)
  dim = bn.gamma.shape[0]
  bn.set_weights([rng.uniform(0.5, 2.0, dim).astype("float32"),
                  rng.normal(0.0, 0.5, dim).astype("float32"),
                  rng.uniform(0.5, 2.0, dim).astype("float32")])
  return bn


def _bn_inference(bn, x):
  """NumPy oracle of a BatchNormalization without shift, moving statistics."""
  gamma, mean, variance = bn.get_weights()
  return (np.asarray(x, np.float64) - mean) / np.sqrt(variance + bn.epsilon) * gamma


def test_bnneck_sits_between_the_feature_and_the_classifier():
  model = builders.build_training_model(_strong(), num_classes=3,
                                        input_shape=SHAPE, seed=0)
  bn = _randomise_bnneck(model)
  assert isinstance(bn, keras.layers.BatchNormalization)
  assert not bn.center and bn.scale
  assert [w.path for w in bn.weights] == [
      "bnneck/gamma", "bnneck/moving_mean", "bnneck/moving_variance"]
  classifier = model.get_layer("classifier")
  assert not classifier.use_bias and len(classifier.weights) == 1
  x = _inputs()
  out = model(x, training=False)
  # "embedding" (what the triplet loss reads) is the feature before the BN.
  feature = model.get_layer("backbone")(x["images"], training=False)["feature"]
  np.testing.assert_allclose(out["embedding"], feature, rtol=1e-6)
  assert [t.output for t in losses.LOSS_TERMS if t.name == "triplet"] == [
      "embedding"]
  # The classifier reads the BN's output: moving statistics at inference.
  kernel = classifier.kernel.numpy()
  np.testing.assert_allclose(out["logits"], _bn_inference(bn, feature) @ kernel,
                             rtol=1e-4, atol=1e-5)
  # Retrieval on the pooled feature (the default): no extra output, and the
  # embedder returns the feature before the BN.
  assert set(out) == {"embedding", "logits", "verification_logits"}
  np.testing.assert_allclose(builders.build_embedder(model)(x["images"]),
                             out["embedding"], rtol=1e-6)
  # The batch's statistics in training (this updates the moving ones).
  train = model(x, training=True)
  f = np.asarray(train["embedding"], np.float64)
  normalised = ((f - f.mean(0)) / np.sqrt(f.var(0) + bn.epsilon)
                * bn.gamma.numpy())
  np.testing.assert_allclose(train["logits"], normalised @ kernel, rtol=1e-3,
                             atol=1e-4)


def test_bnneck_retrieval_embeds_after_the_bnneck():
  model = builders.build_training_model(
      _strong(retrieval_feature="bnneck"), num_classes=3, input_shape=SHAPE,
      seed=0)
  bn = _randomise_bnneck(model)
  x = _inputs()
  out = model(x, training=False)
  want = _bn_inference(bn, out["embedding"])
  assert not np.allclose(want, out["embedding"], atol=1e-3)
  np.testing.assert_allclose(out[builders.RETRIEVAL_OUTPUT], want, rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(builders.build_embedder(model)(x["images"]), want,
                             rtol=1e-4, atol=1e-5)
  embed = builders.embedding_function(model)
  np.testing.assert_allclose(embed(tf.constant(x["images"])), want, rtol=1e-4,
                             atol=1e-5)
  # The pair scorer stays on the feature the verifier trains on.
  scorer = builders.build_pair_scorer(model)
  images = x["images"]
  probability = scorer({"images_a": images[x["pair_i"]],
                        "images_b": images[x["pair_j"]]})
  np.testing.assert_allclose(
      probability, keras.ops.softmax(out["verification_logits"])[:, 1],
      rtol=1e-5, atol=1e-6)


def test_bnneck_on_every_classifier_carries_over_to_a_new_stage():
  config = _strong(aux_heads=True, retrieval_feature="bnneck")
  model = builders.build_training_model(config, num_classes=2,
                                        input_shape=SHAPE, seed=0)
  for prefix in ("", "aux1_", "aux2_"):
    _randomise_bnneck(model, prefix)
    assert not model.get_layer(f"{prefix}classifier").use_bias
  builders.set_step_trainable(model, 1, all_heads=True)
  names = {w.path.split("/")[0] for w in model.trainable_weights}
  assert {"bnneck", "aux1_bnneck", "aux2_bnneck"} <= names
  builders.set_step_trainable(model, 1)
  names = {w.path.split("/")[0] for w in model.trainable_weights}
  assert names == set(builders.CLASSIFIER_LAYER_NAMES)
  # A new stage replaces the classifiers only: the BNNecks, part of the
  # retrieval feature, keep their weights.
  new = builders.replace_classifiers(model, config, num_classes=5,
                                     input_shape=SHAPE)
  for prefix in ("", "aux1_", "aux2_"):
    for a, b in zip(model.get_layer(f"{prefix}bnneck").get_weights(),
                    new.get_layer(f"{prefix}bnneck").get_weights()):
      np.testing.assert_array_equal(a, b)
  x = _inputs()
  np.testing.assert_allclose(builders.build_embedder(new)(x["images"]),
                             builders.build_embedder(model)(x["images"]),
                             rtol=1e-6)


def test_strong_model_round_trips_through_keras_saving(tmp_path):
  model = builders.build_training_model(
      _strong(retrieval_feature="bnneck", pooling="gem", last_stride=1),
      num_classes=3, input_shape=SHAPE, seed=0)
  _randomise_bnneck(model)
  model.get_layer("backbone").get_layer("gem_pool").p_weight.assign(2.5)
  path = str(tmp_path / "model.keras")
  model.save(path)
  restored = keras.saving.load_model(path)
  x = _inputs()
  for key, value in model(x, training=False).items():
    np.testing.assert_allclose(restored(x, training=False)[key], value,
                               rtol=1e-5, atol=1e-6)
  assert float(restored.get_layer("backbone").get_layer(
      "gem_pool").p_weight) == 2.5


@pytest.mark.parametrize("key, value, expected", [
    ("pooling", "max", "config.model.pooling='max': expected one of"),
    ("retrieval_feature", "after",
     "config.model.retrieval_feature='after': expected one of"),
    ("last_stride", 1, "not supported by model.backbone='inception_v3'"),
])
def test_model_keys_out_of_their_registries_are_named(key, value, expected):
  config = _config(backbone="inception_v3", **{key: value})
  with pytest.raises(ValueError, match=expected):
    builders.build_training_model(config, num_classes=2, input_shape=(75, 75, 3))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
