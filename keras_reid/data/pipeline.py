"""tf.data pipelines: K x M training batches with the paper's pairs, and eval.

Training batches follow the paper (Geng et al. 2016, Sec. 3): K identities x M
images per batch, every training image augmented into `augment_copies` fixed
variants by random 2D transforms about the centre, and all i < j pairs of the
batch with the positive pairs replicated until they are as many as the
negatives. Because the batch composition is fixed (K blocks of M), the pair
index tensors are constants and P is static.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from keras_reid.data import preprocessing
from keras_reid.data import records as records_lib

AUTOTUNE = tf.data.AUTOTUNE

# config.data.augment_mode: how the `augment_copies` variants of an image are
# drawn.
#   "fixed": from config.seed and the image's path only, the paper's offline
#     5x set: the same variants in step 1 and step 2 of every stage, on every
#     input worker and after a resume (`make_train_dataset(augment_seed=)`);
#   "redraw": from the pipeline's seed, which includes the stage, the step
#     and the worker, so each of them sees other variants (ablation).
AUGMENT_MODES = ("fixed", "redraw")


class CorruptImageError(ValueError):
  """An image file could not be read or decoded."""


# The decoded, resized training images of the last pipeline that cached them:
# (paths, image size) -> uint8 [N, H, W, 3]. One entry: both fine-tuning steps
# of a stage (and a resumed one) rebuild their pipelines on the same images.
_DECODED: dict[tuple[tuple[str, ...], tuple[int, int]], np.ndarray] = {}


def decoded_images(paths: Sequence[str],
                   image_size: tuple[int, int]) -> np.ndarray:
  """Every image decoded and resized once, rounded to uint8, kept in memory.

  Args:
    paths: image files (already validated).
    image_size: (height, width).

  Returns:
    uint8 [len(paths), height, width, 3], the same for the same arguments
    (memoised for the last call).
  """
  key = (tuple(paths), (int(image_size[0]), int(image_size[1])))
  if key not in _DECODED:
    _DECODED.clear()
    ds = tf.data.Dataset.from_tensor_slices(list(paths)).map(
        lambda p: tf.cast(tf.round(preprocessing.load_image(p, key[1])),
                          tf.uint8),
        num_parallel_calls=AUTOTUNE, deterministic=True).batch(256)
    out = np.zeros((len(paths), key[1][0], key[1][1], 3), np.uint8)
    start = 0
    for chunk in ds.as_numpy_iterator():
      out[start:start + len(chunk)] = chunk
      start += len(chunk)
    _DECODED[key] = out
  return _DECODED[key]


# Paths already checked by `validate_images`, keyed with size and mtime so an
# edited file is checked again. Avoids decoding a dataset twice per process.
_VALID_CACHE: dict[tuple[str, int, float], bool] = {}


def _file_key(path: str) -> tuple[str, int, float] | None:
  try:
    st = os.stat(path)
  except OSError:
    return None
  return (path, st.st_size, st.st_mtime)


def _header_then_decode(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(header (height, width) int64 [2], decoded shape int32 [3]) of a file.

  The file is decoded only if its header is within
  preprocessing.MAX_IMAGE_PIXELS; otherwise the shape is [0, 0, 3].
  """
  contents = tf.io.read_file(path)
  size = preprocessing.image_header_size(contents)
  return size, tf.cond(
      size[0] * size[1] <= preprocessing.MAX_IMAGE_PIXELS,
      lambda: tf.shape(preprocessing.decode_image(contents)),
      lambda: tf.constant([0, 0, 3]))


def validate_images(paths: Sequence[str],
                    oversized: dict[int, tuple[int, int]] | None = None
                    ) -> list[int]:
  """Decodes every file once and returns the indices that fail.

  Runs as a parallel tf.data pass (the same decoder as the pipelines), so
  every quirk that would break training is found before training starts.
  A file whose header declares more than preprocessing.MAX_IMAGE_PIXELS
  pixels fails without being decoded.

  Args:
    paths: image file paths.
    oversized: if given, filled with {index: (height, width)} of the files
      that fail for their header's size.

  Returns:
    Sorted indices into `paths` of files that are missing, unreadable,
    undecodable or too large.
  """
  bad = []
  todo = []
  for i, p in enumerate(paths):
    key = _file_key(p)
    if key is None or (key[1] == 0):
      bad.append(i)
    elif key not in _VALID_CACHE:
      todo.append(i)
  if todo:
    todo_paths = [paths[i] for i in todo]
    ds = tf.data.Dataset.from_tensor_slices(
        (np.asarray(todo, np.int64), todo_paths))
    ds = ds.map(lambda i, p: (i, *_header_then_decode(p)),
                num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.ignore_errors().batch(1024)
    ok = set()
    for idx, header, shape in ds.as_numpy_iterator():
      # A decodable but empty image cannot be resized: treat it as corrupt.
      for i, h, s in zip(idx.tolist(), header.tolist(), shape.tolist()):
        if s[0] > 0 and s[1] > 0:
          ok.add(i)
        elif h[0] * h[1] > preprocessing.MAX_IMAGE_PIXELS and (
            oversized is not None):
          oversized[i] = (h[0], h[1])
    for i in todo:
      if i in ok:
        _VALID_CACHE[_file_key(paths[i])] = True
      else:
        bad.append(i)
  return sorted(bad)


def _oversized_note(index: int, oversized: dict[int, tuple[int, int]]) -> str:
  """The note naming the declared size of an image rejected for its size."""
  if index not in oversized:
    return ""
  height, width = oversized[index]
  return (f" (header declares {width}x{height} pixels, over the limit of "
          f"{preprocessing.MAX_IMAGE_PIXELS})")


def _check_images(records: Sequence[records_lib.Record], skip_corrupt: bool
                  ) -> tuple[list[int], int]:
  """Returns (indices of good records, number skipped) or raises."""
  oversized: dict[int, tuple[int, int]] = {}
  bad = validate_images([r.path for r in records], oversized)
  if bad and not skip_corrupt:
    shown = ", ".join(repr(records[i].path) + _oversized_note(i, oversized)
                      for i in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise CorruptImageError(
        f"{len(bad)} image file(s) are missing, cannot be decoded as "
        f"jpg/png/bmp/gif or are too large: {shown}{more}. Fix or remove "
        "them, or pass skip_corrupt=True (config data.skip_corrupt) to skip "
        "and count them.")
  if bad:
    logging.warning("Skipping %d corrupt image(s), e.g. %s", len(bad),
                    records[bad[0]].path)
  bad_set = set(bad)
  return [i for i in range(len(records)) if i not in bad_set], len(bad)


def check_dataset_images(dataset: records_lib.ReidDataset, *,
                         skip_corrupt: bool
                         ) -> tuple[records_lib.ReidDataset, dict]:
  """Checks every image of train, query and gallery in one pass, up front.

  Called before the first training step so that a corrupt query or gallery
  image is found before training, not after it.

  Args:
    dataset: the dataset a run will use.
    skip_corrupt: drop missing, undecodable and too large images (listed in
      the returned dict) instead of raising.

  Returns:
    (the dataset without the bad images, {"train": [paths], "query":
    [paths], "gallery": [paths], "num_skipped": total}; empty lists when
    nothing was skipped).

  Raises:
    CorruptImageError: naming each bad file and its split, unless
      skip_corrupt.
  """
  splits = {"train": dataset.train, "query": dataset.query,
            "gallery": dataset.gallery}
  flat = [(name, r) for name, recs in splits.items() for r in recs]
  oversized: dict[int, tuple[int, int]] = {}
  bad = set(validate_images([r.path for _, r in flat], oversized))
  skipped = {name: [] for name in splits}
  for i in sorted(bad):
    skipped[flat[i][0]].append(flat[i][1].path)
  if bad and not skip_corrupt:
    shown = []
    for i in sorted(bad)[:5]:
      name, r = flat[i]
      shown.append(f"{name}: {r.path!r}{_oversized_note(i, oversized)}")
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    counts = ", ".join(f"{len(v)} {k}" for k, v in skipped.items() if v)
    raise CorruptImageError(
        f"{dataset.name}: {len(bad)} image file(s) ({counts}) are missing, "
        f"cannot be decoded as jpg/png/bmp/gif or are too large: "
        f"{'; '.join(shown)}{more}. Fix or remove them, or pass "
        "skip_corrupt=True (config data.skip_corrupt) to skip them in "
        "training and evaluation (the evaluation report lists them).")
  skipped["num_skipped"] = len(bad)
  if not bad:
    return dataset, skipped
  logging.warning("%s: skipping %d corrupt image(s) (%s), e.g. %s",
                  dataset.name, len(bad),
                  ", ".join(f"{len(skipped[k])} {k}" for k in splits),
                  flat[min(bad)][1].path)
  kept = {}
  for name, recs in splits.items():
    drop = set(skipped[name])
    kept[name] = [r for r in recs if r.path not in drop]
  return dataclasses.replace(dataset, **kept), skipped


def pair_indices(ids_per_batch: int, images_per_id: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """All i < j pairs of a K x M batch, positives tiled to match negatives.

  Batch element b belongs to identity block b // M.

  Args:
    ids_per_batch: K.
    images_per_id: M.

  Returns:
    (pair_i int32 [P], pair_j int32 [P], pair_same float32 [P]). With both
    kinds present P = 2 * num_negatives (negatives first, then the positives
    repeated cyclically); if one kind is absent (K = 1 or M = 1) the pairs
    are just all i < j pairs.
  """
  b = ids_per_batch * images_per_id
  ii, jj = np.triu_indices(b, k=1)
  same = (ii // images_per_id) == (jj // images_per_id)
  pos_i, pos_j = ii[same], jj[same]
  neg_i, neg_j = ii[~same], jj[~same]
  if len(pos_i) and len(neg_i):
    reps = np.resize(np.arange(len(pos_i)), len(neg_i))
    pos_i, pos_j = pos_i[reps], pos_j[reps]
  pi = np.concatenate([neg_i, pos_i]).astype(np.int32)
  pj = np.concatenate([neg_j, pos_j]).astype(np.int32)
  ps = np.concatenate([np.zeros(len(neg_i)), np.ones(len(pos_i))]
                      ).astype(np.float32)
  return pi, pj, ps


def path_key(path: str) -> int:
  """A stable 63-bit integer of a path (Python's hash() is salted per run)."""
  return int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8],
                        "little") >> 1


def augmentation_transforms(num_images: int, *, copies: int,
                            image_size: tuple[int, int], max_shift: float,
                            max_scale: float, max_rotation_deg: float,
                            flip: bool, seed: int,
                            keys: Sequence[str] | None = None) -> np.ndarray:
  """The fixed random 2D transform of every (image, variant).

  Variant 0 is the untransformed image (so the clean images the model is
  evaluated on stay in the training distribution); variants 1..copies-1 are
  random: shift uniform in +-max_shift of the size, zoom 1 +- max_scale,
  rotation +-max_rotation_deg about the centre, and a horizontal flip with
  probability 1/2 if `flip`.

  Args:
    num_images: number of training images N.
    copies: variants per image.
    image_size: (height, width) the transforms apply to.
    max_shift, max_scale, max_rotation_deg, flip: ranges, see above.
    seed: the same seed gives the same transforms.
    keys: optional identity of each image (its path): image i's variants
      then depend on (seed, keys[i]) only, not on its position or on the
      other images (the fixed augmented set).

  Returns:
    float32 [N, copies, 8] projective transforms mapping output to input
    pixel coordinates, as `tf.raw_ops.ImageProjectiveTransformV3` takes them.
  """
  h, w = image_size
  if keys is None:
    rng = np.random.default_rng(seed)
    u = rng.uniform(-1., 1., size=(num_images, copies, 4))
    flips = rng.uniform(size=(num_images, copies)) < 0.5
  else:
    if len(keys) != num_images:
      raise ValueError(f"augmentation_transforms: {len(keys)} keys for "
                       f"{num_images} images; expected one key per image.")
    u = np.empty((num_images, copies, 4))
    flips = np.empty((num_images, copies), bool)
    for i, key in enumerate(keys):
      rng = np.random.default_rng([seed, path_key(key)])
      u[i] = rng.uniform(-1., 1., size=(copies, 4))
      flips[i] = rng.uniform(size=copies) < 0.5
  tx = u[..., 0] * max_shift * w
  ty = u[..., 1] * max_shift * h
  s = 1. + u[..., 2] * max_scale
  theta = np.deg2rad(u[..., 3] * max_rotation_deg)
  fl = flips & flip
  tx[:, 0] = ty[:, 0] = theta[:, 0] = 0.
  s[:, 0] = 1.
  fl[:, 0] = False
  cx, cy = (w - 1) / 2., (h - 1) / 2.
  # Output -> input: in = R(-theta) (out - c - t) / s + c, then mirror x.
  cos, sin = np.cos(theta) / s, np.sin(theta) / s
  a0, a1 = cos, sin
  b0, b1 = -sin, cos
  ox, oy = -cx - tx, -cy - ty
  a2 = a0 * ox + a1 * oy + cx
  b2 = b0 * ox + b1 * oy + cy
  sign = np.where(fl, -1., 1.)
  a0, a1 = sign * a0, sign * a1
  a2 = np.where(fl, (w - 1) - a2, a2)
  zeros = np.zeros_like(a0)
  out = np.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=-1)
  return out.astype(np.float32)


def apply_transforms(images: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
  """Warps a batch of images with per-image projective transforms.

  Args:
    images: float32 [B, H, W, C].
    transforms: float32 [B, 8] output -> input transforms.

  Returns:
    float32 [B, H, W, C], borders filled by reflection.
  """
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms,
      output_shape=tf.shape(images)[1:3], fill_value=0.,
      interpolation="BILINEAR", fill_mode="REFLECT")


def _contiguous_labels(records: Sequence[records_lib.Record],
                       labels) -> tuple[np.ndarray, np.ndarray]:
  """(class per record int32 [N], the label each record's batches carry).

  The label carried is the class itself (int32 [N]) for pids or hard
  labels, the distribution (float32 [N, C]) for soft labels, whose class
  (for K x M grouping and verification pairs) is the argmax.
  """
  if labels is None:
    pids = np.asarray([r.pid for r in records])
    _, inverse = np.unique(pids, return_inverse=True)
    return inverse.astype(np.int32), inverse.astype(np.int32)
  labels = np.asarray(labels)
  if labels.ndim == 2 and labels.shape[0] == len(records):
    if not np.issubdtype(labels.dtype, np.floating) or not labels.shape[1]:
      raise ValueError(
          f"soft labels must be float [N, num_classes]; got dtype "
          f"{labels.dtype}, shape {labels.shape}.")
    if not (np.all(labels >= 0) and np.allclose(labels.sum(axis=1), 1.0,
                                                atol=1e-3)):
      raise ValueError("soft labels must be non-negative rows summing to 1 "
                       "(a distribution over classes per record).")
    return (labels.argmax(axis=1).astype(np.int32),
            labels.astype(np.float32))
  if labels.shape != (len(records),):
    raise ValueError(
        f"labels has shape {labels.shape}; expected one label per record "
        f"({len(records)},), or soft labels ({len(records)}, num_classes).")
  if not np.issubdtype(labels.dtype, np.integer) or (
      len(labels) and labels.min() < 0):
    raise ValueError("labels must be non-negative integers (class indices), "
                     f"got dtype {labels.dtype}, min {labels.min()}.")
  return labels.astype(np.int32), labels.astype(np.int32)


class _Sampler:
  """Draws the (record index, variant) of each element of batch `step`."""

  def __init__(self, members: list[np.ndarray], *, ids_per_batch: int,
               images_per_id: int, copies: int, seed: int):
    self.members = members
    self.k = ids_per_batch
    self.m = images_per_id
    self.copies = copies
    self.seed = seed

  def __call__(self, step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # One generator per (seed, step): batch t is the same however the
    # pipeline is parallelised or restarted.
    rng = np.random.default_rng([self.seed, int(step)])
    ids = rng.choice(len(self.members), self.k, replace=False)
    index, variant = [], []
    for c in ids:
      imgs = self.members[c]
      n = len(imgs)
      if n >= self.m:
        index.append(rng.choice(imgs, self.m, replace=False))
        variant.append(rng.integers(self.copies, size=self.m))
      else:
        # Too few images: sample (image, variant) items, distinct while the
        # augmented pool allows, so the M slots are still different views.
        pool = n * self.copies
        items = rng.choice(pool, self.m, replace=pool < self.m)
        index.append(imgs[items // self.copies])
        variant.append(items % self.copies)
    return (np.concatenate(index).astype(np.int32),
            np.concatenate(variant).astype(np.int32))


def make_train_dataset(records: Sequence[records_lib.Record], *,
                       ids_per_batch: int, images_per_id: int,
                       image_size: tuple[int, int], normalization: str,
                       augment_copies: int = 5, max_shift: float = .05,
                       max_scale: float = .1, max_rotation_deg: float = 5.,
                       flip: bool = True, seed: int = 0,
                       augment_seed: int | None = None,
                       skip_corrupt: bool = False,
                       labels=None,
                       validate: bool = True,
                       first_batch: int = 0,
                       cache_max_bytes: int = 0) -> tf.data.Dataset:
  """Infinite dataset of K x M training batches with their pairs.

  Args:
    records: training records.
    ids_per_batch: K identities per batch (distinct within a batch).
    images_per_id: M images per identity; identities with fewer images are
      sampled with replacement.
    image_size: (height, width) of the model input.
    normalization: a key of preprocessing.NORMALIZATIONS.
    augment_copies: each image becomes this many fixed variants (variant 0
      is the original); 1 = no augmentation.
    max_shift, max_scale, max_rotation_deg, flip: augmentation ranges.
    seed: seeds the batch sampling, and the transforms when augment_seed
      is None (variants re-drawn with every seed: augment_mode "redraw").
    augment_seed: if given, each image's variants depend only on it and the
      image's path (augment_mode "fixed", the paper's offline 5x set): the
      same in every pipeline whatever its `seed`.
    skip_corrupt: skip (and log the count of) undecodable files instead of
      raising CorruptImageError naming them.
    labels: optional labels used instead of mapping pids to 0..N-1 (the
      pseudo labels of self-training / co-training; pids are then never
      read): int [N] class indices (hard), or float [N, C] distributions
      over C classes (soft), whose argmax is the class that groups the
      K x M batches and decides the pairs' same / different.
    validate: decode every file once up front (needed for skip_corrupt and
      for errors naming the file).
    first_batch: start at this batch of the sequence (batch t depends on
      (seed, t) only, so a resumed run continues exactly where it stopped
      without replaying the batches before).
    cache_max_bytes: keep the decoded, resized training images in memory
      as uint8 (H x W x 3 bytes each, `decoded_images`) when they take at
      most this many bytes, and warp the fixed variants from there;
      otherwise (and with 0) decode every image at every use, which the log
      says. Cached pixels are the decoded ones rounded to integers.

  Returns:
    tf.data.Dataset of dicts, B = K * M:
      "images": float32 [B, H, W, 3] normalised,
      "labels": int32 [B] class indices (contiguous 0..N-1 from pids), or
        with soft `labels` float32 [B, C] distributions,
      "pair_i", "pair_j": int32 [P] batch indices, i < j,
      "pair_same": float32 [P] 1 for same identity, 0 otherwise.
    Iterating it again restarts the same sequence of batches.
  """
  preprocessing.check_normalization(normalization)
  if ids_per_batch < 1 or images_per_id < 1 or augment_copies < 1:
    raise ValueError(
        f"ids_per_batch={ids_per_batch}, images_per_id={images_per_id} and "
        f"augment_copies={augment_copies} must all be >= 1.")
  records = list(records)
  if not records:
    raise ValueError("make_train_dataset got no training records: the "
                     "dataset's train split is empty.")
  class_of, label_values = _contiguous_labels(records, labels)
  keep = list(range(len(records)))
  if validate or skip_corrupt:
    keep, _ = _check_images(records, skip_corrupt)
  if not keep:
    raise ValueError("No decodable training image left after skipping "
                     "corrupt files.")
  kept = np.asarray(keep)
  classes, inverse = np.unique(class_of[kept], return_inverse=True)
  members = [kept[inverse == c] for c in range(len(classes))]
  if ids_per_batch > len(classes):
    raise ValueError(
        f"ids_per_batch={ids_per_batch} but the training set has only "
        f"{len(classes)} identities; lower ids_per_batch (config "
        "stages.<name>.ids_per_batch).")
  sampler = _Sampler(members, ids_per_batch=ids_per_batch,
                     images_per_id=images_per_id, copies=augment_copies,
                     seed=seed)
  transforms = augmentation_transforms(
      len(records), copies=augment_copies, image_size=image_size,
      max_shift=max_shift, max_scale=max_scale,
      max_rotation_deg=max_rotation_deg, flip=flip,
      seed=seed if augment_seed is None else augment_seed,
      keys=None if augment_seed is None else [r.path for r in records])
  transforms = tf.constant(transforms.reshape(-1, 8))
  paths = tf.constant([r.path for r in records])
  soft_classes = label_values.shape[1] if label_values.ndim == 2 else 0
  if soft_classes:
    # Soft labels are sparse (top-m classes per image): carry each row's
    # non-zero classes and weights, [N, m], not the dense [N, C] table.
    width = max(1, int((label_values > 0).sum(axis=1).max()))
    top = np.argsort(-label_values, axis=1, kind="stable")[:, :width]
    label_table = (tf.constant(top.astype(np.int32)),
                   tf.constant(np.take_along_axis(label_values, top, 1)))
  else:
    label_table = tf.constant(label_values)
  pi, pj, ps = pair_indices(ids_per_batch, images_per_id)
  batch = ids_per_batch * images_per_id
  image_size = (int(image_size[0]), int(image_size[1]))
  copies = augment_copies

  image_bytes = len(keep) * image_size[0] * image_size[1] * 3
  cached = None
  if image_bytes <= cache_max_bytes:
    rows = np.zeros(len(records), np.int32)  # record -> cache row
    rows[kept] = np.arange(kept.size, dtype=np.int32)
    cached = (tf.constant(rows), tf.constant(decoded_images(
        [records[i].path for i in keep], image_size)))
  else:
    logging.info(
        "Training images not cached: %d images of %dx%dx3 bytes = %.1f MB "
        "> the cache limit of %.1f MB (data.train_cache_mb); each is decoded "
        "at every use.", len(keep), image_size[0], image_size[1],
        image_bytes / 2**20, cache_max_bytes / 2**20)

  def sample_batch(step):
    index, variant = tf.numpy_function(
        sampler, [step], (tf.int32, tf.int32), stateful=False)
    index.set_shape([batch])
    variant.set_shape([batch])
    rows, images = cached
    return dict(
        images=tf.cast(tf.gather(images, tf.gather(rows, index)), tf.float32),
        labels=tf.nest.map_structure(lambda t: tf.gather(t, index),
                                     label_table),
        transform=tf.gather(transforms, index * copies + variant))

  def sample(step):
    index, variant = tf.numpy_function(
        sampler, [step], (tf.int32, tf.int32), stateful=False)
    index.set_shape([batch])
    variant.set_shape([batch])
    return tf.data.Dataset.from_tensor_slices(dict(
        path=tf.gather(paths, index),
        labels=tf.nest.map_structure(lambda t: tf.gather(t, index),
                                     label_table),
        transform=tf.gather(transforms, index * copies + variant)))

  def load(item):
    item = dict(item)
    item["images"] = preprocessing.load_image(item.pop("path"), image_size)
    return item

  def finish(b):
    images = b["images"]
    if copies > 1:
      images = apply_transforms(images, b["transform"])
    labels = b["labels"]
    if soft_classes:  # back to dense [B, C] distributions
      top, weights = labels
      labels = tf.reduce_sum(
          tf.one_hot(top, soft_classes) * weights[..., None], axis=1)
    return {
        "images": preprocessing.normalize(images, normalization),
        "labels": labels,
        "pair_i": tf.constant(pi),
        "pair_j": tf.constant(pj),
        "pair_same": tf.constant(ps),
    }

  ds = tf.data.Dataset.counter(int(first_batch))
  if cached is not None:  # whole batches gathered from the decoded images
    ds = ds.map(sample_batch, num_parallel_calls=AUTOTUNE, deterministic=True)
  else:
    ds = ds.flat_map(sample)
    ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(batch, drop_remainder=True)
  ds = ds.map(finish, num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.prefetch(AUTOTUNE)


def make_eval_dataset(records: Sequence[records_lib.Record], *,
                      image_size: tuple[int, int], normalization: str,
                      batch_size: int, validate: bool = True
                      ) -> tf.data.Dataset:
  """Ordered, deterministic, batched and prefetched evaluation images.

  Args:
    records: query or gallery records; output order follows them.
    image_size: (height, width) of the model input.
    normalization: a key of preprocessing.NORMALIZATIONS.
    batch_size: images per batch (the last batch may be smaller).
    validate: decode every file once up front so a corrupt one raises
      CorruptImageError naming it (evaluation cannot skip images).

  Returns:
    tf.data.Dataset of float32 [b, H, W, 3] normalised image batches.
  """
  preprocessing.check_normalization(normalization)
  records = list(records)
  if validate and records:
    _check_images(records, skip_corrupt=False)
  image_size = (int(image_size[0]), int(image_size[1]))
  ds = tf.data.Dataset.from_tensor_slices(
      tf.constant([r.path for r in records], tf.string))
  ds = ds.map(lambda p: preprocessing.load_image(p, image_size),
              num_parallel_calls=AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size)
  ds = ds.map(lambda x: preprocessing.normalize(x, normalization),
              num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.prefetch(AUTOTUNE)


def num_pairs(ids_per_batch: int, images_per_id: int) -> int:
  """P, the static number of pairs per training batch."""
  return len(pair_indices(ids_per_batch, images_per_id)[0])

