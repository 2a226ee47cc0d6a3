"""co-training's labelling (`cotraining.make_labels`) against a hand oracle.

A hand-built case in which the GRDL codes Z and the features Y disagree:
the nearest camera-A image of each camera-B image in Z is another one than
in Y. GRDL is replaced by a stub that returns the hand-written codes, so the
expected labels are worked out here by hand from Z (Euclidean nearest
camera-A image; soft: top-m with the temperature of
pseudo_labels.soft_pseudo_labels' docstring). A make_labels that labelled
from Y would give other labels, which the test checks as well.

The co-training fix options (unsupervised.l2_normalize, refit_dictionary,
verification_pairs) against NumPy / hand oracles.

Also: configs/viper_cotrain_cpu.py's grdl_lambda is the one the recorded
cross-validation on the labelled source selected
(bench/cotraining_results.md).
"""

import math
import os
import re

import numpy as np
import pytest

from keras_reid import schema
from keras_reid.training import cotraining
from keras_reid.unsupervised import grdl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

# Record order: A0, B0, A1, B1, A2; camera A is camid 3 (B: camid 0), so
# class c is the c-th camera-A record: A0 -> 0, A1 -> 1, A2 -> 2.
CAMIDS = np.array([3, 0, 3, 0, 3])
#                    A0      B0      A1       B1      A2
Y = np.array([[0., 0.], [1., 0.], [10., 0.], [9., 0.], [0., 10.]])
Z = np.array([[0., 0.], [0., 3.], [4., 0.], [1., 0.], [0., 4.]])
# Squared distances to A0, A1, A2, by hand:
#   Y: B0 (1, 0): 1, 81, 101 -> nearest A0;  B1 (9, 0): 81, 1, 181 -> A1.
#   Z: B0 (0, 3): 9, 25, 1   -> nearest A2;  B1 (1, 0): 1, 9, 17   -> A0.
HARD_FROM_Z = [0, 2, 1, 0, 2]
HARD_FROM_Y = [0, 0, 1, 1, 2]


def _stage(supervision, pseudo_labels, top_m=2, temperature=4.0):
  return schema.stage_config(
      supervision=supervision,
      unsupervised=dict(camera_a=3, pseudo_labels=pseudo_labels,
                        soft_top_m=top_m, soft_temperature=temperature,
                        graph_k=1, grdl_lambda=0.25, grdl_atoms=2,
                        grdl_iterations=7))


@pytest.fixture
def codes_are_z(monkeypatch):
  """GRDL returns the hand-written codes Z; records what it was given."""
  calls = []

  def fake_grdl(features, lap, num_atoms, lam, **kwargs):
    calls.append(dict(features=np.array(features), lap=lap,
                      num_atoms=num_atoms, lam=lam, **kwargs))
    return grdl.GRDLResult(
        dictionary=np.eye(2), codes=Z.copy(), objective=[2.0, 1.0],
        objective_after_dictionary=[1.5], iterations=1, converged=True,
        seconds=[0.0])

  monkeypatch.setattr(grdl, "grdl", fake_grdl)
  return calls


def test_hard_cotraining_labels_follow_the_codes_not_the_features(codes_are_z):
  assert HARD_FROM_Z != HARD_FROM_Y  # the case discriminates
  labels = cotraining.make_labels(Y, CAMIDS, _stage("cotraining", "hard"),
                                  seed=5)
  np.testing.assert_array_equal(labels.labels, HARD_FROM_Z)
  np.testing.assert_array_equal(labels.is_a, [1, 0, 1, 0, 1])
  np.testing.assert_array_equal(labels.dictionary, np.eye(2))
  assert labels.objective == [2.0, 1.0]
  # GRDL got the features Y, the stage's settings and a graph Laplacian.
  (call,) = codes_are_z
  np.testing.assert_array_equal(call["features"], Y)
  assert (call["num_atoms"], call["lam"], call["max_iter"], call["seed"]) == (
      2, 0.25, 7, 5)
  lap = call["lap"].toarray()
  np.testing.assert_allclose(lap.sum(axis=1), 0, atol=1e-12)
  assert (np.diag(lap) > 0).all()


def test_self_training_labels_follow_the_features(codes_are_z):
  labels = cotraining.make_labels(Y, CAMIDS, _stage("self_training", "hard"))
  np.testing.assert_array_equal(labels.labels, HARD_FROM_Y)
  assert labels.dictionary is None and not codes_are_z


def test_soft_cotraining_labels_top_m_and_temperature_in_z(codes_are_z):
  # pseudo_labels.soft_pseudo_labels: p(a_j) ~ exp(-(d_j^2 - d_1^2) / (T s)),
  # s = mean over camera B of d_1^2. In Z: d_1^2 = 1 for B0 and B1, s = 1.
  # top_m = 2, T = 4:
  #   B0: A2 (d^2 1), A0 (9): weights 1, exp(-8 / 4) = exp(-2); A1 gets 0.
  #   B1: A0 (1), A1 (9): the same weights; A2 gets 0.
  near = 1 / (1 + math.exp(-2))     # 0.8808
  far = math.exp(-2) / (1 + math.exp(-2))  # 0.1192
  want = np.array([[1, 0, 0],
                   [far, 0, near],   # B0
                   [0, 1, 0],
                   [near, far, 0],   # B1
                   [0, 0, 1]])
  labels = cotraining.make_labels(Y, CAMIDS, _stage("cotraining", "soft"))
  assert labels.labels.shape == (5, 3)
  np.testing.assert_allclose(labels.labels, want, atol=1e-6)
  # In Y the mass would sit on A0 for B0 and on A1 for B1.
  assert labels.labels[1, 0] < 0.5 and labels.labels[3, 1] < 0.5

  # top_m = 1 (or a tiny temperature) is the hard label.
  hard = cotraining.make_labels(Y, CAMIDS, _stage("cotraining", "soft",
                                                  top_m=1))
  np.testing.assert_array_equal(hard.labels.argmax(axis=1), HARD_FROM_Z)
  np.testing.assert_array_equal(hard.labels.max(axis=1), 1.0)
  # T = 0.5: B0's far weight exp(-8 / 0.5) = exp(-16).
  sharp = cotraining.make_labels(Y, CAMIDS, _stage("cotraining", "soft",
                                                   temperature=0.5))
  assert sharp.labels[1, 0] == pytest.approx(
      math.exp(-16) / (1 + math.exp(-16)), rel=1e-4)


# unsupervised.l2_normalize: codes (and features) whose nearest camera-A
# image by angle is another than by Euclidean distance. Record order and
# cameras as above (A0, B0, A1, B1, A2).
#                     A0         B0         A1         B1          A2
Z_ANGLE = np.array([[1., 0.], [2., .5], [10., 1.], [.3, .5], [0., 5.]])
# Squared distances to A0, A1, A2 by hand:
#   B0 (2, .5): 1.25, 64.25, 24.25 -> A0;  B1 (.3, .5): .74, 92.41, 20.29 -> A0.
# Angles (degrees) of A0, A1, A2: 0, 5.7, 90:
#   B0 at 14.0 -> A1 (8.3 off);  B1 at 59.0 -> A2 (31.0 off).
EUCLIDEAN = [0, 0, 1, 0, 2]
COSINE = [0, 1, 1, 2, 2]


def _nearest_a_by_angle(space, is_a):
  """NumPy oracle: each camera-B row's camera-A class of largest cosine."""
  unit = space / np.linalg.norm(space, axis=1, keepdims=True)
  labels = np.empty(len(space), np.int64)
  labels[is_a] = np.arange(is_a.sum())
  labels[~is_a] = (unit[~is_a] @ unit[is_a].T).argmax(axis=1)
  return labels


@pytest.mark.parametrize("supervision", ["cotraining", "self_training"])
def test_l2_normalize_labels_by_angle(monkeypatch, supervision):
  def fake_grdl(features, lap, num_atoms, lam, **kwargs):
    del features, lap, num_atoms, lam, kwargs
    return grdl.GRDLResult(
        dictionary=np.eye(2), codes=Z_ANGLE.copy(), objective=[1.0],
        objective_after_dictionary=[], iterations=0, converged=True,
        seconds=[])

  monkeypatch.setattr(grdl, "grdl", fake_grdl)
  # Self-training labels from the features: give it Z_ANGLE as features.
  features = Y if supervision == "cotraining" else Z_ANGLE
  is_a = CAMIDS == 3
  assert _nearest_a_by_angle(Z_ANGLE, is_a).tolist() == COSINE
  stage = _stage(supervision, "hard")
  raw = cotraining.make_labels(features, CAMIDS, stage)
  np.testing.assert_array_equal(raw.labels, EUCLIDEAN)  # today's default
  stage.unsupervised.l2_normalize = True
  normalised = cotraining.make_labels(features, CAMIDS, stage)
  np.testing.assert_array_equal(normalised.labels, COSINE)
  # Soft labels rank by the same normalised distances.
  stage.unsupervised.pseudo_labels = "soft"
  soft = cotraining.make_labels(features, CAMIDS, stage)
  np.testing.assert_array_equal(soft.labels.argmax(axis=1), COSINE)


def test_refit_dictionary_drops_the_previous_rounds_warm_start(tmp_path):
  paths = [f"img{i}.png" for i in range(5)]
  previous = str(tmp_path / "cotrain" / "viper" / "round1.npz")
  dictionary = np.arange(6.0).reshape(3, 2)
  cotraining.save_labels(previous, cotraining.RoundLabels(
      labels=np.zeros(5, np.int64), is_a=CAMIDS == 3, dictionary=dictionary,
      objective=[1.0]), paths)
  stage = _stage("cotraining", "hard")  # grdl_atoms=2
  warm = cotraining.warm_start_dictionary(previous, stage, 2, paths, dim=3)
  np.testing.assert_array_equal(warm, dictionary)  # today's default
  for r, dim in ((1, 3), (2, 4)):  # round 1; a dictionary of another shape
    assert cotraining.warm_start_dictionary(previous, stage, r, paths,
                                            dim) is None
  stage.unsupervised.refit_dictionary = True
  assert cotraining.warm_start_dictionary(previous, stage, 2, paths,
                                          dim=3) is None
  assert cotraining.warm_start_dictionary(
      previous, _stage("self_training", "hard"), 2, paths, dim=3) is None


def test_verification_pairs_none_turns_the_verification_loss_off():
  config = schema.base_config()
  config.loss.ver_weight = 3.0
  stage = _stage("cotraining", "hard")
  assert stage.unsupervised.verification_pairs == "all"  # today's default
  assert cotraining.round_config(config, stage) is config
  stage.unsupervised.verification_pairs = "none"
  off = cotraining.round_config(config, stage)
  assert off.loss.ver_weight == 0.0 and config.loss.ver_weight == 3.0
  off.loss.ver_weight = config.loss.ver_weight
  assert off.to_dict() == config.to_dict()  # nothing else changed


def test_viper_cotrain_lambda_is_the_cross_validated_one():
  with open(os.path.join(REPO, "bench", "cotraining_results.md")) as f:
    selected = re.findall(r"\| \*\*GRDL, lambda ([0-9.]+) \(selected\)\*\*",
                          f.read())
  assert len(selected) == 1, "the select_grdl_lambda table's selected row"
  from configs import viper_cotrain_cpu  # noqa: PLC0415
  for arg in ("cotraining", "cotraining,/runs/source"):
    stage = viper_cotrain_cpu.get_config(arg).stages.viper
    assert stage.unsupervised.grdl_lambda == float(selected[0])



def test_clustering_mutual_nn_labels_pairs_of_camera_centred_features():
  """stages.<name>.unsupervised.cluster_method / cluster_camera_centring
  reach make_labels: one image per person and camera, camera 1 adds a large
  shared vector; centred, mutual nearest neighbours pair every person
  (clustering_test checks the pairing against brute force), uncentred
  fewer than half of them."""
  rng = np.random.default_rng(0)
  people = rng.normal(size=(20, 16))
  features = np.concatenate([people, people + 4.0 * rng.normal(size=16)])
  features += 0.05 * rng.normal(size=features.shape)
  camids = np.repeat([0, 1], 20)
  pids = np.tile(np.arange(20), 2)
  def labels(centring, fraction=1.0):
    stage = schema.stage_config(
        supervision="clustering",
        unsupervised=dict(cluster_method="mutual_nn",
                          cluster_camera_centring=centring,
                          cluster_keep_fraction=fraction))
    return cotraining.make_labels(features, camids, stage)
  centred = labels(True)
  np.testing.assert_array_equal(centred.labels, np.tile(np.arange(20), 2))
  assert centred.centroids.shape == (20, 16)
  plain = labels(False).labels
  right = sum(len(set(pids[plain == c])) == 1 for c in range(plain.max() + 1))
  assert right < 10
  # cluster_keep_fraction reaches the pairing: half the pairs, 10 classes.
  half = labels(True, 0.5)
  assert half.num_classes == 10 and half.centroids.shape == (10, 16)
  assert (half.labels >= 0).sum() == 20


def test_cluster_method_is_checked_by_name():
  stage = schema.stage_config(supervision="clustering",
                              unsupervised=dict(cluster_method="kmeans"))
  with pytest.raises(ValueError, match=r"config.stages.viper.unsupervised"
                     r".cluster_method='kmeans': expected one of "
                     r"\['dbscan', 'mutual_nn', 'assignment'\]"):
    cotraining.check_stage("viper", stage, schema.base_config())


def test_keep_fraction_needs_mutual_pairs():
  stage = schema.stage_config(supervision="clustering",
                              unsupervised=dict(cluster_keep_fraction=0.5))
  with pytest.raises(ValueError, match=r"cluster_keep_fraction=0.5 with "
                     r"cluster_method='dbscan': only mutual_nn and assignment keep"):
    cotraining.check_stage("viper", stage, schema.base_config())
  stage.unsupervised.cluster_method = "mutual_nn"
  cotraining.check_stage("viper", stage, schema.base_config())


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
