"""Tests of keras_reid.data.records: summaries and pooling training sets."""

import pytest

from keras_reid.data import records
from keras_reid.data.records import Record


def _dataset(name, train, query=(), gallery=()):
  return records.ReidDataset(name, list(train), list(query), list(gallery))


def test_summary_counts_ids_images_and_known_cameras():
  ds = _dataset("x", [Record("a", 1, 0), Record("b", 1, 1), Record("c", 2, -1)],
                [Record("q", 3, 0)], [Record("g", 3, 1), Record("h", 0, 2)])
  assert ds.summary() == dict(
      num_train_ids=2, num_train_images=3, num_query_ids=1, num_query_images=1,
      num_gallery_ids=2, num_gallery_images=2, num_cameras=3)


def test_combine_keeps_identities_and_cameras_of_datasets_apart():
  a = _dataset("a", [Record("a1", 5, 0), Record("a2", 5, 1), Record("a3", 9, 1)],
               [Record("qa", 7, 0)], [Record("ga", 7, 1)])
  b = _dataset("b", [Record("b1", 5, 0), Record("b2", 6, -1)])
  combined = records.combine_for_training([a, b])
  assert combined.name == "a+b"
  assert [r.path for r in combined.train] == ["a1", "a2", "a3", "b1", "b2"]
  # pid 5 of a and pid 5 of b are different people.
  assert [r.pid for r in combined.train] == [0, 0, 1, 2, 3]
  assert [r.camid for r in combined.train] == [0, 1, 1, 2, -1]
  assert combined.query == a.query and combined.gallery == a.gallery


def test_combine_one_is_identity_and_none_is_an_error():
  a = _dataset("a", [Record("a1", 5, 0)])
  assert records.combine_for_training([a]) is a
  with pytest.raises(ValueError, match="at least one"):
    records.combine_for_training([])


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
