"""Image decoding and backbone-specific normalisation, usable inside tf.data.

Every function here is pure and takes explicit arguments, so it can be used
as (part of) a `tf.data` map function.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf
from keras.applications import imagenet_utils


def _normalize_tf(images: tf.Tensor) -> tf.Tensor:
  # MobileNet / Inception convention: [0, 255] -> [-1, 1].
  return imagenet_utils.preprocess_input(images, mode="tf")


def _normalize_torch(images: tf.Tensor) -> tf.Tensor:
  # torchvision convention: [0, 1] then ImageNet mean / std per RGB channel.
  return imagenet_utils.preprocess_input(images, mode="torch")


def _normalize_caffe(images: tf.Tensor) -> tf.Tensor:
  # Caffe / VGG / ResNet50 convention: RGB -> BGR, minus the ImageNet mean.
  return imagenet_utils.preprocess_input(images, mode="caffe")


def _normalize_none(images: tf.Tensor) -> tf.Tensor:
  return tf.identity(images)


# Registry: mode name -> function float32 [..., 3] in [0, 255] -> float32.
NORMALIZATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "tf": _normalize_tf,
    "torch": _normalize_torch,
    "caffe": _normalize_caffe,
    "none": _normalize_none,
}


def check_normalization(mode: str) -> None:
  """Raises ValueError naming the valid modes if `mode` is unknown."""
  if mode not in NORMALIZATIONS:
    raise ValueError(
        f"Unknown normalization {mode!r}; expected one of "
        f"{sorted(NORMALIZATIONS)}.")


def normalize(images_0_255: tf.Tensor, mode: str) -> tf.Tensor:
  """Maps RGB pixels in [0, 255] to what a backbone expects.

  Args:
    images_0_255: float32 [..., H, W, 3] RGB in [0, 255].
    mode: a key of NORMALIZATIONS: "tf" ([-1, 1]), "torch" (ImageNet mean /
      std on [0, 1]), "caffe" (BGR minus the ImageNet mean), "none"
      (unchanged).

  Returns:
    float32 tensor of the same shape.
  """
  check_normalization(mode)
  images = tf.convert_to_tensor(images_0_255, tf.float32)
  return NORMALIZATIONS[mode](images)


def _header_int(contents: tf.Tensor, offset: int, dtype: tf.DType
                ) -> tf.Tensor:
  size = dtype.size
  raw = tf.strings.substr(contents, offset, size)
  return tf.cast(tf.io.decode_raw(raw, dtype, little_endian=True)[0],
                 tf.int64)


def trim_bmp(contents: tf.Tensor) -> tf.Tensor:
  """Drops trailing bytes after a BMP's pixel data.

  Many real BMPs (e.g. every other VIPeR image) end with 2 padding bytes;
  TF's decoder requires the file size to match the header exactly and
  rejects them. Non-BMP input is returned unchanged.

  Args:
    contents: scalar string tensor, an encoded image.

  Returns:
    scalar string tensor.
  """
  def trim():
    offset = _header_int(contents, 10, tf.int32)
    width = _header_int(contents, 18, tf.int32)
    height = tf.abs(_header_int(contents, 22, tf.int32))
    bpp = _header_int(contents, 28, tf.int16)
    row = (bpp * tf.abs(width) + 31) // 32 * 4
    return tf.strings.substr(contents, tf.constant(0, tf.int64),
                             offset + row * height)
  is_bmp = tf.logical_and(tf.strings.length(contents) >= 30,
                          tf.equal(tf.strings.substr(contents, 0, 2), "BM"))
  return tf.cond(is_bmp, trim, lambda: contents)


def decode_image(contents: tf.Tensor) -> tf.Tensor:
  """Decodes jpg / png / bmp / gif bytes to uint8 RGB.

  Args:
    contents: scalar string tensor, the encoded file.

  Returns:
    uint8 [h, w, 3]; grey images are expanded to 3 channels, alpha dropped,
    animated gifs give their first frame.
  """
  image = tf.io.decode_image(trim_bmp(contents), channels=3,
                             expand_animations=False)
  image.set_shape([None, None, 3])
  return image


# Largest image (width x height) decoded from a file: 4096 x 4096 pixels,
# 48 MiB as uint8 RGB. Checked from the file's header BEFORE decoding, so a
# small file declaring a huge image (a "decompression bomb") never allocates.
MAX_IMAGE_PIXELS = 4096 * 4096


def _header_uint(contents: tf.Tensor, offset: int, size: int,
                 big_endian: bool) -> tf.Tensor:
  """Unsigned integer of `size` bytes at `offset` (the bytes must exist)."""
  raw = tf.io.decode_raw(tf.strings.substr(contents, offset, size), tf.uint8)
  weights = [256 ** (size - 1 - k if big_endian else k) for k in range(size)]
  return tf.reduce_sum(tf.cast(raw, tf.int64) * tf.constant(weights, tf.int64))


def image_header_size(contents: tf.Tensor) -> tf.Tensor:
  """(height, width) an encoded image declares in its header, not decoded.

  JPEG: tf.image.extract_jpeg_shape (reads the markers only); PNG: the IHDR
  chunk (big-endian width, height at bytes 16, 20); BMP: the info header
  (little-endian signed width, height at bytes 18, 22; a negative height
  means top-down rows, its absolute value counts); GIF: the logical screen
  (little-endian 16-bit width, height at bytes 6, 8).

  Args:
    contents: scalar string tensor, the encoded file.

  Returns:
    int64 [2] (height, width); [0, 0] for a file that is none of these or
    too short to hold its header (decoding it then fails on its own).
  """
  length = tf.strings.length(contents)

  def starts(magic: bytes, min_length: int) -> tf.Tensor:
    return tf.logical_and(
        length >= min_length,
        tf.equal(tf.strings.substr(contents, 0, len(magic)), magic))

  def png():
    return tf.stack([_header_uint(contents, 20, 4, True),
                     _header_uint(contents, 16, 4, True)])

  def bmp():
    def signed_abs(v):  # int32 two's complement -> |value|
      return tf.where(v >= 2 ** 31, 2 ** 32 - v, v)
    return tf.stack([signed_abs(_header_uint(contents, 22, 4, False)),
                     signed_abs(_header_uint(contents, 18, 4, False))])

  def gif():
    return tf.stack([_header_uint(contents, 8, 2, False),
                     _header_uint(contents, 6, 2, False)])

  def jpeg():
    return tf.cast(tf.image.extract_jpeg_shape(contents)[:2], tf.int64)

  def unknown():
    return tf.zeros([2], tf.int64)

  size = tf.cond(
      starts(b"\x89PNG\r\n\x1a\n", 24), png, lambda: tf.cond(
          starts(b"BM", 26), bmp, lambda: tf.cond(
              starts(b"GIF8", 10), gif, lambda: tf.cond(
                  starts(b"\xff\xd8\xff", 4), jpeg, unknown))))
  return tf.ensure_shape(size, [2])


def decode_image_limited(contents: tf.Tensor, what, *,
                         max_pixels: int = MAX_IMAGE_PIXELS,
                         max_side: int | None = None) -> tf.Tensor:
  """`decode_image` after checking the header's size against the limits.

  The decoder only runs when the header's width x height is at most
  `max_pixels` (and each side at most `max_side`); otherwise an
  InvalidArgumentError names `what`, the declared size and the limit, and
  nothing is allocated for the pixels.

  Args:
    contents: scalar string tensor, the encoded file.
    what: what to name in the error (a Python string or a scalar string
      tensor, e.g. the file path).
    max_pixels: the largest accepted width x height.
    max_side: the largest accepted height or width; None = no side limit.

  Returns:
    uint8 [h, w, 3], as decode_image.
  """
  size = image_header_size(contents)
  ok = size[0] * size[1] <= max_pixels
  if max_side is not None:
    ok = tf.logical_and(ok, tf.reduce_all(size <= max_side))
  limit = f"{max_pixels} pixels" + (
      f" and {max_side} per side" if max_side is not None else "")

  def reject():
    with tf.control_dependencies([tf.debugging.Assert(ok, [
        what, "image header check: the file declares (height, width)",
        size, f"which exceeds the limit of {limit}; rejected before "
        "decoding (resize it first)"])]):
      return tf.zeros([0, 0, 3], tf.uint8)

  image = tf.cond(ok, lambda: decode_image(contents), reject)
  image.set_shape([None, None, 3])
  return image


def resize(images: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
  """The one resize of the package (training, evaluation, serving).

  Args:
    images: uint8 or float32 [..., h, w, 3] in [0, 255]. Give uint8 as it
      is: the result is the same as for its float32 cast (the kernel widens
      pixel by pixel), without a float32 copy of the large input (4x its
      bytes).
    image_size: (height, width) of the output.

  Returns:
    float32 [..., height, width, 3] in [0, 255].
  """
  # Antialiasing matters when shrinking large boxes (e.g. 3DPeS) to 128x64;
  # the clip removes its float rounding just outside [0, 255].
  images = tf.image.resize(images, image_size, method="bilinear",
                           antialias=True)
  return tf.clip_by_value(images, 0., 255.)


def load_image(path: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
  """Reads, decodes and resizes one image file (header size checked first).

  Args:
    path: scalar string tensor.
    image_size: (height, width) of the output.

  Returns:
    float32 [height, width, 3] RGB in [0, 255].
  """
  image = resize(decode_image_limited(tf.io.read_file(path), path),
                 image_size)
  return tf.ensure_shape(image, [image_size[0], image_size[1], 3])
