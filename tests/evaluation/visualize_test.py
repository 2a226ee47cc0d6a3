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
  cmc = visualize.cmc_curve_image(np.linspace(.5, 1, 50))
  assert cmc.shape == (320, 480, 3) and (cmc != 255).any()
  visualize.save_png(cmc, str(tmp_path / "cmc.png"))
  assert (tmp_path / "cmc.png").exists()


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
