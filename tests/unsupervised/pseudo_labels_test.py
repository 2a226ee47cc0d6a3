"""Tests for keras_reid.unsupervised.pseudo_labels (dense oracles)."""

import numpy as np
import pytest

from keras_reid.unsupervised import pseudo_labels


def problem(seed=0, n_a=7, n_b=9, dim=4):
  rng = np.random.default_rng(seed)
  y = rng.normal(size=(n_a + n_b, dim))
  is_a = np.zeros(n_a + n_b, bool)
  is_a[rng.permutation(n_a + n_b)[:n_a]] = True
  return y, is_a


def sq_dists_b_to_a(y, is_a):
  return ((y[~is_a][:, None, :] - y[is_a][None, :, :]) ** 2).sum(-1)


def test_hard_labels_match_dense_argmin():
  y, is_a = problem()
  labels = pseudo_labels.hard_pseudo_labels(y, is_a)
  assert labels.dtype == np.int64 and labels.shape == (16,)
  np.testing.assert_array_equal(labels[is_a], np.arange(7))
  np.testing.assert_array_equal(labels[~is_a],
                                sq_dists_b_to_a(y, is_a).argmin(axis=1))


@pytest.mark.parametrize("top_m,temperature", [(1, 1.0), (3, 0.5), (5, 2.0),
                                               (50, 1.0)])
def test_soft_labels_match_formula(top_m, temperature):
  y, is_a = problem(seed=top_m)
  soft = pseudo_labels.soft_pseudo_labels(y, is_a, top_m=top_m,
                                          temperature=temperature)
  assert soft.dtype == np.float32 and soft.shape == (16, 7)
  np.testing.assert_allclose(soft.sum(axis=1), 1, rtol=1e-6)
  np.testing.assert_array_equal(soft[is_a], np.eye(7, dtype=np.float32))
  d2 = sq_dists_b_to_a(y, is_a)
  m = min(top_m, 7)
  order = np.argsort(d2, axis=1)[:, :m]
  top = np.take_along_axis(d2, order, axis=1)
  scale = top[:, 0].mean()
  expected = np.zeros_like(d2)
  weights = np.exp(-(top - top[:, :1]) / (temperature * scale))
  np.put_along_axis(expected, order, weights / weights.sum(1, keepdims=True),
                    axis=1)
  np.testing.assert_allclose(soft[~is_a], expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(
      soft.argmax(axis=1), pseudo_labels.hard_pseudo_labels(y, is_a))
  assert np.all((soft[~is_a] > 0).sum(axis=1) <= m)


def test_cold_soft_labels_are_hard():
  y, is_a = problem(seed=3)
  soft = pseudo_labels.soft_pseudo_labels(y, is_a, top_m=4, temperature=1e-6)
  hard = pseudo_labels.hard_pseudo_labels(y, is_a)
  np.testing.assert_allclose(soft, np.eye(7)[hard], atol=1e-6)


def test_label_accuracy():
  # A: images 0, 1, 2 with pids 5, 6, 7; B: images 3..6 with pids 5, 6, 6, 9.
  pids = np.array([5, 6, 7, 5, 6, 6, 9])
  is_a = np.array([1, 1, 1, 0, 0, 0, 0], bool)
  hard = np.array([0, 1, 2, 0, 2, 1, 0])  # B: right, wrong, right, wrong
  acc = pseudo_labels.label_accuracy(hard, pids, is_a)
  assert acc == {"accuracy": 0.5, "soft_mass": 0.5, "reachable": 0.75}
  soft = np.eye(3)[hard]
  soft[4] = [0.0, 0.4, 0.6]  # argmax wrong, 0.4 on the right class
  acc = pseudo_labels.label_accuracy(soft, pids, is_a)
  assert acc["accuracy"] == 0.5
  np.testing.assert_allclose(acc["soft_mass"], (1 + 0.4 + 1 + 0) / 4)
  with pytest.raises(ValueError, match="same N"):
    pseudo_labels.label_accuracy(hard[:-1], pids, is_a)


def test_errors():
  y, is_a = problem()
  with pytest.raises(ValueError, match="temperature"):
    pseudo_labels.soft_pseudo_labels(y, is_a, temperature=0)
  with pytest.raises(ValueError, match="top_m"):
    pseudo_labels.soft_pseudo_labels(y, is_a, top_m=0)
  with pytest.raises(ValueError, match="is_a"):
    pseudo_labels.hard_pseudo_labels(y, np.ones(16, bool))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
