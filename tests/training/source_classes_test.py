"""Source classes beside a clustering round's groups (unsupervised.source_*):
the draw, the centroids against a hand computation, the round's training
labels, the saved file, and the config errors. End to end:
tests/training/cotraining_test.py."""

import numpy as np
import pytest

from keras_reid import schema
from keras_reid.data import records as records_lib
from keras_reid.training import cotraining
from keras_reid.training import stages
from tests.training import tiny_config


def test_draw_is_seeded_distinct_sorted_and_takes_all_when_few():
  pids = [7, 7, 3, 9, 3, 11, 5, 5]  # 5 identities, repeats as in a dataset
  drawn = cotraining.draw_source_identities(pids, 3, seed=4)
  assert len(drawn) == 3 and len(set(drawn.tolist())) == 3
  assert set(drawn.tolist()) <= {3, 5, 7, 9, 11}
  assert list(drawn) == sorted(drawn)
  np.testing.assert_array_equal(
      drawn, cotraining.draw_source_identities(pids, 3, seed=4))
  draws = {tuple(cotraining.draw_source_identities(pids, 3, seed=s))
           for s in range(20)}
  assert len(draws) > 1  # the seed matters
  for count in (5, 50):
    np.testing.assert_array_equal(
        cotraining.draw_source_identities(pids, count, seed=0),
        [3, 5, 7, 9, 11])


def test_centroids_are_the_normalised_mean_feature_of_each_identity():
  features = np.array([[3., 0.], [1., 0.], [0., 2.], [1., 1.], [5., 5.]],
                      np.float32)
  pids = [4, 4, 8, 8, 6]
  got = cotraining.identity_centroids(features, pids, np.array([4, 8]))
  # pid 4: mean (2, 0) -> (1, 0); pid 8: mean (0.5, 1.5) -> (1, 3) / sqrt 10.
  np.testing.assert_allclose(
      got, [[1., 0.], [1 / np.sqrt(10), 3 / np.sqrt(10)]], rtol=1e-6)
  assert got.dtype == np.float32


def _round_with_source(drawn=(2, 5)):
  labels = cotraining.RoundLabels(
      labels=np.array([0, -1, 1, 0, 1], np.int64), is_a=np.zeros(5, bool),
      dictionary=None, objective=[],
      centroids=np.eye(2, 3, dtype=np.float32))
  source = np.array([[0., 0., 1.], [0., 1., 0.]], np.float32)
  return cotraining.add_source_classes(labels, np.array(drawn, np.int64),
                                       source)


def test_source_classes_follow_the_groups():
  labels = _round_with_source()
  assert labels.num_classes == 4 and labels.num_source_classes == 2
  np.testing.assert_array_equal(labels.centroids[2:],
                                [[0, 0, 1], [0, 1, 0]])
  records = [records_lib.Record(f"/s/{i}.jpg", pid, 0)
             for i, pid in enumerate([5, 1, 2, 5, 9, 2])]
  chosen, classes = cotraining.source_training_labels(labels, records,
                                                      "round1.npz")
  # Only identities 2 and 5 (classes 2 + 0 and 2 + 1), in record order.
  assert [r.path for r in chosen] == ["/s/0.jpg", "/s/2.jpg", "/s/3.jpg",
                                      "/s/5.jpg"]
  np.testing.assert_array_equal(classes, [3, 2, 3, 2])
  assert classes.dtype == np.int64


def test_a_drawn_identity_missing_from_the_source_is_an_error():
  labels = _round_with_source(drawn=(2, 5))
  records = [records_lib.Record("/s/0.jpg", 2, 0)]
  with pytest.raises(ValueError, match=r"round1\.npz.*\[5\].*source_root"):
    cotraining.source_training_labels(labels, records, "round1.npz")


def test_without_a_source_nothing_is_added():
  labels = _round_with_source()
  labels.source_pids = None
  chosen, classes = cotraining.source_training_labels(
      labels, [records_lib.Record("/s/0.jpg", 2, 0)], "round1.npz")
  assert chosen == [] and classes.shape == (0,)


def test_saved_labels_keep_the_source_identities(tmp_path):
  labels = _round_with_source()
  paths = [f"/t/{i}.jpg" for i in range(5)]
  path = str(tmp_path / "cotrain" / "round1.npz")
  cotraining.save_labels(path, labels, paths)
  loaded = cotraining.load_labels(path, paths)
  np.testing.assert_array_equal(loaded.source_pids, [2, 5])
  np.testing.assert_array_equal(loaded.centroids, labels.centroids)
  assert loaded.num_classes == 4
  labels.source_pids = None
  cotraining.save_labels(path, labels, paths)
  assert cotraining.load_labels(path, paths).source_pids is None


def _unsupervised_config(supervision, **unsupervised):
  config = tiny_config.get_config()
  config.stages.synthetic.supervision = supervision
  config.stages.synthetic.unsupervised.update(unsupervised)
  return config


def test_a_source_beside_self_training_is_a_config_error():
  config = _unsupervised_config("self_training", source_dataset="market1501",
                                source_root="/data/market")
  with pytest.raises(ValueError, match=(
      r"unsupervised\.source_dataset='market1501' with "
      r"supervision='self_training'.*supervision=clustering")):
    stages.check_config(config)


def test_an_unknown_source_dataset_is_a_config_error():
  config = _unsupervised_config("clustering", source_dataset="market")
  with pytest.raises(ValueError, match=(
      r"stages\.synthetic\.unsupervised\.source_dataset='market'.*"
      "market1501")):
    stages.check_config(config)


def test_source_identities_below_zero_is_a_config_error():
  config = _unsupervised_config("clustering", source_identities=-1)
  with pytest.raises(ValueError, match="source_identities"):
    stages.check_config(config)


def test_a_source_holding_the_targets_own_images_is_refused():
  target = records_lib.ReidDataset(
      "viper", [records_lib.Record("/v/a.png", 1, 0)], [], [])
  source = records_lib.ReidDataset(
      "manifest", [records_lib.Record("/p/x.png", 3, 0),
                   records_lib.Record("/v/a.png", 9, 1)], [], [])
  with pytest.raises(ValueError, match=r"1 of stage 'viper'.*'/v/a\.png'"):
    stages._check_source_apart("viper", source, target)
  stages._check_source_apart("viper", records_lib.ReidDataset(
      "manifest", source.train[:1], [], []), target)  # apart: accepted


def test_the_schema_has_the_source_keys_off_by_default():
  u = schema.stage_config().unsupervised
  assert (u.source_dataset, u.source_root, u.source_identities) == ("", "", 0)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
