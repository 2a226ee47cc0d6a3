"""Tests for keras_reid.evaluation.visualize."""

import pytest
import numpy as np
from PIL import Image

from keras_reid.data import datasets
from keras_reid.evaluation import ranking
from keras_reid.evaluation import visualize


def test_ranked_list_borders(tmp_path):
  grey = np.full((32, 16, 3), 128, np.uint8)
  image = visualize.ranked_list_image(grey, [grey, grey], [True, False],
                                      size=(32, 16), border=2)
  assert image.shape == (36, 3 * 20 + 8, 3)
  assert tuple(image[0, 0]) == visualize.BLUE
  assert tuple(image[0, 8 + 20]) == visualize.GREEN
  assert tuple(image[0, 8 + 40]) == visualize.RED
  assert tuple(image[10, 8 + 25]) == (128, 128, 128)


def _rankings(top, is_match, ap, first_match):
  top = np.asarray(top)
  return ranking.ScoredRankings(
      top=top, distances=np.where(top >= 0, 1.0, np.nan).astype(np.float32),
      is_match=np.asarray(is_match, bool), first_match=np.asarray(first_match),
      ap=np.asarray(ap, np.float64),
      num_same_camera=np.zeros(len(top), np.int64))


def _image_files(tmp_path, n):
  paths = []
  for i in range(n):
    p = tmp_path / f"{i}.png"
    Image.new("RGB", (16, 32), (i * 50, 0, 0)).save(p)
    paths.append(str(p))
  return paths


def test_save_ranked_lists_pictures_the_given_rankings(tmp_path):
  paths = _image_files(tmp_path, 4)
  # Query 1's filtered gallery holds one image only (-1: past its end).
  rankings = _rankings([[0, 2, 1], [2, -1, -1]],
                       [[False, True, False], [True, False, False]],
                       [0.5, 1.0], [1, 0])
  rows = []
  written = visualize.save_ranked_lists(
      paths[:2], paths[1:], [1, 2], [1, 1, 2], ["c1", "c2"],
      ["c1", "c3", "c3"], rankings, str(tmp_path / "out"), images=rows)
  assert [(w.role, w.query) for w in written] == [("best", 1),
                                                  ("median", 0)]
  assert written[0].gallery == [2] and written[0].correct == [True]
  assert written[1].gallery == [0, 2, 1]
  assert written[1].correct == [False, True, False]
  assert written[1].first_match_rank == 2 and written[1].ap == 0.5
  height = visualize.TITLE_HEIGHT + 128 + 8 + visualize.CAPTION_HEIGHT
  assert Image.open(written[1].path).size == (4 * 72 + 8, height)
  assert written[0].path.endswith("ranked_best_1.png")
  assert rows[0].shape == (height, 2 * 72 + 8, 3)


def test_choose_queries_best_median_worst_then_a_seeded_sample():
  ap = np.array([0.2, np.nan, 0.9, 0.5, 0.1, 0.7, 0.3])
  chosen = visualize.choose_queries(ap, 5, seed=3)
  # Skipped queries (NaN AP) are never chosen; median of the 6 scored.
  assert chosen[:3] == [("best", 2), ("median", 6), ("worst", 4)]
  assert [r for r, _ in chosen[3:]] == ["sample", "sample"]
  assert {q for _, q in chosen[3:]} <= {0, 3, 5}
  assert chosen == visualize.choose_queries(ap, 5, seed=3)
  assert visualize.choose_queries(ap, 2) == [("best", 2), ("median", 6)]
  assert visualize.choose_queries([np.nan], 3) == []


def test_camera_names_are_the_datasets_own():
  # Readers store 0-based camids; the pictures show the files' names.
  assert visualize.camera_name("market1501", 2) == "c3"
  assert visualize.camera_name("dukemtmcreid", 7) == "c8"
  assert visualize.camera_name("msmt17", 0) == "cam 01"
  assert visualize.camera_name("cuhk03", 1) == "view 2"
  assert visualize.camera_name("viper", 0) == "cam_a"
  assert visualize.camera_name("prid2011", 1) == "cam_b"
  assert visualize.camera_name("manifest", 4) == "cam 4"
  assert visualize.camera_name("market1501+cuhk03", 0) == "c1"
  assert visualize.camera_name("viper", -1) == "cam ?"
  assert visualize.camera_name("not_registered", 2) == "camid 2"
  assert set(visualize.CAMERA_NAMES) == set(datasets.DATASETS)


def test_ranked_lists_write_rank_distance_pid_and_camera(tmp_path):
  grey = np.full((32, 16, 3), 128, np.uint8)
  plain = visualize.ranked_list_image(grey, [grey, grey], [True, False],
                                      size=(32, 16), border=2)
  captions = [visualize.caption(7, "c1"),
              visualize.caption(7, "c2", rank=1, distance=0.51234),
              visualize.caption(0, "c2", rank=2, distance=123.456)]
  assert captions == ["query\nid 7\nc1", "#1 0.512\nid 7\nc2",
                      "#2 123.5\ndistractor\nc2"]
  captioned = visualize.ranked_list_image(
      grey, [grey, grey], [True, False], size=(32, 16), border=2,
      captions=captions, title="AP 0.5")
  top = visualize.TITLE_HEIGHT
  assert captioned.shape == (top + 36 + visualize.CAPTION_HEIGHT, 68, 3)
  # The pictures are unchanged; the text is above and under them.
  np.testing.assert_array_equal(captioned[top:top + 36], plain)
  assert (captioned[:top] < 128).any(), "no title"
  strip = captioned[top + 36:]
  for x in (0, 8 + 20, 8 + 40):
    assert (strip[:, x:x + 20] < 128).any(), f"no text under the cell at {x}"
  with pytest.raises(ValueError, match="captions"):
    visualize.ranked_list_image(grey, [grey], [True], captions=["a"])


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
