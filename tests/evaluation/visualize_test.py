"""Tests for keras_reid.evaluation.visualize."""

import pytest
import numpy as np
from PIL import Image

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


def test_save_ranked_lists_and_cmc(tmp_path):
  paths = []
  for i in range(4):
    p = tmp_path / f"{i}.png"
    Image.new("RGB", (16, 32), (i * 50, 0, 0)).save(p)
    paths.append(str(p))
  top = np.array([[0, 1, 2], [2, 1, 0]])
  written = visualize.save_ranked_lists(paths[:2], paths[1:], [1, 2],
                                        [1, 2, 3], top, str(tmp_path / "out"),
                                        k=3)
  assert len(written) == 2
  assert Image.open(written[0]).size[1] == 128 + 8


def test_ranked_lists_write_pid_and_camera_under_each_image(tmp_path):
  grey = np.full((32, 16, 3), 128, np.uint8)
  plain = visualize.ranked_list_image(grey, [grey, grey], [True, False],
                                      size=(32, 16), border=2)
  captions = [visualize.caption(7, 1), visualize.caption(7, 2),
              visualize.caption(9, 2)]
  captioned = visualize.ranked_list_image(
      grey, [grey, grey], [True, False], size=(32, 16), border=2,
      captions=captions)
  assert captions[0] == "id 7\ncam 1"
  assert captioned.shape == (36 + visualize.CAPTION_HEIGHT, 68, 3)
  # The pictures are unchanged; the text is in the strip under each cell.
  np.testing.assert_array_equal(captioned[:36], plain)
  strip = captioned[36:]
  for x in (0, 8 + 20, 8 + 40):
    assert (strip[:, x:x + 20] < 128).any(), f"no text under the cell at {x}"
  with pytest.raises(ValueError, match="captions"):
    visualize.ranked_list_image(grey, [grey], [True], captions=["a"])

  paths = []
  for i in range(3):
    p = tmp_path / f"{i}.png"
    Image.new("RGB", (16, 32), (i * 50, 0, 0)).save(p)
    paths.append(str(p))
  written = visualize.save_ranked_lists(
      paths[:1], paths[1:], [1], [1, 2], np.array([[0, 1]]),
      str(tmp_path / "out"), k=2, query_camids=[0], gallery_camids=[1, 1])
  assert Image.open(written[0]).size[1] == 128 + 8 + visualize.CAPTION_HEIGHT


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
