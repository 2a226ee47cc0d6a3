"""keras_reid.evaluation.model_evaluation's pictures and projector files.

A fixed embedder (mean colour of each image) on a tiny synthetic dataset:
what evaluate_dataset writes must describe that dataset and that report.
"""

import os

import numpy as np
from PIL import Image
import pytest

from keras_reid.data import datasets
from keras_reid.data.synthetic import generator as synthetic
from keras_reid.evaluation import embedders
from keras_reid.evaluation import model_evaluation
from keras_reid.evaluation import visualize


def _mean_colour(images):
  images = np.asarray(images, np.float32)
  return np.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2))],
                        axis=1)


def test_pictures_and_projector_describe_the_evaluation(tmp_path):
  root = synthetic.generate(str(tmp_path / "synthetic"), num_ids=8, seed=0,
                            image_size=(32, 16))
  dataset = datasets.load_dataset("synthetic", root)
  tensorboard: dict = {}
  projector_dir = str(tmp_path / "tb")
  result = model_evaluation.evaluate_dataset(
      _mean_colour, dataset, image_size=(32, 16), normalization="none",
      batch_size=16, report_dir=str(tmp_path / "report"),
      tensorboard=tensorboard, projector_dir=projector_dir)

  pictures = result["pictures"]
  for key in ("cmc", "roc"):
    assert os.path.exists(pictures[key])
    image = np.asarray(Image.open(pictures[key]).convert("RGB"))
    np.testing.assert_array_equal(image, tensorboard[f"eval/{key}"])
  rows = tensorboard["eval/ranked_lists"]
  assert rows.shape[1] == 128 + 8 + visualize.CAPTION_HEIGHT
  assert len(pictures["ranked_lists"]) == rows.shape[0]

  info = result["projector"]
  n = len(dataset.query) + len(dataset.gallery)
  assert info["num_points"] == n and not info["sampled"]
  with open(os.path.join(projector_dir, "projector", "metadata.tsv")) as f:
    lines = [line.rstrip("\n").split("\t") for line in f]
  expected = [["query", str(r.pid), str(r.camid), r.path]
              for r in dataset.query] + [
                  ["gallery", str(r.pid), str(r.camid), r.path]
                  for r in dataset.gallery]
  assert lines[1:] == expected
  tensor = np.loadtxt(os.path.join(projector_dir, "projector",
                                   "embeddings.tsv"), delimiter="\t")
  # Point k is image k's embedding, the images read as evaluation reads them.
  images = embedders.load_images(dataset.query + dataset.gallery,
                               image_size=(32, 16), normalization="none")
  np.testing.assert_allclose(tensor, _mean_colour(images), rtol=1e-4,
                             atol=1e-3)


def test_flip_averaged_features_are_the_mean_with_the_mirror_image(tmp_path):
  root = synthetic.generate(str(tmp_path / "synthetic"), num_ids=4, seed=0,
                            image_size=(32, 16))
  records = datasets.load_dataset("synthetic", root).query

  def first_row(images):  # left-right sensitive: pixel order of row 0
    return np.asarray(images, np.float32)[:, 0, :, 0]

  features = embedders.extract_features(
      embedders.flip_averaged(first_row), records, image_size=(32, 16),
      normalization="none", batch_size=3)
  images = embedders.load_images(records, image_size=(32, 16),
                               normalization="none", dtype=np.float32)
  row = images[:, 0, :, 0]
  np.testing.assert_allclose(features, (row + row[:, ::-1]) / 2, rtol=1e-6)
  assert not np.allclose(features, row)  # the images are not symmetric


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
