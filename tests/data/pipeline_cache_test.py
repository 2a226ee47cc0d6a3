"""Tests of the in-memory cache of decoded training images (data.train_cache_mb)."""

import os

import numpy as np
from PIL import Image
import pytest

from keras_reid.data import image_files
from keras_reid.data import pipeline
from keras_reid.data.records import Record

H, W = 32, 16


def _write(tmp_path, images_per_id):
  rng = np.random.default_rng(0)
  recs = []
  for pid, n in enumerate(images_per_id):
    for k in range(n):
      path = os.path.join(tmp_path, f"{pid:04d}_{k}.png")
      # Not the model size: the cache holds the resized image.
      Image.fromarray(rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)).save(path)
      recs.append(Record(path, pid, k % 2))
  return recs


def _batches(recs, cache_max_bytes, n=4, **kwargs):
  ds = pipeline.make_train_dataset(
      recs, ids_per_batch=2, images_per_id=2, image_size=(H, W),
      normalization="caffe", augment_copies=5, seed=3, augment_seed=11,
      cache_max_bytes=cache_max_bytes, **kwargs)
  return [b for _, b in zip(range(n), ds.as_numpy_iterator())]


def test_cached_batches_match_decoded_ones(tmp_path):
  recs = _write(tmp_path, [2, 3, 2])
  decoded = _batches(recs, cache_max_bytes=0)
  cached = _batches(recs, cache_max_bytes=2**20)
  for a, b in zip(decoded, cached):
    for key in ("labels", "pair_i", "pair_j", "pair_same"):
      np.testing.assert_array_equal(a[key], b[key])
    # The same fixed variants of the same images: only the cache's rounding
    # of decoded pixels to integers (<= 0.5 grey level, warped) differs.
    assert a["images"].shape == b["images"].shape
    np.testing.assert_allclose(a["images"], b["images"], atol=0.5 + 1e-4)
    assert np.abs(a["images"] - b["images"]).mean() < 0.3


def test_cache_holds_the_rounded_resized_images(tmp_path):
  recs = _write(tmp_path, [2, 2])
  paths = [r.path for r in recs]
  images = image_files.decoded_images(paths, (H, W))
  assert images.dtype == np.uint8 and images.shape == (4, H, W, 3)
  assert image_files.decoded_images(paths, (H, W)) is images  # memoised
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from keras_reid.data import preprocessing  # pylint: disable=g-import-not-at-top
  want = preprocessing.load_image(tf.constant(paths[1]), (H, W)).numpy()
  np.testing.assert_array_equal(images[1], np.round(want).astype(np.uint8))


def test_over_the_limit_decodes_and_says_so(tmp_path, caplog):
  recs = _write(tmp_path, [2, 2])
  limit = 4 * H * W * 3 - 1  # one byte short
  with caplog.at_level("INFO"):
    _batches(recs, cache_max_bytes=limit, n=1)
  assert "not cached" in caplog.text and "data.train_cache_mb" in caplog.text
  caplog.clear()
  with caplog.at_level("INFO"):
    _batches(recs, cache_max_bytes=limit + 1, n=1)
  assert "not cached" not in caplog.text


def test_skipped_corrupt_images_are_never_drawn_from_the_cache(tmp_path):
  recs = _write(tmp_path, [2, 2, 2])
  bad = os.path.join(tmp_path, "broken.png")
  with open(bad, "wb") as f:
    f.write(b"not an image")
  recs.insert(1, Record(bad, 0, 1))
  # Cache rows are the kept images only: record -> row must skip the bad one.
  cached = _batches(recs, cache_max_bytes=2**20, n=6, skip_corrupt=True)
  decoded = _batches(recs, cache_max_bytes=0, n=6, skip_corrupt=True)
  for a, b in zip(decoded, cached):
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_allclose(a["images"], b["images"], atol=0.5 + 1e-4)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
