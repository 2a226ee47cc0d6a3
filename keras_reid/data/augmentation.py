"""Augmentation: the fixed random 2D transforms of each training image,
and random erasing.

Every training image becomes `copies` variants (variant 0 the original) by
a random shift, zoom, rotation about the centre and horizontal flip, drawn
once (`augmentation_transforms`) and applied in the pipeline
(`apply_transforms`). Random erasing (`random_erasing`, Zhong et al.
2020) is drawn anew for every batch from (seed, batch index).
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np
import tensorflow as tf

# config.data.augment_mode: how the `augment_copies` variants of an image are
# drawn.
#   "fixed": from config.seed and the image's path only, the paper's offline
#     5x set: the same variants in step 1 and step 2 of every stage, on every
#     input worker and after a resume
#     (`pipeline.make_train_dataset(augment_seed=)`);
#   "redraw": from the pipeline's seed, which includes the stage, the step
#     and the worker, so each of them sees other variants (ablation).
AUGMENT_MODES = ("fixed", "redraw")


def path_key(path: str) -> int:
  """A stable 63-bit integer of a path (Python's hash() is salted per run)."""
  return int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8],
                        "little") >> 1


def location_free_keys(paths: Sequence[str]) -> list[str]:
  """Each path relative to the folder all of `paths` lie under, '/'-separated.

  The fixed variants are keyed by these, not by the absolute paths, so a run
  gives the same variants (and bit-identical results) wherever the dataset
  folder lies: /data/viper/cam_a/001_45.bmp and ~/viper/cam_a/001_45.bmp both
  key as "cam_a/001_45.bmp".
  """
  if not paths:
    return []
  base = os.path.commonpath([os.path.dirname(os.path.abspath(p))
                             for p in paths])
  return [os.path.relpath(os.path.abspath(p), base).replace(os.sep, "/")
          for p in paths]


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
    keys: optional identity of each image (its `location_free_keys` path):
      image i's variants then depend on (seed, keys[i]) only, not on its
      position, on the other images or on where the dataset lies (the fixed
      augmented set).

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


# Random erasing as Zhong et al. (2020, "Random Erasing Data Augmentation",
# Alg. 1) and the bag-of-tricks baseline (Luo et al. 2019) use it: with
# probability p a rectangle of area fraction U(ERASING_AREA) and height /
# width ratio U(ERASING_MIN_ASPECT, 1 / ERASING_MIN_ASPECT) at a uniform
# position is filled; up to ERASING_ATTEMPTS draws until one fits inside the
# image (none fitting: the image is left as it is).
ERASING_AREA = (0.02, 0.4)
ERASING_MIN_ASPECT = 0.3
ERASING_ATTEMPTS = 100
# The fill, RGB in [0, 255] before normalisation: ImageNet's mean pixel
# (Zhong et al.'s "RE-M"; the bag of tricks also fills with a mean). A
# constant keeps the erased block at the input's mean under every
# normalisation mode (about 0 after it) and adds no noise of its own.
ERASING_FILL = (123.675, 116.28, 103.53)


def random_erasing(images: tf.Tensor, seed: tf.Tensor, *, probability: float,
                   area: tuple[float, float] = ERASING_AREA,
                   min_aspect: float = ERASING_MIN_ASPECT,
                   fill: Sequence[float] = ERASING_FILL,
                   attempts: int = ERASING_ATTEMPTS) -> tf.Tensor:
  """Erases a random rectangle of each image with probability `probability`.

  Stateless: the result depends on `images` and `seed` only (the pipeline
  passes (its seed, the batch index), so batch t is the same after a
  resume). keras.layers.RandomErasing (Keras 3.15) is not used: it draws
  from a stateful generator (batch t would depend on the batches before),
  its `factor` is a range the probability is drawn from, and it samples the
  height and width fractions independently instead of an area and an
  aspect ratio.

  Args:
    images: float32 [B, H, W, C] pixels in [0, 255].
    seed: int32 / int64 [2], a stateless seed.
    probability: chance that an image is erased, in [0, 1].
    area: (min, max) fraction of the image the rectangle covers.
    min_aspect: the height / width ratio is uniform in
      [min_aspect, 1 / min_aspect].
    fill: the C values the rectangle is filled with.
    attempts: draws per image until a rectangle fits.

  Returns:
    float32 [B, H, W, C]: each image unchanged, or with one rectangle set to
    `fill`. h = round(sqrt(S * a)), w = round(sqrt(S / a)) for the drawn
    area S (pixels) and ratio a, the top-left corner uniform over the
    positions that keep it inside.
  """
  images = tf.convert_to_tensor(images, tf.float32)
  shape = tf.shape(images)
  b, h_img, w_img = shape[0], shape[1], shape[2]
  u = tf.random.stateless_uniform(tf.stack([b, 1 + 4 * attempts]), seed,
                                  dtype=tf.float32)
  erase = u[:, 0] < probability
  u = tf.reshape(u[:, 1:], tf.stack([b, attempts, 4]))
  height, width = tf.cast(h_img, tf.float32), tf.cast(w_img, tf.float32)
  target = (area[0] + (area[1] - area[0]) * u[..., 0]) * height * width
  aspect = min_aspect + (1.0 / min_aspect - min_aspect) * u[..., 1]
  h = tf.round(tf.sqrt(target * aspect))
  w = tf.round(tf.sqrt(target / aspect))
  fits = (h < height) & (w < width) & (h >= 1) & (w >= 1)
  first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)

  def chosen(x):
    return tf.gather(x, first, axis=1, batch_dims=1)

  h, w = chosen(h), chosen(w)
  # The corner uniform over the h_img - h + 1 rows (w_img - w + 1 columns).
  top = tf.minimum(tf.floor(chosen(u[..., 2]) * (height - h + 1)), height - h)
  left = tf.minimum(tf.floor(chosen(u[..., 3]) * (width - w + 1)), width - w)
  erase &= tf.reduce_any(fits, axis=1)
  rows = tf.range(height)[None, :]
  cols = tf.range(width)[None, :]
  in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])
  in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])
  mask = (in_rows[:, :, None] & in_cols[:, None, :]) & erase[:, None, None]
  fill = tf.cast(tf.reshape(fill, [1, 1, 1, -1]), tf.float32)
  return tf.where(mask[..., None], fill, images)
