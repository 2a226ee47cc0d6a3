"""Tests of the training / evaluation tf.data pipelines and normalisation."""

import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from keras_reid.data import augmentation
from keras_reid.data import image_files
from keras_reid.data import pipeline
from keras_reid.data import preprocessing
from keras_reid.data.records import Record

SIZE = (32, 16)


def _write_ids(tmp_path, images_per_id, fmt="png"):
  """One solid-ish colour per identity; returns records."""
  rng = np.random.default_rng(0)
  recs = []
  for pid, n in enumerate(images_per_id, 1):
    for k in range(n):
      arr = rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)
      path = os.path.join(tmp_path, f"{pid:04d}_{k}.{fmt}")
      Image.fromarray(arr).save(path)
      recs.append(Record(path, pid * 10, k % 2))
  return recs


def _batch(ds):
  return {k: v.numpy() for k, v in next(iter(ds)).items()}


def test_batch_composition_pairs_shapes_and_dtypes(tmp_path):
  recs = _write_ids(tmp_path, [3, 4, 2, 5, 1])
  k, m = 3, 2
  ds = pipeline.make_train_dataset(recs, ids_per_batch=k, images_per_id=m,
                                   image_size=SIZE, normalization="tf",
                                   seed=3)
  b = _batch(ds)
  assert b["images"].shape == (k * m, 32, 16, 3)
  assert b["images"].dtype == np.float32
  assert b["images"].min() >= -1 and b["images"].max() <= 1
  assert b["labels"].dtype == np.int32
  assert set(b) == {"images", "labels", "pair_i", "pair_j", "pair_same"}
  blocks = b["labels"].reshape(k, m)
  assert (blocks == blocks[:, :1]).all()          # M images of one id
  assert len(set(blocks[:, 0])) == k              # K distinct ids
  assert set(b["labels"]) <= set(range(5))        # contiguous 0..N-1
  pi, pj, ps = b["pair_i"], b["pair_j"], b["pair_same"]
  num_neg = 15 - k * m * (m - 1) // 2
  assert len(pi) == len(pj) == len(ps) == 2 * num_neg
  assert (pi < pj).all()
  assert ps.mean() == 0.5                          # balanced
  np.testing.assert_array_equal(ps, b["labels"][pi] == b["labels"][pj])
  all_pairs = {(i, j) for i, j in zip(pi, pj)}
  assert len(all_pairs) == 15                      # every i < j pair present
  assert pipeline.num_pairs(k, m) == len(pi)
  # Static shapes for the model's input signature.
  assert ds.element_spec["pair_i"].shape == (2 * num_neg,)
  assert ds.element_spec["images"].shape == (k * m, 32, 16, 3)


def test_seeding_and_replacement(tmp_path):
  recs = _write_ids(tmp_path, [1, 1, 2])
  def first(seed):
    return _batch(pipeline.make_train_dataset(
        recs, ids_per_batch=3, images_per_id=4, image_size=SIZE,
        normalization="none", seed=seed))
  a, b, c = first(1), first(1), first(2)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a["images"], c["images"])
  # Ids with 1 image give M=4 images: distinct augmented variants.
  ims = a["images"].reshape(3, 4, -1)
  for blk in ims:
    assert len({x.tobytes() for x in blk}) == 4


def test_no_augmentation_matches_eval_pipeline(tmp_path):
  recs = _write_ids(tmp_path, [1, 1])
  b = _batch(pipeline.make_train_dataset(
      recs, ids_per_batch=2, images_per_id=1, image_size=SIZE,
      normalization="torch", augment_copies=1))
  ev = np.concatenate(list(pipeline.make_eval_dataset(
      recs, image_size=SIZE, normalization="torch", batch_size=1)))
  order = np.argsort(b["labels"])
  np.testing.assert_allclose(b["images"][order], ev, atol=1e-5)


def test_explicit_labels(tmp_path):
  recs = _write_ids(tmp_path, [2, 2, 2])
  labels = [0, 1, 0, 1, 2, 2]  # regroups images across pids
  b = _batch(pipeline.make_train_dataset(
      recs, ids_per_batch=3, images_per_id=2, image_size=SIZE,
      normalization="none", labels=labels, augment_copies=1))
  assert sorted(b["labels"].tolist()) == [0, 0, 1, 1, 2, 2]
  with pytest.raises(ValueError, match="one label per record"):
    pipeline.make_train_dataset(recs, ids_per_batch=1, images_per_id=1,
                                image_size=SIZE, normalization="none",
                                labels=[0, 1])


def test_soft_labels_group_by_argmax_and_carry_distributions(tmp_path):
  # Every record has the same pid: soft labels alone decide the classes.
  recs = [Record(r.path, 7, r.camid) for r in _write_ids(tmp_path, [2, 2, 2, 1])]
  soft = np.array([[1., 0., 0., 0.], [.2, .7, .1, 0.], [0., 1., 0., 0.],
                   [.6, 0., 0., .4], [0., 0., 1., 0.], [.1, .1, .5, .3],
                   [0., 0., 0., 1.]], np.float32)
  k, m = 3, 2
  ds = pipeline.make_train_dataset(
      recs, ids_per_batch=k, images_per_id=m, image_size=SIZE,
      normalization="none", labels=soft, augment_copies=1)
  # Identify each batch image by comparing it with the eval pipeline's.
  ev = np.concatenate(list(pipeline.make_eval_dataset(
      recs, image_size=SIZE, normalization="none", batch_size=8)))
  for b in ds.take(6):
    b = {key: v.numpy() for key, v in b.items()}
    assert b["labels"].dtype == np.float32 and b["labels"].shape == (k * m, 4)
    dist = np.abs(b["images"][:, None] - ev[None]).reshape(k * m, len(recs), -1)
    index = dist.max(axis=2).argmin(axis=1)
    np.testing.assert_allclose(b["labels"], soft[index], atol=1e-6)
    classes = soft[index].argmax(axis=1)
    # K blocks of M images, one argmax class per block, K distinct classes.
    blocks = classes.reshape(k, m)
    assert (blocks == blocks[:, :1]).all() and len(set(blocks[:, 0])) == k
    np.testing.assert_array_equal(
        b["pair_same"],
        np.asarray(classes[b["pair_i"]] == classes[b["pair_j"]], np.float32))
  with pytest.raises(ValueError, match="summing to 1"):
    pipeline.make_train_dataset(recs, ids_per_batch=2, images_per_id=1,
                                image_size=SIZE, normalization="none",
                                labels=soft * 2)


def _variants_by_label(recs, *, seed, augment_seed, copies=3):
  """{label: set of the image bytes of its block} of batch 0.

  Each identity has one image and M = copies, so its block holds every
  variant of that image exactly once.
  """
  b = _batch(pipeline.make_train_dataset(
      recs, ids_per_batch=len(recs), images_per_id=copies, image_size=SIZE,
      normalization="none", augment_copies=copies, seed=seed,
      augment_seed=augment_seed))
  out = {}
  for label, image in zip(b["labels"].tolist(), b["images"]):
    out.setdefault(label, set()).add(image.tobytes())
  return out


def test_fixed_augmented_set_is_the_same_in_every_pipeline(tmp_path):
  recs = _write_ids(tmp_path, [1, 1])
  # Seeds as training draws them: base + 1000 * stage + step + 7919 * worker.
  step1_worker0 = _variants_by_label(recs, seed=0 + 1, augment_seed=0)
  step2_worker1 = _variants_by_label(recs, seed=1000 + 2 + 7919,
                                     augment_seed=0)
  assert step1_worker0 == step2_worker1
  assert all(len(v) == 3 for v in step1_worker0.values())
  # Another config seed is another fixed set; "redraw" (augment_seed None)
  # draws new variants with the pipeline's seed.
  assert _variants_by_label(recs, seed=1, augment_seed=7) != step1_worker0
  assert (_variants_by_label(recs, seed=1, augment_seed=None) !=
          _variants_by_label(recs, seed=1002, augment_seed=None))


def test_fixed_transforms_depend_on_the_path_only():
  kwargs = dict(copies=4, image_size=SIZE, max_shift=.1, max_scale=.1,
                max_rotation_deg=5, flip=True, seed=3)
  t = augmentation.augmentation_transforms(
      3, keys=["a.png", "b.png", "c.png"], **kwargs)
  # Same image, another position among other images: same variants.
  alone = augmentation.augmentation_transforms(1, keys=["b.png"], **kwargs)
  np.testing.assert_array_equal(t[1], alone[0])
  # Different images: different variants (variant 0 is the identity).
  assert not np.allclose(t[0, 1:], t[1, 1:])
  assert not np.allclose(t[1, 1:], t[2, 1:])
  with pytest.raises(ValueError, match="one key per image"):
    augmentation.augmentation_transforms(2, keys=["a.png"], **kwargs)


def test_fixed_variants_do_not_depend_on_where_the_dataset_lies(tmp_path):
  # The same files in two folders (as two checkouts or two data roots):
  # the fixed augmented set, hence every batch, is byte-identical.
  os.makedirs(tmp_path / "a" / "cam_a")
  os.makedirs(tmp_path / "elsewhere" / "deeper" / "cam_a")
  recs_a = _write_ids(tmp_path / "a" / "cam_a", [1, 1])
  recs_b = _write_ids(tmp_path / "elsewhere" / "deeper" / "cam_a", [1, 1])
  for kwargs in (dict(seed=1, augment_seed=0), dict(seed=5, augment_seed=9)):
    assert (_variants_by_label(recs_a, **kwargs) ==
            _variants_by_label(recs_b, **kwargs))
  assert augmentation.location_free_keys(
      [r.path for r in recs_a]) == ["0001_0.png", "0002_0.png"]
  assert augmentation.location_free_keys(
      ["/x/data/cam_a/1.bmp", "/x/data/cam_b/2.bmp"]) == [
          "cam_a/1.bmp", "cam_b/2.bmp"]
  assert augmentation.location_free_keys([]) == []


def test_transforms():
  t = augmentation.augmentation_transforms(4, copies=3, image_size=SIZE,
                                           max_shift=.1, max_scale=.1,
                                           max_rotation_deg=5, flip=True,
                                           seed=0)
  assert t.shape == (4, 3, 8)
  np.testing.assert_allclose(t[:, 0], [[1, 0, 0, 0, 1, 0, 0, 0]] * 4)
  assert not np.allclose(t[:, 1], t[:, 0, None][:, 0])
  again = augmentation.augmentation_transforms(
      4, copies=3, image_size=SIZE, max_shift=.1, max_scale=.1,
      max_rotation_deg=5, flip=True, seed=0)
  np.testing.assert_array_equal(t, again)  # variant v of image i is fixed
  img = tf.random.uniform([1, 32, 16, 3])
  same = augmentation.apply_transforms(img, tf.constant(t[:1, 0]))
  np.testing.assert_allclose(same, img, atol=1e-6)
  flip = tf.constant([[-1, 0, 15, 0, 1, 0, 0, 0]], tf.float32)
  np.testing.assert_allclose(augmentation.apply_transforms(img, flip),
                             img[:, :, ::-1], atol=1e-6)


def test_corrupt_images(tmp_path):
  recs = _write_ids(tmp_path, [2, 2, 2], fmt="jpg")
  bad = os.path.join(tmp_path, "broken.jpg")
  with open(bad, "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
  recs.append(Record(bad, 10, 0))
  recs.append(Record(os.path.join(tmp_path, "missing.png"), 20, 0))
  with pytest.raises(image_files.CorruptImageError, match="broken.jpg"):
    pipeline.make_train_dataset(recs, ids_per_batch=2, images_per_id=2,
                                image_size=SIZE, normalization="tf")
  with pytest.raises(image_files.CorruptImageError, match="missing.png"):
    pipeline.make_eval_dataset(recs, image_size=SIZE, normalization="tf",
                               batch_size=4)
  assert image_files.validate_images([r.path for r in recs]) == [6, 7]
  ds = pipeline.make_train_dataset(recs, ids_per_batch=3, images_per_id=2,
                                   image_size=SIZE, normalization="tf",
                                   skip_corrupt=True)
  for b in ds.take(3):
    assert np.isfinite(b["images"].numpy()).all()


def test_normalize_modes():
  x = tf.constant([[[0., 127.5, 255.]]])
  np.testing.assert_allclose(preprocessing.normalize(x, "tf"),
                             [[[-1, 0, 1]]], atol=1e-6)
  np.testing.assert_allclose(preprocessing.normalize(x, "none"), x)
  torch = preprocessing.normalize(x, "torch").numpy()
  np.testing.assert_allclose(torch[0, 0, 0], (0 - .485) / .229, rtol=1e-5)
  caffe = preprocessing.normalize(x, "caffe").numpy()
  np.testing.assert_allclose(caffe[0, 0], [255 - 103.939, 127.5 - 116.779,
                                           0 - 123.68], rtol=1e-5)  # BGR
  with pytest.raises(ValueError, match="caffe"):
    preprocessing.normalize(x, "imagenet")
  assert set(preprocessing.NORMALIZATIONS) == {"tf", "torch", "caffe",
                                               "none"}


def test_bad_arguments(tmp_path):
  recs = _write_ids(tmp_path, [2, 2])
  with pytest.raises(ValueError, match="only 2 identities"):
    pipeline.make_train_dataset(recs, ids_per_batch=3, images_per_id=2,
                                image_size=SIZE, normalization="tf")
  with pytest.raises(ValueError, match="train split is empty"):
    pipeline.make_train_dataset([], ids_per_batch=1, images_per_id=1,
                                image_size=SIZE, normalization="tf")


def test_bmp_with_trailing_bytes(tmp_path):
  # Real VIPeR files end with 2 padding bytes that TF's BMP decoder rejects.
  arr = np.arange(8 * 4 * 3, dtype=np.uint8).reshape(8, 4, 3)
  path = os.path.join(tmp_path, "000_45.bmp")
  Image.fromarray(arr).save(path)
  with open(path, "ab") as f:
    f.write(b"\0\0")
  decoded = preprocessing.decode_image(tf.io.read_file(path))
  np.testing.assert_array_equal(decoded, arr)
  png = os.path.join(tmp_path, "x.png")
  Image.fromarray(arr).save(png)
  np.testing.assert_array_equal(
      preprocessing.decode_image(tf.io.read_file(png)), arr)


def test_transforms_are_about_the_centre():
  size = (33, 17)  # odd: the centre is a pixel
  t = augmentation.augmentation_transforms(1, copies=4, image_size=size,
                                           max_shift=0., max_scale=.2,
                                           max_rotation_deg=10., flip=True,
                                           seed=5)
  img = np.zeros((3, 33, 17, 3), np.float32)
  img[:, 16, 8] = 1.
  out = augmentation.apply_transforms(tf.constant(img),
                                      tf.constant(t[0, 1:])).numpy()
  for o in out:  # scale, rotation and flip keep the centre where it is
    assert np.unravel_index(o[..., 0].argmax(), size) == (16, 8)
  shifted = augmentation.augmentation_transforms(
      50, copies=2, image_size=size, max_shift=.1, max_scale=0.,
      max_rotation_deg=0., flip=False, seed=0)[:, 1]
  assert np.abs(shifted[:, 2]).max() <= .1 * 17 + 1e-5   # x shift bound
  assert np.abs(shifted[:, 5]).max() <= .1 * 33 + 1e-5   # y shift bound
  assert np.abs(shifted[:, 2]).max() > .05 * 17


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
