"""Zero usable queries is an error (or an excluded split), never a score of 0."""

import json

import numpy as np
import pytest

from keras_reid.evaluation import ranking
from keras_reid.evaluation import report as report_lib


def _arrays(query_pids, query_camids, seed=0):
  rng = np.random.default_rng(seed)
  g_pids = np.array([1, 1, 2, 2, 0, -1])
  return dict(
      query_features=rng.normal(size=(len(query_pids), 4)),
      gallery_features=rng.normal(size=(6, 4)),
      query_pids=np.asarray(query_pids), gallery_pids=g_pids,
      query_camids=np.asarray(query_camids),
      gallery_camids=np.array([0, 1, 0, 1, 1, 0]))


def test_no_usable_query_raises_naming_why():
  # pid 5 is not in the gallery, pid -1 is junk; nothing is left to rank.
  a = _arrays([5, -1], [0, 0])
  args = [a[k] for k in ("query_features", "gallery_features", "query_pids",
                         "gallery_pids", "query_camids", "gallery_camids")]
  with pytest.raises(ranking.NoValidQueryError,
                     match=r"all 2 queries skipped.*1 have the junk pid.*"
                     r"1 have a pid absent"):
    ranking.evaluate_features(*args)
  with pytest.raises(ranking.NoValidQueryError):
    ranking.evaluate_distances(np.zeros((2, 6)), *args[2:])


def test_same_camera_only_is_counted():
  # pid 1's gallery images are in cameras 0 and 1: a camera-0 query still
  # has a match. A gallery of pid 3 only in the query's camera has none.
  a = _arrays([1], [0])
  assert ranking.evaluate_features(
      *[a[k] for k in ("query_features", "gallery_features", "query_pids",
                       "gallery_pids", "query_camids", "gallery_camids")]
  )["num_queries"] == 1
  with pytest.raises(ranking.NoValidQueryError, match="1 are matched only"):
    ranking.evaluate_features(np.ones((1, 2)), np.ones((2, 2)), [3], [3, 3],
                              [0], [0, 0])


def test_check_queries_usable_needs_ids_only():
  ranking.check_queries_usable([1], [0], [1, 2], [1, 0])  # a match: fine
  with pytest.raises(ranking.NoValidQueryError, match="1 are matched only"):
    ranking.check_queries_usable([1], [0], [1, 2], [0, 1])


def test_split_without_usable_query_is_excluded_and_named(tmp_path):
  good = _arrays([1, 2], [0, 0])
  bad = _arrays([7, 8], [0, 1], seed=1)
  paths = []
  for n, arrays in enumerate((good, bad, good)):
    paths.append(str(tmp_path / f"s{n}.npz"))
    np.savez(paths[-1], **arrays)
  out = tmp_path / "avg.json"
  result = report_lib.evaluate_feature_file(paths, output_json=str(out),
                                            pictures=False)
  single = report_lib.evaluate_feature_file(
      paths[0], output_json=str(tmp_path / "one.json"), pictures=False)
  # The mean is over the two usable splits, not diluted by a zero.
  assert result["num_splits"] == 2
  assert result["mAP"] == pytest.approx(single["mAP"])
  assert result["split_indices"] == [0, 2]
  excluded = json.loads(out.read_text())["excluded_splits"]
  assert [x["split"] for x in excluded] == [1]
  assert excluded[0]["features"] == paths[1]
  assert "no query has a valid gallery match" in excluded[0]["reason"]
  # Every split unusable: an error naming them, no report.
  with pytest.raises(ranking.NoValidQueryError, match="split 0: all 2"):
    report_lib.evaluate_feature_file([paths[1], paths[1]],
                                     output_json=str(tmp_path / "no.json"),
                                     pictures=False)
  with pytest.raises(ranking.NoValidQueryError):
    report_lib.evaluate_feature_file(paths[1], pictures=False,
                                     output_json=str(tmp_path / "no1.json"))
  assert not (tmp_path / "no.json").exists()


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
