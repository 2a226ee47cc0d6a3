"""tf.data pipelines: K x M training batches with the paper's pairs, and eval.

Training batches follow the paper (Geng et al. 2016, Sec. 3): K identities x M
images per batch, every training image augmented into `augment_copies` fixed
variants by random 2D transforms about the centre, and all i < j pairs of the
batch with the positive pairs replicated until they are as many as the
negatives. Because the batch composition is fixed (K blocks of M), the pair
index tensors are constants and P is static.
"""

from __future__ import annotations

from typing import Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from keras_reid.data import augmentation
from keras_reid.data import image_files
from keras_reid.data import preprocessing
from keras_reid.data import records as records_lib

AUTOTUNE = tf.data.AUTOTUNE


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


def _kept_records(records: Sequence[records_lib.Record], *, validate: bool,
                  skip_corrupt: bool) -> np.ndarray:
  """Indices of the records to train on, int [n]: all, or the decodable ones.

  Raises:
    image_files.CorruptImageError: a bad file, unless skip_corrupt.
    ValueError: no decodable record is left.
  """
  keep = list(range(len(records)))
  if validate or skip_corrupt:
    keep, _ = image_files.check_images(records, skip_corrupt)
  if not keep:
    raise ValueError("No decodable training image left after skipping "
                     "corrupt files.")
  return np.asarray(keep)


def _class_members(class_of: np.ndarray, kept: np.ndarray,
                   ids_per_batch: int) -> list[np.ndarray]:
  """The kept record indices of each class, classes in sorted order.

  Args:
    class_of: class of every record, int32 [N].
    kept: indices of the records to train on, int [n].
    ids_per_batch: K, the classes one batch needs.

  Returns:
    One int array of record indices per class.

  Raises:
    ValueError: fewer classes than ids_per_batch.
  """
  classes, inverse = np.unique(class_of[kept], return_inverse=True)
  members = [kept[inverse == c] for c in range(len(classes))]
  if ids_per_batch > len(classes):
    raise ValueError(
        f"ids_per_batch={ids_per_batch} but the training set has only "
        f"{len(classes)} identities; lower ids_per_batch (config "
        "stages.<name>.ids_per_batch).")
  return members


def _label_table(label_values: np.ndarray):
  """The per-record labels the batches gather from, as constants.

  Args:
    label_values: int32 [N] classes, or float32 [N, C] soft labels.

  Returns:
    (table, C): for classes the int32 [N] tensor and C = 0. Soft labels are
    sparse (top-m classes per image), so each row's non-zero classes and
    weights are carried, (int32 [N, m], float32 [N, m]) with m the most
    non-zero classes of a row, not the dense [N, C] table.
  """
  soft_classes = label_values.shape[1] if label_values.ndim == 2 else 0
  if not soft_classes:
    return tf.constant(label_values), 0
  width = max(1, int((label_values > 0).sum(axis=1).max()))
  top = np.argsort(-label_values, axis=1, kind="stable")[:, :width]
  return (tf.constant(top.astype(np.int32)),
          tf.constant(np.take_along_axis(label_values, top, 1))), soft_classes


def _dense_labels(labels, soft_classes: int):
  """A batch's labels as the pipeline yields them.

  Args:
    labels: gathered from `_label_table`'s table: int32 [B], or with
      soft_classes C > 0 (int32 [B, m], float32 [B, m]).
    soft_classes: C, 0 for classes.

  Returns:
    int32 [B] classes, or float32 [B, C] distributions.
  """
  if not soft_classes:
    return labels
  top, weights = labels
  return tf.reduce_sum(tf.one_hot(top, soft_classes) * weights[..., None],
                       axis=1)


def _cached_images(records: Sequence[records_lib.Record], kept: np.ndarray,
                   image_size: tuple[int, int], cache_max_bytes: int):
  """The kept training images decoded in memory, if they fit the limit.

  Args:
    records: the training records.
    kept: indices of the records to train on, int [n].
    image_size: (height, width) ints.
    cache_max_bytes: the most bytes the decoded images may take.

  Returns:
    (cache row of every record int32 [N], decoded images uint8
    [n, H, W, 3]) as constants, or None (logged) when the images take more
    than cache_max_bytes.
  """
  image_bytes = len(kept) * image_size[0] * image_size[1] * 3
  if image_bytes > cache_max_bytes:
    logging.info(
        "Training images not cached: %d images of %dx%dx3 bytes = %.1f MB "
        "> the cache limit of %.1f MB (data.train_cache_mb); each is decoded "
        "at every use.", len(kept), image_size[0], image_size[1],
        image_bytes / 2**20, cache_max_bytes / 2**20)
    return None
  rows = np.zeros(len(records), np.int32)  # record -> cache row
  rows[kept] = np.arange(kept.size, dtype=np.int32)
  return (tf.constant(rows), tf.constant(image_files.decoded_images(
      [records[i].path for i in kept], image_size)))


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
                       cache_max_bytes: int = 0,
                       erasing_probability: float = 0.0) -> tf.data.Dataset:
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
      raising image_files.CorruptImageError naming them.
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
      as uint8 (H x W x 3 bytes each, `image_files.decoded_images`) when
      they take at most this many bytes, and warp the fixed variants from
      there; otherwise (and with 0) decode every image at every use, which
      the log says. Cached pixels are the decoded ones rounded to integers.
    erasing_probability: random erasing (augmentation.random_erasing, after
      the transforms, before normalisation): each image has this chance of
      a rectangle filled with the mean pixel, drawn from (seed, batch
      index) so that batch t still depends on (seed, t) only. 0 = off (no
      op in the pipeline).

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
  if not 0.0 <= erasing_probability <= 1.0:
    raise ValueError(f"erasing_probability={erasing_probability!r}: expected "
                     "a probability in [0, 1] (data.random_erasing_prob).")
  if ids_per_batch < 1 or images_per_id < 1 or augment_copies < 1:
    raise ValueError(
        f"ids_per_batch={ids_per_batch}, images_per_id={images_per_id} and "
        f"augment_copies={augment_copies} must all be >= 1.")
  records = list(records)
  if not records:
    raise ValueError("make_train_dataset got no training records: the "
                     "dataset's train split is empty.")
  class_of, label_values = _contiguous_labels(records, labels)
  kept = _kept_records(records, validate=validate, skip_corrupt=skip_corrupt)
  sampler = _Sampler(_class_members(class_of, kept, ids_per_batch),
                     ids_per_batch=ids_per_batch,
                     images_per_id=images_per_id, copies=augment_copies,
                     seed=seed)
  transforms = augmentation.augmentation_transforms(
      len(records), copies=augment_copies, image_size=image_size,
      max_shift=max_shift, max_scale=max_scale,
      max_rotation_deg=max_rotation_deg, flip=flip,
      seed=seed if augment_seed is None else augment_seed,
      keys=(None if augment_seed is None else
            augmentation.location_free_keys([r.path for r in records])))
  transforms = tf.constant(transforms.reshape(-1, 8))
  paths = tf.constant([r.path for r in records])
  label_table, soft_classes = _label_table(label_values)
  pi, pj, ps = pair_indices(ids_per_batch, images_per_id)
  batch = ids_per_batch * images_per_id
  image_size = (int(image_size[0]), int(image_size[1]))
  copies = augment_copies
  cached = _cached_images(records, kept, image_size, cache_max_bytes)
  erasing = erasing_probability > 0
  # Random erasing's stateless seeds are (erasing_seed, batch index).
  erasing_seed = tf.constant(seed, tf.int64)

  def draw(step):
    """(record index, variant) of every element of batch `step`, int32 [B]."""
    index, variant = tf.numpy_function(
        sampler, [step], (tf.int32, tf.int32), stateful=False)
    index.set_shape([batch])
    variant.set_shape([batch])
    return index, variant

  def with_labels_and_transforms(index, variant, step, **item):
    if erasing:  # every element carries its batch's index
      item["batch_index"] = tf.fill([batch], tf.cast(step, tf.int64))
    return dict(
        item,
        labels=tf.nest.map_structure(lambda t: tf.gather(t, index),
                                     label_table),
        transform=tf.gather(transforms, index * copies + variant))

  def sample_batch(step):  # a whole batch from the decoded images
    index, variant = draw(step)
    rows, images = cached
    return with_labels_and_transforms(
        index, variant, step,
        images=tf.cast(tf.gather(images, tf.gather(rows, index)),
                       tf.float32))

  def sample(step):  # the batch's records, one element each, for `load`
    index, variant = draw(step)
    return tf.data.Dataset.from_tensor_slices(with_labels_and_transforms(
        index, variant, step, path=tf.gather(paths, index)))

  def load(item):
    item = dict(item)
    item["images"] = preprocessing.load_image(item.pop("path"), image_size)
    return item

  def finish(b):
    images = b["images"]
    if copies > 1:
      images = augmentation.apply_transforms(images, b["transform"])
    if erasing:
      images = augmentation.random_erasing(
          images, tf.stack([erasing_seed, b["batch_index"][0]]),
          probability=erasing_probability)
    labels = _dense_labels(b["labels"], soft_classes)
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
      image_files.CorruptImageError naming it (evaluation cannot skip
      images).

  Returns:
    tf.data.Dataset of float32 [b, H, W, 3] normalised image batches.
  """
  preprocessing.check_normalization(normalization)
  records = list(records)
  if validate and records:
    image_files.check_images(records, skip_corrupt=False)
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
