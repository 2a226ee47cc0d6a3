"""Tests of random erasing: its rectangles against a NumPy reference of
Zhong et al.'s algorithm, its seeding, and where the pipeline applies it."""

import math
import os

import numpy as np
from PIL import Image
import pytest
from scipy import stats
import tensorflow as tf

from keras_reid.data import augmentation
from keras_reid.data import pipeline
from keras_reid.data import records as records_lib
from keras_reid.training import stage_setup
from tests.training import tiny_config

H, W = 32, 16
FILL = np.asarray(augmentation.ERASING_FILL, np.float32)


def _boxes(erased: np.ndarray) -> list:
  """(top, left, h, w) of each image's filled rectangle, None if unerased.

  Asserts that the filled pixels are one axis-aligned rectangle holding
  exactly the fill values.
  """
  boxes = []
  for image in erased:
    mask = np.all(image == FILL, axis=-1)
    if not mask.any():
      boxes.append(None)
      continue
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    top, left = rows[0], cols[0]
    h, w = rows[-1] - top + 1, cols[-1] - left + 1
    assert mask.sum() == h * w, "the erased pixels are not a rectangle"
    boxes.append((top, left, h, w))
  return boxes


def _reference_boxes(n, p, rng):
  """Zhong et al.'s Alg. 1 as the bag of tricks codes it, in NumPy."""
  out = []
  for _ in range(n):
    box = None
    if rng.uniform() < p:
      for _ in range(100):
        target = rng.uniform(*augmentation.ERASING_AREA) * H * W
        aspect = rng.uniform(augmentation.ERASING_MIN_ASPECT,
                             1 / augmentation.ERASING_MIN_ASPECT)
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if h < H and w < W:
          box = (rng.integers(0, H - h + 1), rng.integers(0, W - w + 1), h, w)
          break
    out.append(box)
  return out


def test_rectangles_follow_the_reference_distribution():
  n, p = 4000, 0.5
  images = np.zeros((n, H, W, 3), np.float32)
  got = _boxes(augmentation.random_erasing(
      images, tf.constant([7, 0]), probability=p).numpy())
  want = _reference_boxes(n, p, np.random.default_rng(0))
  got_on = [b for b in got if b is not None]
  want_on = [b for b in want if b is not None]
  # Erased fraction: binomial, 4000 draws (sd 0.008).
  assert abs(len(got_on) / n - p) < 0.04
  got_b, want_b = np.asarray(got_on), np.asarray(want_on)
  area = got_b[:, 2] * got_b[:, 3] / (H * W)
  # Rounding h and w moves the area by at most about one row and column.
  assert area.min() >= 0.02 - (H + W) / (H * W)
  assert area.max() <= 0.4 + (H + W + 1) / (H * W)
  assert (got_b[:, 2] < H).all() and (got_b[:, 3] < W).all()
  # Same distributions of size, shape and position as the reference.
  for column, what in ((2, "height"), (3, "width"), (0, "top"), (1, "left")):
    result = stats.ks_2samp(got_b[:, column], want_b[:, column])
    assert result.pvalue > 1e-3, (what, result)
  result = stats.ks_2samp(area, want_b[:, 2] * want_b[:, 3] / (H * W))
  assert result.pvalue > 1e-3, ("area", result)


def test_probability_zero_and_one_and_the_seed():
  images = np.random.default_rng(1).uniform(0, 255, (64, H, W, 3))
  images = images.astype(np.float32)
  none = augmentation.random_erasing(images, tf.constant([1, 2]),
                                     probability=0.0).numpy()
  np.testing.assert_array_equal(none, images)
  every = augmentation.random_erasing(images, tf.constant([1, 2]),
                                      probability=1.0).numpy()
  boxes = _boxes(every)
  assert all(b is not None for b in boxes)
  outside = np.all(every != FILL, axis=-1)
  np.testing.assert_array_equal(every[outside], images[outside])
  again = augmentation.random_erasing(images, tf.constant([1, 2]),
                                      probability=1.0).numpy()
  np.testing.assert_array_equal(again, every)
  other = augmentation.random_erasing(images, tf.constant([1, 3]),
                                      probability=1.0).numpy()
  assert _boxes(other) != boxes


def _black_records(tmp_path, ids=4, per_id=3):
  records = []
  for pid in range(ids):
    for k in range(per_id):
      path = os.path.join(tmp_path, f"{pid:04d}_{k}.png")
      Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(path)
      records.append(records_lib.Record(path, pid, k % 2))
  return records


def _batches(records, count, **kwargs):
  ds = pipeline.make_train_dataset(
      records, ids_per_batch=2, images_per_id=3, image_size=(H, W),
      normalization="none", augment_copies=1, seed=5, **kwargs)
  return [b["images"].numpy() for b in ds.take(count)]


@pytest.mark.parametrize("cache_max_bytes", [0, 2**20])
def test_pipeline_erases_per_batch_and_resumes_on_the_same_batches(
    tmp_path, cache_max_bytes):
  records = _black_records(tmp_path)
  kwargs = dict(cache_max_bytes=cache_max_bytes)
  plain = _batches(records, 2, **kwargs)
  assert all((b == 0).all() for b in plain)  # default: off
  run = _batches(records, 6, erasing_probability=0.5, **kwargs)
  boxes = [_boxes(b) for b in run]
  erased = sum(box is not None for batch in boxes for box in batch)
  assert 0 < erased < 36
  assert boxes[0] != boxes[1]  # drawn anew for every batch
  resumed = _batches(records, 3, erasing_probability=0.5, first_batch=3,
                     **kwargs)
  for a, b in zip(resumed, run[3:]):
    np.testing.assert_array_equal(a, b)


def test_the_config_key_reaches_training_batches_only(tmp_path):
  records = _black_records(tmp_path)
  dataset = records_lib.ReidDataset("black", train=records, query=records[:2],
                                    gallery=records[2:])
  config = tiny_config.get_config()
  config.data.update(dict(image_height=H, image_width=W, augment_copies=1,
                          random_erasing_prob=1.0))
  config.model.backbone = "mobilenet_v1"
  stage = config.stages.synthetic
  make = stage_setup.train_dataset_fn(dataset, stage, config, seed=0)
  images = next(iter(make(tf.distribute.InputContext())))["images"].numpy()
  assert len(images) == stage.ids_per_batch * stage.images_per_id
  normalised_fill = (FILL / 127.5 - 1).astype(np.float32)  # "tf" mode
  for image in images:  # every training image has its rectangle
    assert np.isclose(image, normalised_fill, atol=1e-6).all(-1).any()
  # Evaluation reads the images as they are.
  evaluated = np.concatenate(list(pipeline.make_eval_dataset(
      dataset.query, image_size=(H, W), normalization="tf", batch_size=2)))
  np.testing.assert_array_equal(evaluated, -np.ones_like(evaluated))


def test_bad_probability_names_the_key(tmp_path):
  with pytest.raises(ValueError, match="random_erasing_prob"):
    _batches(_black_records(tmp_path), 1, erasing_probability=1.5)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
