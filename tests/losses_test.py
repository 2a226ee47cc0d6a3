"""Tests of the losses against values computed by hand."""

import math

import numpy as np
import pytest

from keras_reid import losses

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


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
