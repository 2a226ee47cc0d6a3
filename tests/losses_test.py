"""Tests of the losses against values computed by hand, and of the loss table."""

import dataclasses
import json
import math

from keras import ops
import numpy as np
import pytest
import tensorflow as tf

from keras_reid import config as config_lib
from keras_reid import default
from keras_reid import losses
from keras_reid import schema
from keras_reid.training import loop

LOGITS = np.array([[2.0, 0.0], [0.0, 1.0]], "float32")
VER = np.array([[0.0, 1.0], [1.0, 1.0], [3.0, 0.0]], "float32")


def _ce(logits, target):
  return -math.log(math.exp(logits[target]) / sum(math.exp(v) for v in logits))


def test_classification_loss_hand_computed():
  expected = (_ce([2, 0], 0) + _ce([0, 1], 1)) / 2
  assert float(losses.classification_loss(LOGITS, np.array([0, 1]))) == (
      pytest.approx(expected, 1e-5))
  # Soft labels: the same values as a float distribution, and a mixed one.
  soft = np.array([[1.0, 0.0], [0.25, 0.75]], "float32")
  expected = (_ce([2, 0], 0) + 0.25 * _ce([0, 1], 0) + 0.75 * _ce([0, 1], 1)) / 2
  assert float(losses.classification_loss(LOGITS, soft)) == pytest.approx(expected, 1e-5)
  # Label smoothing 0.2 with 2 classes: targets 0.9 / 0.1.
  expected = (0.9 * _ce([2, 0], 0) + 0.1 * _ce([2, 0], 1)
              + 0.9 * _ce([0, 1], 1) + 0.1 * _ce([0, 1], 0)) / 2
  got = losses.classification_loss(LOGITS, np.array([0, 1]), label_smoothing=0.2)
  assert float(got) == pytest.approx(expected, 1e-5)


def test_verification_loss_hand_computed():
  same = np.array([1.0, 0.0, 0.0], "float32")
  expected = (_ce([0, 1], 1) + math.log(2) + _ce([3, 0], 0)) / 3
  assert float(losses.verification_loss(VER, same)) == pytest.approx(expected, 1e-5)


def test_batch_hard_triplet_hand_computed():
  embeddings = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 3.0]], "float32")
  labels = np.array([0, 0, 1, 1])
  # Anchor 0: pos 1, neg min(2, 3) = 2 -> relu(.5 + 1 - 2) = 0.
  # Anchor 1: pos 1, neg min(sqrt 5, sqrt 10) -> 0.
  # Anchor 2: pos 1, neg min(2, sqrt 5) = 2 -> 0; anchor 3: pos 1, neg 3 -> 0.
  # With margin 1.5: anchor 0: .5, 1: 2.5 - sqrt5, 2: .5, 3: 0.
  got = losses.batch_hard_triplet_loss(embeddings, labels, margin=1.5)
  expected = (0.5 + 2.5 - math.sqrt(5) + 0.5 + 0.0) / 4
  assert float(got) == pytest.approx(expected, 1e-5)


def test_cluster_memory_loss_is_infonce_against_numpy():
  rng = np.random.default_rng(0)
  similarities = rng.uniform(-1, 1, size=(6, 4)).astype("float32")
  labels = np.array([0, 3, 1, 1, 2, 0])
  got = losses.cluster_memory_loss(similarities, labels, temperature=0.05)
  # -log softmax(s / t)[label], with a max shift for stability.
  z = similarities.astype(np.float64) / 0.05
  z -= z.max(axis=1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
  expected = -log_p[np.arange(6), labels].mean()
  assert float(got) == pytest.approx(expected, rel=1e-5)
  # The temperature matters: at 1 it is another value.
  assert float(losses.cluster_memory_loss(similarities, labels,
                                          temperature=1.0)) < expected / 5
  # In compute_losses only when the memory's similarities are there.
  outputs = {"embedding": np.zeros((6, 3), "float32"),
             "logits": np.zeros((6, 4), "float32")}
  terms = losses.compute_losses(outputs, labels, np.zeros(3),
                                cluster_memory_weight=2.0)
  assert "cluster_memory" not in terms
  terms = losses.compute_losses(
      dict(outputs, cluster_similarities=similarities), labels, np.zeros(3),
      cls_weight=0.0, cluster_memory_weight=2.0)
  assert list(terms) == ["cluster_memory", "total"]
  assert float(terms["total"]) == pytest.approx(2 * expected, rel=1e-5)


def test_compute_losses_weights_and_terms():
  outputs = {"embedding": np.zeros((2, 3), "float32"), "logits": LOGITS,
             "verification_logits": VER, "aux1_logits": LOGITS[::-1],
             "aux1_verification_logits": VER, "aux2_logits": LOGITS,
             "aux2_verification_logits": VER[::-1]}
  labels = np.array([0, 1])
  same = np.array([1.0, 0.0, 0.0], "float32")
  terms = losses.compute_losses(outputs, labels, same, cls_weight=1.0,
                                ver_weight=3.0, aux_weight=0.3)
  assert set(terms) == {"cls", "ver", "aux1_cls", "aux1_ver", "aux2_cls",
                        "aux2_ver", "total"}
  cls = float(losses.classification_loss(LOGITS, labels))
  aux1_cls = float(losses.classification_loss(LOGITS[::-1], labels))
  ver = float(losses.verification_loss(VER, same))
  aux2_ver = float(losses.verification_loss(VER[::-1], same))
  expected = cls + 3 * ver + 0.3 * (aux1_cls + 3 * ver + cls + 3 * aux2_ver)
  assert float(terms["total"]) == pytest.approx(expected, 1e-5)
  assert float(terms["aux1_cls"]) == pytest.approx(aux1_cls, 1e-5)


def test_switched_off_terms_are_absent():
  outputs = {"embedding": np.eye(2, dtype="float32"), "logits": LOGITS,
             "verification_logits": VER}
  terms = losses.compute_losses(outputs, np.array([0, 1]), np.ones(3), ver_weight=0.0,
                                triplet_weight=2.0, triplet_margin=1.0)
  assert set(terms) == {"cls", "triplet", "total"}
  # Both anchors: no positive (0), nearest negative sqrt 2 -> relu(1 - 1.414) = 0.
  assert float(terms["total"]) == pytest.approx(float(terms["cls"]), 1e-6)
  with pytest.raises(ValueError, match="switched off"):
    losses.compute_losses(outputs, np.array([0, 1]), np.ones(3), cls_weight=0.0,
                          ver_weight=0.0)


def _compute_losses_before_the_table(outputs, labels, pair_same, *,
                                     cls_weight=1.0, ver_weight=3.0,
                                     aux_weight=0.3, label_smoothing=0.0,
                                     triplet_weight=0.0, triplet_margin=0.3):
  """compute_losses as it was written before LOSS_TERMS (the oracle)."""
  terms = {}
  weights = {}
  for prefix, scale in (("", 1.0), ("aux1_", aux_weight), ("aux2_", aux_weight)):
    if scale <= 0:
      continue
    if cls_weight > 0 and f"{prefix}logits" in outputs:
      terms[f"{prefix}cls"] = losses.classification_loss(
          outputs[f"{prefix}logits"], labels, label_smoothing=label_smoothing)
      weights[f"{prefix}cls"] = scale * cls_weight
    if ver_weight > 0 and f"{prefix}verification_logits" in outputs:
      terms[f"{prefix}ver"] = losses.verification_loss(
          outputs[f"{prefix}verification_logits"], pair_same)
      weights[f"{prefix}ver"] = scale * ver_weight
  if triplet_weight > 0:
    terms["triplet"] = losses.batch_hard_triplet_loss(
        outputs["embedding"], labels, margin=triplet_margin)
    weights["triplet"] = triplet_weight
  terms["total"] = ops.sum(ops.stack(
      [weights[name] * value for name, value in terms.items()]))
  return terms


def _loss_weights_before_the_table(loss_config, step, *, verifiers_train=False):
  """training.loop.loss_weights as it was written before LOSS_TERMS."""
  return dict(
      cls_weight=loss_config.cls_weight,
      ver_weight=(loss_config.ver_weight if step == 2 or verifiers_train
                  else 0.0),
      aux_weight=loss_config.aux_weight,
      label_smoothing=loss_config.label_smoothing,
      triplet_weight=loss_config.triplet_weight if step == 2 else 0.0,
      triplet_margin=loss_config.triplet_margin,
      # Keys added with the table's later losses (none changes the above).
      triplet_soft_margin=loss_config.triplet_soft_margin,
      center_weight=loss_config.center_weight if step == 2 else 0.0,
      center_lr=loss_config.center_lr)


def _random_outputs(seed, batch=8, classes=5, pairs=6, dim=4):
  rng = np.random.default_rng(seed)
  out = {"embedding": rng.normal(size=(batch, dim)).astype("float32")}
  for prefix in ("", "aux1_", "aux2_"):
    out[f"{prefix}logits"] = rng.normal(size=(batch, classes)).astype("float32")
    out[f"{prefix}verification_logits"] = rng.normal(
        size=(pairs, 2)).astype("float32")
  labels = np.repeat(np.arange(batch // 2), 2) % classes
  soft = rng.dirichlet(np.ones(classes), size=batch).astype("float32")
  same = (rng.uniform(size=pairs) < 0.5).astype("float32")
  return out, labels, soft, same


@pytest.mark.parametrize("settings", [
    {},
    dict(aux_weight=0.0, triplet_weight=0.7, triplet_margin=0.5),
    dict(label_smoothing=0.1, triplet_weight=1.3),
    dict(cls_weight=0.0, ver_weight=2.0, aux_weight=0.45),
    dict(cls_weight=0.8, ver_weight=0.0, triplet_weight=0.2),
])
@pytest.mark.parametrize("soft_labels", [False, True])
def test_compute_losses_is_bit_identical_to_before_the_table(settings,
                                                             soft_labels):
  outputs, labels, soft, same = _random_outputs(seed=len(settings))
  if soft_labels:
    labels = soft
  got = losses.compute_losses(outputs, labels, same, **settings)
  want = _compute_losses_before_the_table(outputs, labels, same, **settings)
  assert list(got) == list(want)  # the same terms, summed in the same order
  for name in want:
    assert np.asarray(got[name]).tobytes() == np.asarray(want[name]).tobytes(), name


def test_loss_weights_are_those_of_before_the_table():
  config = default.get_config()
  config.loss.update(dict(triplet_weight=0.5, label_smoothing=0.1))
  for step, verifiers_train in ((1, False), (1, True), (2, False), (2, True)):
    got = loop.loss_weights(config.loss, step, verifiers_train=verifiers_train)
    # Losses added after the table: on the base, so in step 2 only.
    assert got.pop("cluster_memory_weight") == (
        config.loss.cluster_memory_weight if step == 2 else 0.0)
    assert got.pop("cluster_memory_temperature") == 0.05
    assert got == _loss_weights_before_the_table(
        config.loss, step, verifiers_train=verifiers_train), (step, verifiers_train)


def test_the_schemas_loss_section_is_what_the_table_reads():
  assert set(schema.base_config().loss) == set(losses.setting_keys())
  assert losses.DEFAULT_SETTINGS == schema.base_config().loss.to_dict()
  for term in losses.LOSS_TERMS:
    assert term.acts_on in losses.PARTS, term


def _norm_loss(embeddings, labels):
  """A test-only loss: mean squared norm of the embedding."""
  del labels
  return ops.mean(ops.sum(ops.square(ops.cast(embeddings, "float32")), axis=1))


# A test-only loss registered into a copy of the table.
_NORM = losses.LossTerm("norm", _norm_loss, weight_key="norm_weight",
                          output="embedding", target="labels", acts_on="base")
_TABLE = (*losses.LOSS_TERMS, _NORM)


def test_the_table_drives_compute_losses_step_settings_and_describe_run():
  outputs, labels, _, same = _random_outputs(seed=3)
  # compute_losses: a term of its own, weighted into the total.
  terms = losses.compute_losses(outputs, labels, same, table=_TABLE,
                                norm_weight=2.0)
  assert list(terms) == ["cls", "ver", "aux1_cls", "aux1_ver", "aux2_cls",
                         "aux2_ver", "norm", "total"]
  before = losses.compute_losses(outputs, labels, same)
  assert float(terms["norm"]) == pytest.approx(
      float(_norm_loss(outputs["embedding"], labels)), 1e-6)
  assert float(terms["total"]) == pytest.approx(
      float(before["total"]) + 2.0 * float(terms["norm"]), 1e-5)
  with pytest.raises(TypeError, match="norm_weight"):
    losses.compute_losses(outputs, labels, same, norm_weight=2.0)
  with pytest.raises(TypeError, match=r"no value for \['norm_weight'\]"):
    losses.compute_losses(outputs, labels, same, table=_TABLE)

  # step_settings: on the base, so in step 2 only.
  loss_config = dict(schema.base_config().loss.to_dict(), norm_weight=2.0)
  for step, expected in ((1, 0.0), (2, 2.0)):
    settings = losses.step_settings(loss_config, step, verifiers_train=True,
                                    table=_TABLE)
    assert settings["norm_weight"] == expected
  # A term acting on the verifiers joins step 1 only when they train.
  on_verifiers = dataclasses.replace(_NORM, acts_on="verifiers")
  assert not on_verifiers.applies_in(1)
  assert on_verifiers.applies_in(1, verifiers_train=True)
  assert on_verifiers.applies_in(2)

  # describe_run: the run's list of losses.
  data = json.loads(default.get_config().to_json())
  data["loss"]["norm_weight"] = 2.0
  assert config_lib.describe_run(data, loss_table=_TABLE)["losses"] == (
      "cls+ver+norm")
  assert config_lib.describe_run(data)["losses"] == "cls+ver"
  data["model"]["aux_heads"] = True
  assert config_lib.describe_run(data, loss_table=_TABLE)["losses"] == (
      "cls+ver+aux+norm")
  data["loss"]["norm_weight"] = 0.0
  assert config_lib.describe_run(data, loss_table=_TABLE)["losses"] == (
      "cls+ver+aux")


def test_describe_run_lists_the_losses_as_before_the_table():
  """cls, ver, aux (auxiliary heads on), triplet, in that order."""
  data = json.loads(default.get_config().to_json())
  for cls, ver, aux_heads, aux, triplet, expected in (
      (1.0, 3.0, False, 0.3, 0.0, "cls+ver"),
      (1.0, 3.0, True, 0.3, 0.5, "cls+ver+aux+triplet"),
      (1.0, 0.0, True, 0.0, 0.5, "cls+triplet"),
      (0.0, 3.0, True, 0.3, 0.0, "ver+aux"),
      (0.0, 0.0, False, 0.3, 0.5, "triplet")):
    data["loss"].update(cls_weight=cls, ver_weight=ver, aux_weight=aux,
                        triplet_weight=triplet)
    data["model"]["aux_heads"] = aux_heads
    assert config_lib.describe_run(data)["losses"] == expected


def test_losses_run_under_a_graph_as_in_training():
  """Keras is imported inside the losses: they still trace in tf.function."""
  outputs, labels, _, same = _random_outputs(seed=5)
  traced = tf.function(lambda o: losses.compute_losses(
      o, labels, same, triplet_weight=0.5)["total"])
  eager = losses.compute_losses(outputs, labels, same, triplet_weight=0.5)
  assert float(traced(outputs)) == pytest.approx(float(eager["total"]), 1e-6)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
